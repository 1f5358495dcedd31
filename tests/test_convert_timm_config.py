"""timm ResNets and DenseNets the registry does not list convert through their configuration, read from timm's model.

The reference is timm itself: its forward (hooked per stage) with random weights and random BatchNorm statistics,
its state_dict's keys, shapes and values, and its parameter count. Features the zoo cannot express are named by
the error, on timm's real models that have them.
"""

import json

import jax
import numpy as np
import pytest
import torch

from fusionjax import convert
from fusionjax.convert import ConversionError, from_timm, timm_architecture, to_timm
from fusionjax.convert.timm import model_for_timm
from fusionjax.convert.timm_architecture import architecture
from fusionjax.models.registry import list_models
from test_convert import torch_stages
from test_convert_common import RTOL, assert_stages_agree, fusionjax_stages, images
from test_convert_timm import converted_and_back, random_timm, timm

SIZES = (48, 48), (49, 67)  # 49×67: odd at every stride-2 layer, so ceil-mode shortcut pools pad
# Not registered, each a different reading: tiered stems (t), deep stems of 64 (s), SE on basic blocks (its gate
# rounded up to 8 channels), ECA, grouped bottlenecks, 1-block stages, a DenseNet with a deep stem.
UNREGISTERED = [
    "resnet10t", "resnet14t", "resnet34d", "seresnet18", "ecaresnet26t", "seresnext26t_32x4d",
    *(pytest.param(name, marks=pytest.mark.slow) for name in (
        "seresnext26d_32x4d", "resnet50t", "ecaresnetlight", "resnet152s",
        "resnext50d_32x4d", "densenet264d")),
]


def test_the_names_tested_are_not_registered():
    names = [getattr(name, "values", [name])[0] for name in UNREGISTERED]
    registered = set(convert.convertible("timm")) | set(list_models())
    assert not registered & set(names)


@pytest.mark.parametrize("name", UNREGISTERED)
def test_unregistered_timm_models_convert_with_per_stage_parity_and_round_trip(name):
    torch_model = random_timm(name)
    variables = converted_and_back(name, torch_model)
    model = model_for_timm(name)
    parameters = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(variables["params"]))
    assert parameters == sum(p.numel() for p in torch_model.parameters())
    for size in SIZES:
        x = images(size)
        assert_stages_agree(fusionjax_stages(model, variables, x), torch_stages(torch_model, x), f"{name} {size}")


def test_the_reading_is_timms_configuration():
    """The description read from timm's modules against the arguments timm's own model functions pass."""
    assert architecture("resnet50t") == {
        "model": "ResNet", "block": {"type": "Bottleneck"}, "stage_sizes": [3, 4, 6, 3],
        "stage_widths": [64, 128, 256, 512], "stem": "deep", "stem_width": 64, "deep_stem_widths": [24, 32],
        "shortcut": "avg_down"}
    assert architecture("seresnext26d_32x4d.ra_in1k")["block"] == {
        "type": "Bottleneck", "groups": 32, "base_width": 4, "se_reduction": 16, "se_divisor": 8}
    assert architecture("resnet152s")["stem_width"] == 128 and "shortcut" not in architecture("resnet152s")
    assert architecture("densenet264d") == {"model": "DenseNet", "block_config": [6, 12, 64, 48], "growth_rate": 48,
                                            "bn_size": 4, "stem": "deep", "num_init_features": 96}
    assert architecture("no_such_model") is None


@pytest.mark.parametrize("name, feature", [
    ("skresnet18", "a selective-kernel convolution"),
    ("resnetblur50", r"anti-aliased downsampling \(BlurPool2d\)"),
    ("densenetblur121d", r"anti-aliased downsampling \(BlurPool2d\)"),
    ("resnetaa50", r"anti-aliased downsampling \(AvgPool2d; aa_layer\)"),
    ("resnet50_gn", "GroupNorm in place of BatchNorm"),
    ("resnetrs50", r"a strided convolution in place of the stem's max pool \(replace_stem_pool\)"),
    ("senet154", r"a reduced first convolution in its blocks \(block_reduce_first\)"),
    ("resnext26ts", r"is a ByobNet \(timm.models.byobnet\); only timm's ResNets"),
])
def test_what_the_zoo_cannot_express_is_named(name, feature):
    with pytest.raises(ConversionError, match=f"timm {name} {'' if 'ByobNet' in feature else 'uses '}{feature}"):
        from_timm(name, {})


def test_other_activations_attention_and_dilation_are_named(monkeypatch):
    """timm's ResNet with other options than its named models use (as timm.create_model's keywords pass them)."""
    create = timm.create_model
    for options, feature in [
        ({"act_layer": "silu"}, "the activation SiLU"),
        ({"block_args": {"attn_layer": "cbam"}}, "the attention layer CbamModule"),
        ({"output_stride": 16}, r"dilated stages \(output_stride < 32\)"),
        ({"output_stride": 16, "avg_down": False}, "dilated convolutions"),
        ({"drop_block_rate": 0.1}, r"DropBlock \(drop_block_rate\)"),
        ({"global_pool": "max"}, "global pooling 'max'"),
    ]:
        monkeypatch.setattr(timm, "create_model", lambda name, **kwargs: create(name, **kwargs, **options))
        forget_readings()
        with pytest.raises(ConversionError, match=f"timm resnet26t uses {feature}"):
            from_timm("resnet26t", {})
    forget_readings()


def forget_readings():
    timm_architecture._read.cache_clear()
    timm_architecture.spec_from_configuration.cache_clear()


def test_cli_converts_an_unregistered_timm_model_and_loads_it_without_timm(tmp_path, capsys, monkeypatch):
    path = tmp_path / "seresnet18.pth"
    torch.save(random_timm("seresnet18").state_dict(), path)
    out = tmp_path / "converted"
    assert convert.main(["--from", "timm", "seresnet18.a1_in1k", str(path), "--out", str(out), "--verify"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["arch"] == "seresnet18" and card["from_model"] == "seresnet18" and card["verification"]["ok"]
    assert max(stage["rel"] for stage in card["verification"]["stages"].values()) <= RTOL
    assert card["architecture"] == architecture("seresnet18")
    config = timm.models.get_pretrained_cfg("seresnet18").to_dict()
    assert card["normalization"]["mean"] == list(config["mean"]) and card["normalization"]["std"] == list(config["std"])

    monkeypatch.setattr(timm_architecture, "import_timm", lambda: pytest.fail("loading a card must not need timm"))
    model, variables = convert.load_pretrained(out)
    expected = torch.load(path, weights_only=True)
    monkeypatch.undo()
    assert all(torch.equal(v, expected[k]) for k, v in to_timm("seresnet18", variables, model=model).items())


def test_the_switches_the_reading_uses_refuse_nonsense():
    from fusionjax.arguments import ModelArgumentError
    from fusionjax.blocks import SqueezeExcite
    from fusionjax.models import DenseNet, ResNet

    with pytest.raises(ModelArgumentError, match=r"deep_stem_widths are the widths .* got \(24,\)"):
        ResNet(stem="deep", deep_stem_widths=(24,))
    with pytest.raises(ModelArgumentError, match="deep_stem_widths must be a non-empty sequence of integers ≥ 1"):
        DenseNet(stem="deep", deep_stem_widths=(0, 48))
    with pytest.raises(ModelArgumentError, match="divisor must be None or an integer ≥ 1"):
        SqueezeExcite(divisor=0)
