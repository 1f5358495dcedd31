"""Keras 3 applications' weights in: ``from_keras``, and Keras's own model as the reference of
``compare(..., source='keras')`` and ``fusionjax-convert --from keras --verify``.

Keras 3 runs on JAX (``KERAS_BACKEND=jax``, the default set here), so no TensorFlow is needed. Weight files hold
arrays only (HDF5), and are read by Keras's own ``load_weights`` into the application built with
``weights=None``: a ``.keras`` file's ``config.json`` is never deserialized, so no code in it runs.
"""

import os
import warnings
from pathlib import Path
from typing import Any

import flax.linen as nn
import numpy as np

from fusionjax.convert import frameworks, mapping
from fusionjax.convert.errors import ConversionError

_ZIP, _HDF5 = b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"


def from_keras(name: str, source: Any, *, strict: bool = True, model: nn.Module | None = None) -> dict:
    """The variables ``{'params', 'batch_stats'}`` of the zoo's architecture identical to
    ``keras.applications.<name>`` (``'ResNet50'``, ``'ResNet50V2'``, ``'DenseNet121'``…, any case, or the zoo
    name ``'keras_resnet50'``).

    ``source`` is the Keras model itself, or the path of a ``.keras``, ``.weights.h5`` or Keras 2 ``.h5`` weights
    file of that application (e.g. ``resnet50_weights_tf_dim_ordering_tf_kernels.h5``). The classifier takes the
    file's number of classes. ``strict`` and ``model`` as in ``from_torchvision``; a file that Keras cannot load
    into the application always raises.
    """
    keras_model = source if is_keras_model(source) else keras_application(name, source)
    # .value, the backend's array: NumPy 2 warns on Keras 3.15's Variable.__array__
    weights = {variable.path: np.asarray(variable.value) for variable in keras_model.weights}
    return frameworks.to_variables("keras", name, weights, strict=strict, model=model)


def is_keras_model(source: Any) -> bool:
    return type(source).__module__.startswith("keras") and hasattr(source, "weights")


def import_keras():
    """``keras``, on the JAX backend unless ``KERAS_BACKEND`` says otherwise (read at Keras's first import)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    try:
        import keras
    except ImportError:
        raise ImportError("Reading Keras weights needs Keras 3 and h5py: pip install 'fusionjax[keras]'") from None
    return keras


def keras_application(name: str, path: str | os.PathLike, num_classes: int | None = None):
    """``keras.applications.<name>(weights=None)`` holding the weights of the file at ``path``, with the file's
    classifier (or none, for an ``include_top=False`` file)."""
    import tempfile

    spec = frameworks.find_spec("keras", name)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No Keras weights file at {path}." + (" It is a directory." if path.is_dir() else ""))
    suffix, classes = _inspect(path, spec.weights_from("keras").head)
    keras = import_keras()
    top = dict(classes=num_classes or classes, classifier_activation=None) if classes else dict(include_top=False)
    application = getattr(keras.applications, spec.keras)(weights=None, **top)
    with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        named = Path(directory) / f"weights{suffix}"  # Keras picks its reader by the name's suffix
        named.symlink_to(path.absolute())
        try:
            application.load_weights(named)
        except (ValueError, KeyError, OSError) as error:
            reason = str(error).strip().splitlines()[0]
            raise ConversionError(
                f"{path} does not hold the weights of keras.applications.{spec.keras}: {reason}"
            ) from None
    skipped = [str(warning.message) for warning in caught if issubclass(warning.category, UserWarning)]
    if skipped:
        raise ConversionError(f"{path} does not hold all the weights of keras.applications.{spec.keras}: "
                              f"Keras skipped {len(skipped)} part(s), e.g. {skipped[0]}")
    return application


def _inspect(path: Path, classifier: str) -> tuple[str, int | None]:
    """The Keras format of the file (as the suffix Keras reads it by) and its classifier's size (None: no
    classifier; a Keras 2 file names its layer ``classifier``); raises unless the file is Keras weights."""
    import io
    import zipfile

    import h5py

    with open(path, "rb") as file:
        head = file.read(8)
    try:
        if head.startswith(_ZIP):
            with zipfile.ZipFile(path) as archive:
                h5 = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        elif head == _HDF5:
            h5 = h5py.File(path, "r")
        else:
            raise ConversionError(f"{path} is not a Keras weights file: expected a .keras archive or an HDF5 file "
                                  "(.weights.h5, .h5).")
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise ConversionError(f"{path} could not be read as Keras weights; it is truncated or corrupt ({error}).") \
            from None
    with h5:
        if "layers" in h5:  # Keras 3 names a layer's group after its class: the application's one Dense is "dense"
            bias = h5.get("layers/dense/vars/1")
            suffix = ".keras" if head.startswith(_ZIP) else ".weights.h5"
        else:  # Keras 2 names groups after the layers; a whole saved model keeps them under "model_weights"
            root = h5["model_weights"] if "model_weights" in h5 and "layer_names" not in h5.attrs else h5
            group = root.get(classifier)
            names = [] if group is None else list(group.attrs.get("weight_names", []))
            bias = group[names[-1].decode() if isinstance(names[-1], bytes) else names[-1]] if names else None
            suffix = ".h5"
        return suffix, None if bias is None else int(bias.shape[0])


def keras_features(keras_model, images: np.ndarray, model: nn.Module) -> dict[str, np.ndarray]:
    """Keras's outputs at the zoo's stages (stem, stage1–4, pooled, logits) for NHWC ``images``, as float64."""
    import jax

    keras = import_keras()
    layers = {layer.name: layer for layer in keras_model.layers}
    taps = {name: layer for name, layer in _taps(model).items() if layer in layers}
    tapped = keras.Model(keras_model.inputs, [layers[layer].output for layer in taps.values()])
    with jax.default_matmul_precision("highest"):
        outputs = dict(zip(taps, (np.asarray(out, np.float64) for out in run_keras(tapped, images))))
        if "pooled" in outputs and "predictions" in layers:  # the logits: the classifier before its activation
            head = layers["predictions"]
            outputs["logits"] = np.asarray(keras.ops.matmul(outputs["pooled"], head.kernel) + head.bias, np.float64)
    return outputs


def run_keras(keras_model, images: np.ndarray) -> list:
    """``keras_model``'s outputs for ``images`` in inference mode, at any image size (``__call__`` would check the
    224×224 an application with a classifier declares; its layers take any size). On the JAX backend the graph
    is compiled once (``stateless_call`` under ``jax.jit``) instead of dispatching each layer."""
    import jax

    keras = import_keras()
    if keras.backend.backend() != "jax":
        return keras_model.call([images], training=False)
    trainable = [variable.value for variable in keras_model.trainable_variables]
    statistics = [variable.value for variable in keras_model.non_trainable_variables]
    forward = jax.jit(lambda t, s, x: keras_model.stateless_call(t, s, [x], training=False)[0])
    return forward(trainable, statistics, images)


def _taps(model: nn.Module) -> dict[str, str]:
    """The Keras layer whose output is each zoo stage: for ResNet v2, whose stride is in each stage's last block,
    the last block at the stage's resolution (the zoo's ``downsample_block='last'``)."""
    family = mapping.family_of(model)
    if family == "densenet":
        stages = {f"stage{i + 1}": f"conv{i + 2}_block{n}_concat" for i, n in enumerate(model.block_config)}
        return {"stem": "pool1", **stages, "pooled": "avg_pool"}
    sizes = model.stage_sizes
    last = len(sizes) - 1
    block = [n - 1 if family == "preact_resnet" and i < last else n for i, n in enumerate(sizes)]
    stages = {f"stage{i + 1}": f"conv{i + 2}_block{n}_out" for i, n in enumerate(block)}
    return {"stem": "pool1_pool", **stages, "pooled": "avg_pool"}
