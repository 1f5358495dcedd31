"""The registry's record of each architecture's pretrained weights, against the libraries' own descriptions:
torchvision's weights enums (``meta`` and ``transforms``), timm's pretrained configs and evaluation transforms,
Keras's ``preprocess_input`` and its applications' layers. Nothing is downloaded.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import fusionjax
from fusionjax.convert import from_torchvision, mapping
from fusionjax.models.registry import IMAGENET_NORMALIZATION
from fusionjax.torch_compat import import_torchvision

tv = import_torchvision()
SPECS = [fusionjax.get_model_spec(name) for name in fusionjax.list_models()]


def weights_of(library: str):
    return [pytest.param(spec, weights, id=spec.name) for spec in SPECS for weights in spec.weights
            if weights.library == library]


def test_one_copy_of_imagenets_statistics_is_torchvisions_and_timms():
    from fusionjax.convert.timm import import_timm

    timm = import_timm()
    transform = tv.models.ResNet18_Weights.DEFAULT.transforms()
    assert IMAGENET_NORMALIZATION == {"channel_order": "RGB", "pixel_max": 255.0, "mean": transform.mean,
                                      "std": transform.std}
    assert tuple(IMAGENET_NORMALIZATION["mean"]) == timm.data.IMAGENET_DEFAULT_MEAN
    assert tuple(IMAGENET_NORMALIZATION["std"]) == timm.data.IMAGENET_DEFAULT_STD


@pytest.mark.parametrize("spec, weights", weights_of("torchvision"))
def test_torchvision_weights_are_torchvisions_default(spec, weights):
    entry = tv.models.get_model_weights(weights.name).DEFAULT
    transform = entry.transforms()
    assert (weights.input_size, weights.resize_size) == (transform.crop_size[0], transform.resize_size[0])
    assert weights.normalization["mean"] == transform.mean and weights.normalization["std"] == transform.std
    assert weights.num_classes == len(entry.meta["categories"])
    with torch.device("meta"):  # the structure only, nothing allocated or initialized
        model = tv.models.get_model(weights.name, weights=None)
    last_linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)][-1]
    assert weights.head == last_linear
    assert spec.torchvision == weights.name


@pytest.mark.parametrize("spec, weights", weights_of("timm"))
def test_timm_weights_are_timms_default_pretrained_config(spec, weights):
    from fusionjax.convert.timm import import_timm

    timm = import_timm()
    config = timm.models.get_pretrained_cfg(weights.name)
    # timm's own evaluation transform for these weights: resize the shorter side, then the centre crop
    resize, crop = timm.data.create_transform(**timm.data.resolve_data_config(
        pretrained_cfg=config.to_dict())).transforms[:2]
    assert (resize.size, tuple(crop.size)) == (weights.resize_size, (weights.input_size, weights.input_size))
    assert tuple(weights.normalization["mean"]) == config.mean and tuple(weights.normalization["std"]) == config.std
    assert (weights.num_classes, weights.head) == (config.num_classes, config.classifier)
    assert spec.timm == weights.name


@pytest.mark.parametrize("spec, weights", weights_of("keras"))
def test_keras_weights_expect_their_applications_preprocess_input(spec, weights):
    from fusionjax.convert.keras import import_keras

    keras = import_keras()
    application = getattr(keras.applications, weights.name)
    preprocess = importlib.import_module(application.__module__).preprocess_input  # e.g. keras...resnet_v2's
    image = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype(np.float32)
    norm = weights.normalization
    x = image[..., ::-1] if norm["channel_order"] == "BGR" else image
    ours = (x / norm["pixel_max"] - np.asarray(norm["mean"])) / np.asarray(norm["std"])
    np.testing.assert_allclose(ours, np.asarray(preprocess(image.copy())), rtol=1e-5, atol=1e-4)
    assert spec.keras == weights.name and (weights.num_classes, weights.input_size) == (1000, 224)


@pytest.mark.parametrize("name", ["ResNet50", "DenseNet121"])
def test_keras_head_is_the_applications_classifier_layer(name):
    from fusionjax.convert.keras import import_keras

    application = getattr(import_keras().applications, name)(weights=None)
    weights = fusionjax.get_model_spec("keras_" + name.lower()).weights_from("keras")
    assert (weights.head, weights.num_classes) == (application.layers[-1].name, application.layers[-1].units)


@pytest.mark.parametrize("name", ["resnet20", "densenet_bc_100_12", "keras_resnet50v2"])
def test_spec_head_is_the_params_key_of_the_classifier(name):
    spec = fusionjax.get_model_spec(name)
    model = fusionjax.create_model(name, num_classes=7)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert shapes[spec.head]["kernel"].shape[-1] == 7 and shapes[spec.head]["bias"].shape == (7,)


def test_conversion_sizes_the_classifier_from_the_checkpoint_alone(monkeypatch):
    """A 7-class checkpoint builds a 7-class model directly: no 1000-class model is traced to find the head."""
    torch.manual_seed(0)
    state_dict = tv.models.resnet18(num_classes=7).state_dict()
    traced = []
    expected_variables = mapping.expected_variables
    monkeypatch.setattr(mapping, "expected_variables", lambda model: traced.append(model.num_classes) or
                        expected_variables(model))
    variables = from_torchvision("resnet18", state_dict)
    assert set(traced) == {7}
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state_dict["fc.weight"].numpy().T)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], state_dict["fc.bias"].numpy())
