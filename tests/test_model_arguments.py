"""Model, block and layer arguments are checked when the module is constructed: a value out of range raises
``ModelArgumentError`` naming the argument, instead of training silently (``drop_path=2.0``), becoming the default
(``num_classes=0``) or failing later inside ``init`` as a broadcasting or division error."""

import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fusionjax
from fusionjax import blocks, layers
from fusionjax.arguments import ModelArgumentError


@pytest.mark.parametrize("name, options, argument", [
    ("resnet20", dict(drop_path=2.0), "drop_path"),
    ("resnet20", dict(drop_path=-1), "drop_path"),
    ("resnet20", dict(drop_path=1.0), "drop_path"),  # every branch dropped, the kept ones scaled by 1/0
    ("resnet20", dict(num_classes=0), "num_classes"),
    ("resnet20", dict(num_classes=-5), "num_classes"),
    ("resnet20", dict(num_classes=2.5), "num_classes"),
    ("resnet20", dict(in_channels=0), "in_channels"),
    ("resnet20", dict(stage_sizes=(3, 0, 3)), "stage_sizes"),
    ("resnet20", dict(stage_sizes=()), "stage_sizes"),
    ("resnet20", dict(stage_widths=(16, -32, 64)), "stage_widths"),
    ("resnet20", dict(stage_widths=(16, 32)), "stage_widths"),
    ("resnet20", dict(stem="vgg"), "stem"),
    ("resnet20", dict(stem_width=0), "stem_width"),
    ("resnet18d", dict(stem_width=1), "stem_width"),
    ("resnet20", dict(shortcut="identity"), "shortcut"),
    ("resnet20", dict(downsample_block="middle"), "downsample_block"),
    ("densenet_bc_100_12", dict(growth_rate=0), "growth_rate"),
    ("densenet_bc_100_12", dict(compression=0.0), "compression"),
    ("densenet_bc_100_12", dict(compression=1.5), "compression"),
    ("densenet_bc_100_12", dict(bn_size=0), "bn_size"),
    ("densenet_bc_100_12", dict(block_config=(16, 0, 16)), "block_config"),
    ("densenet_bc_100_12", dict(num_init_features=0), "num_init_features"),
    ("densenet_bc_100_12", dict(drop_rate=1.5), "drop_rate"),
    ("densenet_bc_100_12", dict(drop_path=2.0), "drop_path"),
    ("densenet_bc_100_12", dict(stem="vgg"), "stem"),
    ("densenet_bc_100_12", dict(stem="deep", deep_stem_widths=(16, 0)), "deep_stem_widths"),
])
def test_model_arguments_are_refused_at_construction(name, options, argument):
    with pytest.raises(ModelArgumentError, match=rf"^\w+: .*\b{argument}\b"):
        fusionjax.create_model(name, **options)


@pytest.mark.parametrize("make, argument", [
    (lambda: blocks.BasicBlock(0), "features"),
    (lambda: blocks.BasicBlock(8, strides=0), "strides"),
    (lambda: blocks.BasicBlock(8, se_reduction=0), "se_reduction"),
    (lambda: blocks.Bottleneck(16, base_width=2), "base_width"),  # 16 · 2 / 64 rounds to no inner channel
    (lambda: blocks.Bottleneck(64, groups=0), "groups"),
    (lambda: blocks.PreActBasicBlock(8, dropout_rate=1.0), "dropout_rate"),
    (lambda: blocks.PreActBottleneck(8, drop_path=-0.1), "drop_path"),
    (lambda: blocks.SqueezeExcite(reduction=0), "reduction"),
    (lambda: blocks.DenseLayer(0), "growth_rate"),
    (lambda: blocks.DenseBlock(0, 4), "num_layers"),
    (lambda: blocks.DenseBlock(2, 4, drop_path=(0.1,)), "drop_path"),
    (lambda: blocks.DenseBlock(2, 4, drop_path=(0.1, 1.0)), "drop_path"),
    (lambda: blocks.Transition(compression=0.0), "compression"),
    (lambda: blocks.HybridBlock(16, growth_rate=0), "growth_rate"),
    (lambda: layers.Conv2d(0), "features"),
    (lambda: layers.Conv2d(8, kernel_size=0), "kernel_size"),
    (lambda: layers.Conv2d(8, groups=0), "groups"),
    (lambda: layers.Conv2d(8, padding=-1), "padding"),
    (lambda: layers.DropPath(1.0), "rate"),
])
def test_block_and_layer_arguments_are_refused_at_construction(make, argument):
    with pytest.raises(ModelArgumentError, match=rf"^\w+: .*\b{argument}\b"):
        make()


def test_values_at_the_edges_of_the_ranges_build():
    """A rate just below 1, one class (a logistic regression), θ = 1 (DenseNet-B without compression), NumPy
    integers and lists as a config read back from JSON holds them."""
    x = jnp.zeros((2, 8, 8, 3))
    for name, options, classes in [("resnet20", dict(drop_path=0.999, num_classes=1), 1),
                                   ("resnet20", dict(num_classes=np.int64(3), stage_sizes=[1, 1, 1]), 3),
                                   ("densenet_bc_100_12", dict(block_config=(1, 1, 1), compression=1.0), 10)]:
        model = fusionjax.create_model(name, **options)
        assert jax.eval_shape(model.init, jax.random.key(0), x)["params"][
            "fc" if name.startswith("resnet") else "classifier"]["kernel"].shape[-1] == classes
    assert fusionjax.create_model("resnet20", num_classes=None).num_classes == 10  # None: the design's own


@pytest.mark.parametrize("in_channels, shape, fix", [
    (1, (2, 8, 8), "x[..., None]"),  # a batch of grayscale images without their channel axis
    (3, (8, 8, 3), "x[None]"),  # one image without a batch axis
    (3, (3, 8, 8), "x.transpose(1, 2, 0)[None]"),  # one CHW image, PyTorch's layout
])
def test_three_axis_input_is_told_the_fix_that_works(in_channels, shape, fix):
    model = fusionjax.create_model("resnet20", in_channels=in_channels)
    x = jnp.zeros(shape)
    with pytest.raises(ValueError, match=re.escape(fix)):
        jax.eval_shape(model.init, jax.random.key(0), x)
    fixed = eval(fix, {"x": x})  # the message's fix, applied as written
    assert jax.eval_shape(model.init, jax.random.key(0), fixed)["params"]["conv1"]["kernel"].shape[2] == in_channels


def test_train_command_line_names_a_bad_model_override(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "fusionjax.train", "--config", "digits", "--workdir", str(tmp_path / "run"),
         "--config.model_overrides.drop_path=2.0"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: config.model_overrides: ResNet: drop_path must be in [0, 1), got 2.0.")
    assert "Traceback" not in result.stderr
