"""fusionjax.convert against timm itself: ResNet-D (deep stem, average-pool shortcuts), SE, ECA, ResNeXt and
DenseNet weights, exact to float32 at every stage.

timm's models are built with ``pretrained=False`` (no downloads) and random BatchNorm statistics; the reference is
their own forward, hooked per stage (``torch_stages``), and their own parameter counts and key names.
"""

import json

import numpy as np
import pytest
import torch

import fusionjax
from fusionjax import convert
from fusionjax.convert import ConversionError, from_timm, to_timm
from fusionjax.convert.timm import import_timm
from fusionjax.torch_compat import import_torchvision
from test_convert import randomized, torch_stages
from test_convert_common import RTOL, assert_stages_agree, fusionjax_stages, images

timm = import_timm()
SMALL, SMALL_ODD = (64, 64), (65, 79)  # 65×79: odd at every stride-2 layer, so ceil-mode pooling pads
# New zoo architectures at both sizes; those identical to existing ones (and, for the last three, to torchvision's,
# checked at 224² and 193×257 in test_convert) at the odd size.
PARITY = {
    "resnet18d": (SMALL, SMALL_ODD), "resnet26d": (SMALL, SMALL_ODD), "resnet50d": (SMALL, SMALL_ODD),
    "resnet101d": (SMALL, SMALL_ODD), "ecaresnet50d": (SMALL, SMALL_ODD),
    "seresnet50": (SMALL_ODD,), "seresnext50_32x4d": (SMALL_ODD,),
    "resnet50": (SMALL_ODD,), "resnext50_32x4d": (SMALL_ODD,), "densenet121": (SMALL_ODD,),
}


def random_timm(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomized(timm.create_model(name, pretrained=False), seed)


def converted_and_back(name: str, torch_model) -> dict:
    """``from_timm`` of ``torch_model``'s weights, after checking that ``to_timm`` gives them back exactly."""
    state_dict = torch_model.state_dict()
    variables = from_timm(name, state_dict)
    back = to_timm(name, variables)
    assert list(back) == list(state_dict)  # same keys, in timm's order
    assert all(back[k].dtype == v.dtype and torch.equal(back[k], v) for k, v in state_dict.items())
    torch_model.load_state_dict(back, strict=True)
    return variables


@pytest.mark.parametrize("name", list(PARITY))
def test_timm_parity_and_round_trip(name):
    torch_model = random_timm(name)
    variables = converted_and_back(name, torch_model)

    model = fusionjax.create_model(fusionjax.convert.frameworks.find_spec("timm", name).name)
    for size in PARITY[name]:
        x = images(size)
        assert_stages_agree(fusionjax_stages(model, variables, x), torch_stages(torch_model, x), f"{name} {size}")


@pytest.mark.parametrize("name", sorted(convert.convertible("timm")))
def test_parameter_counts_and_keys_equal_timms(name):
    spec = fusionjax.convert.frameworks.find_spec("timm", name)
    with torch.device("meta"):  # shapes only: no memory, no random init
        reference = timm.create_model(name, pretrained=False)
        torchvision_model = spec.torchvision and import_torchvision().models.get_model(spec.torchvision)
    if torchvision_model:  # timm's model is torchvision's, key for key: test_models counts it, test_convert runs it
        assert [(k, v.shape) for k, v in reference.state_dict().items()] == \
               [(k, v.shape) for k, v in torchvision_model.state_dict().items()]
        return
    expected = fusionjax.convert.mapping.expected_variables(fusionjax.create_model(spec.name))
    count = lambda prefix: sum(int(np.prod(s.shape)) for p, s in expected.items() if p.startswith(prefix))
    assert count("params/") == sum(p.numel() for p in reference.parameters())
    assert count("batch_stats/") == sum(b.numel() for n, b in reference.named_buffers() if "running" in n)


def test_names_resolve_and_mismatches_are_named():
    assert fusionjax.convert.frameworks.find_spec("timm", "seresnet50").name == "se_resnet50"
    assert fusionjax.convert.frameworks.find_spec("timm", "se_resnet50").name == "se_resnet50"  # the zoo's name
    assert fusionjax.convert.frameworks.find_spec("timm", "resnet50d.a1_in1k").name == "resnet50d"  # a weights tag
    with pytest.raises(ConversionError, match="'resnet20' has no timm counterpart.*resnet50d, resnext101_32x8d"):
        from_timm("resnet20", {})

    with torch.device("meta"):
        plain = timm.create_model("resnet18", pretrained=False).state_dict()
    plain = {k: np.zeros(v.shape, np.float32) for k, v in plain.items()}
    with pytest.raises(ConversionError) as error:  # torchvision's stem and shortcuts are not ResNet-D's
        from_timm("resnet18d", plain)
    message = str(error.value)
    assert "does not fit fusionjax 'resnet18d' (timm resnet18d)" in message
    assert "missing key(s) that resnet18d needs: conv1.0.weight (32, 3, 3, 3); conv1.1.weight (32,)" in message
    assert "unexpected key(s) that resnet18d does not have: conv1.weight (64, 3, 7, 7)" in message
    # the plain shortcut's BatchNorm is read as the average-pool shortcut's conv, and is the wrong shape for it
    assert "layer2.0.downsample.1.weight: checkpoint (128,), resnet18d expects (128, 64, 1, 1)" in message


def test_cli_converts_and_verifies_timm_weights(tmp_path, capsys):
    path = tmp_path / "resnet18d.pth"
    torch.save(random_timm("resnet18d").state_dict(), path)
    out = tmp_path / "converted"
    assert convert.main(["--from", "timm", "resnet18d", str(path), "--out", str(out), "--verify"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["arch"] == "resnet18d" and card["from"] == "timm" and card["from_model"] == "resnet18d"
    assert card["verification"]["source"] == "timm" and card["verification"]["ok"]
    assert max(stage["rel"] for stage in card["verification"]["stages"].values()) <= RTOL
    assert "fusionjax vs timm" in capsys.readouterr().out
    model, variables = convert.load_pretrained(out)
    expected = torch.load(path, weights_only=True)
    assert all(torch.equal(v, expected[k]) for k, v in to_timm("resnet18d", variables, model=model).items())


def test_average_pool_shortcut_pools_as_torch_ceil_mode():
    """ResNet-D's shortcut pool at odd sizes: windows over the edge average only the cells they cover."""
    from fusionjax.layers import avg_pool_ceil

    pool = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    for height, width in [(5, 7), (4, 6), (1, 1), (17, 20)]:
        x = np.random.default_rng(0).standard_normal((2, height, width, 3), dtype=np.float32)
        expected = pool(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(avg_pool_ceil(x)), expected, rtol=1e-6, atol=1e-7)
