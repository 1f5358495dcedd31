"""fusionjax.convert against torchvision itself: every torchvision architecture of the zoo, exact to float32.

The reference is always torchvision (its models run forward, hooked per stage by this file; its key names; its
state_dicts) or NumPy/hashlib; never the converter's own output. Errors are measured as max|Δ| and
rel = max|Δ| / max|torchvision| over a whole output.
"""

import errno
import hashlib
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import fusionjax
from fusionjax import convert
from fusionjax.convert import ConversionError, ConversionWarning, from_torchvision, to_torchvision
from fusionjax.torch_compat import import_torchvision
from test_convert_common import LOGITS_ATOL, RTOL, STAGES, assert_stages_agree, fusionjax_stages, images

tv = import_torchvision()

SQUARE, ODD = (224, 224), (193, 257)  # 193×257 catches asymmetric ("SAME") padding at every stride-2 layer
TORCHVISION_ARCHS = [name for name in fusionjax.list_models() if fusionjax.get_model_spec(name).torchvision]


def random_torchvision(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomized(tv.models.get_model(arch, weights=None), seed)


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` (torchvision's or timm's, its random init) in eval mode with random BN affine parameters and
    running statistics (weight ~ U(0.5, 1.5), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1), running_var ~
    U(0.5, 1.5)).

    Statistics drawn independently of the weights do not normalize what the layers compute, so every residual
    block multiplies its input and the logits of deep nets reach 10²–10⁴; an absolute tolerance on them would
    then test the scale, not the computation. The classifier is therefore rescaled (weight and bias by one
    factor, measured on a 128×128 image) so that the logits are O(10), as a trained net's are.
    """
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.running_mean.normal_(0.0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
        head = model.fc if hasattr(model, "fc") else model.classifier
        scale = 5.0 / model(torch.randn(1, 3, 128, 128, generator=generator)).abs().max()
        head.weight.mul_(scale)
        head.bias.mul_(scale)
    return model


def torch_stages(torch_model: torch.nn.Module, x: np.ndarray) -> dict[str, np.ndarray]:
    """The torch model's own outputs at each stage (forward hooks on its modules), NHWC, float64."""
    modules = dict(torch_model.named_modules())
    taps = {"stem": ("maxpool", "features.pool0"), **{f"stage{i}": (f"layer{i}", f"features.denseblock{i}")
                                                      for i in range(1, 5)}}
    captured = {}
    handles = [modules[name].register_forward_hook(lambda m, a, out, stage=stage: captured.__setitem__(stage, out))
               for stage, names in taps.items() for name in names if name in modules]
    head = modules["fc"] if "fc" in modules else modules["classifier"]
    handles.append(head.register_forward_pre_hook(lambda m, args: captured.__setitem__("pooled", args[0])))
    try:
        with torch.no_grad():
            captured["logits"] = torch_model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    finally:
        for handle in handles:
            handle.remove()
    return {stage: (lambda a: a.transpose(0, 2, 3, 1) if a.ndim == 4 else a)(captured[stage].double().numpy())
            for stage in STAGES}


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_torchvision_parity_at_both_sizes_and_round_trip(arch):
    """The README's claim: every torchvision architecture, at 224² and 193×257, against torchvision's forward."""
    torch_model = random_torchvision(arch)
    state_dict = torch_model.state_dict()
    variables = from_torchvision(arch, state_dict)

    back = to_torchvision(arch, variables)
    assert list(back) == list(state_dict)  # same keys, in torchvision's order
    for key, value in state_dict.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
    torch_model.load_state_dict(back, strict=True)

    model = fusionjax.create_model(arch)
    for size in (SQUARE, ODD):
        x = images(size)
        assert_stages_agree(fusionjax_stages(model, variables, x), torch_stages(torch_model, x), f"{arch} {size}")


def test_compare_reports_the_stage_that_diverges():
    arch = "resnet18"
    torch_model = random_torchvision(arch)
    variables = from_torchvision(arch, torch_model.state_dict())
    x = images(SQUARE)
    with torch.no_grad():  # the comparison's logits are torchvision's own, computed here independently
        reference = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    model = fusionjax.create_model(arch)
    with jax.default_matmul_precision("highest"):
        ours = np.asarray(jax.jit(model.apply)(variables, x))
    assert np.max(np.abs(ours - reference)) / np.max(np.abs(reference)) <= RTOL
    agreeing = convert.compare(arch, torch_model, variables, x)
    assert agreeing.ok and agreeing.source == "torchvision" and [s.name for s in agreeing.stages] == STAGES
    assert agreeing.logits.max_abs == pytest.approx(np.max(np.abs(ours - reference)), abs=1e-6)

    variables["batch_stats"]["layer3_0"]["bn2"]["var"] = variables["batch_stats"]["layer3_0"]["bn2"]["var"] * 4
    result = convert.compare(arch, torch_model, variables, x.transpose(0, 3, 1, 2))  # NCHW is accepted too
    assert not result.ok and result.first_divergence == "stage3"
    assert [s.ok for s in result.stages[:3]] == [True, True, True]
    assert "first divergence: stage3" in str(result) and "NO" in str(result)


def test_legacy_densenet_keys():
    arch = "densenet121"
    state_dict = {k: v.numpy() for k, v in tv.models.get_model(arch).state_dict().items()}
    # the names torchvision.models.densenet._load_state_dict renames: "norm1" was "norm.1", "conv2" was "conv.2";
    # such old checkpoints predate num_batches_tracked
    legacy = {k.replace(".norm1.", ".norm.1.").replace(".norm2.", ".norm.2.").replace(".conv1.", ".conv.1.")
              .replace(".conv2.", ".conv.2."): v for k, v in state_dict.items() if "num_batches_tracked" not in k}
    assert sum(".norm.1." in k for k in legacy) == 4 * 58  # 58 dense layers, 4 BN tensors each
    ours = jax.tree.leaves_with_path(from_torchvision(arch, legacy))
    canonical = jax.tree.leaves_with_path(from_torchvision(arch, state_dict))
    assert [p for p, _ in ours] == [p for p, _ in canonical]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(ours, canonical))
    # compare() and --verify load legacy checkpoints into torchvision the way torchvision does
    reloaded = convert.torchvision_model(arch, legacy).state_dict()
    assert all(np.array_equal(reloaded[k].numpy(), v) for k, v in state_dict.items())
    layer = from_torchvision(arch, legacy)["params"]["denseblock2"]["denselayer3"]
    np.testing.assert_array_equal(
        layer["conv1"]["kernel"], state_dict["features.denseblock2.denselayer3.conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(layer["norm2"]["scale"], state_dict["features.denseblock2.denselayer3.norm2.weight"])


def test_files_wrappers_and_safetensors_without_torch(tmp_path):
    arch = "resnet18"
    state_dict = tv.models.get_model(arch).state_dict()
    expected = {"/".join(str(k.key) for k in path): leaf
                for path, leaf in jax.tree.leaves_with_path(from_torchvision(arch, state_dict))}
    np.testing.assert_array_equal(expected["params/layer2_0/downsample_conv/kernel"],
                                  state_dict["layer2.0.downsample.0.weight"].numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(expected["params/fc/kernel"], state_dict["fc.weight"].numpy().T)
    np.testing.assert_array_equal(expected["batch_stats/bn1/var"], state_dict["bn1.running_var"].numpy())

    torch.save(state_dict, tmp_path / "weights.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}, "epoch": 3}, tmp_path / "run.pt")
    import safetensors.torch

    safetensors.torch.save_file(state_dict, tmp_path / "weights.safetensors")
    for source in (tmp_path / "weights.pth", str(tmp_path / "run.pt"), {k: v.numpy() for k, v in state_dict.items()}):
        got = from_torchvision(arch, source)
        assert all(np.array_equal(leaf, expected["/".join(str(k.key) for k in path)])
                   for path, leaf in jax.tree.leaves_with_path(got))

    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        import numpy as np, jax
        from fusionjax.convert import from_torchvision
        variables = from_torchvision("{arch}", sys.argv[1])
        np.savez(sys.argv[2], **{{"/".join(str(k.key) for k in p): v for p, v in jax.tree.leaves_with_path(variables)}})
    """)
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "weights.safetensors"), str(tmp_path / "out.npz")],
                   check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    with np.load(tmp_path / "out.npz") as loaded:
        assert set(loaded.files) == set(expected)
        assert all(np.array_equal(loaded[name], expected[name]) for name in loaded.files)


def test_another_architecture_names_the_keys_and_shapes():
    resnet34 = tv.models.get_model("resnet34").state_dict()
    resnet50 = tv.models.get_model("resnet50").state_dict()
    with pytest.raises(ConversionError) as error:
        from_torchvision("resnet50", resnet34)
    message = str(error.value)
    missing = [k for k in resnet50 if k not in resnet34 and not k.endswith("num_batches_tracked")]
    mismatched = [k for k in resnet34 if k in resnet50 and resnet34[k].shape != resnet50[k].shape]
    assert "resnet50" in message
    assert f"{len(missing)} missing key(s)" in message and f"and {len(missing) - 5} more" in message
    assert f"{missing[0]} {tuple(resnet50[missing[0]].shape)}" in message
    assert f"{len(mismatched)} key(s) with the wrong shape" in message
    first = mismatched[0]
    got, want = tuple(resnet34[first].shape), tuple(resnet50[first].shape)
    assert f"{first}: checkpoint {got}, resnet50 expects {want}" in message

    with pytest.raises(ConversionError) as error:
        from_torchvision("resnet18", resnet50)
    resnet18 = tv.models.get_model("resnet18").state_dict()
    unexpected = [k for k in resnet50 if k not in resnet18]
    message = str(error.value)
    assert f"{len(unexpected)} unexpected key(s) that resnet18 does not have" in message
    assert f"{unexpected[0]} {tuple(resnet50[unexpected[0]].shape)}" in message


def test_another_head_is_taken_from_the_checkpoint_and_the_variables():
    torch_model = tv.models.get_model("resnet18", num_classes=10)
    state_dict = {k: v.numpy() for k, v in torch_model.state_dict().items()}
    variables = from_torchvision("resnet18", state_dict)  # no model: the classifier is the checkpoint's
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state_dict["fc.weight"].T)
    back = to_torchvision("resnet18", variables)  # no model: the classifier is the variables'
    torch_model.load_state_dict(back, strict=True)
    assert all(np.array_equal(back[k].numpy(), v) for k, v in state_dict.items())
    x = images((64, 64))
    with torch.no_grad():
        reference = torch_model.eval()(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    assert np.max(np.abs(fusionjax_stages(fusionjax.create_model("resnet18", num_classes=10), variables, x)["logits"]
                         - reference)) <= LOGITS_ATOL
    assert convert.compare("resnet18", torch_model, variables, x).ok  # the model is built for the variables' head

    with pytest.raises(ConversionError) as error:  # a model that says otherwise is refused, with the fix
        from_torchvision("resnet18", state_dict, model=fusionjax.create_model("resnet18"))
    message = str(error.value)
    assert "fc.weight: checkpoint (10, 512), resnet18 expects (1000, 512)" in message
    assert "Only the classifier differs: 10 classes in the checkpoint, 1000 in the model." in message
    assert "num_classes=10" in message
    with pytest.raises(ConversionError, match=r"(?s)the variables do not fit fusionjax 'resnet18'.*params/fc/bias: "
                                              r"variables \(10,\), resnet18 expects \(1000,\)"):
        to_torchvision("resnet18", variables, model=fusionjax.create_model("resnet18"))
    with pytest.raises(ConversionError, match="has no torchvision counterpart.*resnet18"):
        from_torchvision("resnet20", state_dict)


def test_strict_false_loads_what_fits_and_reports_the_rest():
    state_dict = {k: v.numpy() for k, v in random_torchvision("resnet18").state_dict().items()}
    del state_dict["layer4.1.bn2.running_var"]
    state_dict["layer1.0.conv1.weight"] = state_dict["layer1.0.conv1.weight"][:, :32]
    state_dict["head.weight"] = np.zeros((3, 3), np.float32)
    with pytest.warns(ConversionWarning) as caught:
        variables = from_torchvision("resnet18", state_dict, strict=False)
    report = caught[0].message.report
    assert report.missing == (("layer4.1.bn2.running_var", (512,)),)
    assert report.unexpected == (("head.weight", (3, 3)),)
    assert report.mismatched == (("layer1.0.conv1.weight", (64, 32, 3, 3), (64, 64, 3, 3)),)
    np.testing.assert_array_equal(variables["params"]["layer4_1"]["bn2"]["scale"], state_dict["layer4.1.bn2.weight"])
    np.testing.assert_array_equal(variables["batch_stats"]["layer4_1"]["bn2"]["var"], np.ones(512))  # as initialized
    assert variables["params"]["layer1_0"]["conv1"]["kernel"].shape == (3, 3, 64, 64)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(random_torchvision("resnet18").state_dict(), path)
    return path


class Payload:
    """Unpickling this calls open(marker, "w"): the file appears if pickled code ever runs."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_bad_files_are_refused_and_never_executed(tmp_path, resnet18_file):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(resnet18_file.read_bytes()[: resnet18_file.stat().st_size // 2])
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        from_torchvision("resnet18", truncated)

    import safetensors.numpy

    safetensors.numpy.save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, tmp_path / "w.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:-100])
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        from_torchvision("resnet18", tmp_path / "cut.safetensors")

    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(ConversionError, match="not a checkpoint: it is a text file"):
        from_torchvision("resnet18", text)
    with pytest.raises(FileNotFoundError):
        from_torchvision("resnet18", tmp_path / "absent.pth")

    marker = tmp_path / "payload-ran"
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"conv1.weight": Payload(marker)}, protocol=2))
    torch.save({"conv1.weight": Payload(marker)}, tmp_path / "zipped.pth")
    for name in ("raw.pkl", "zipped.pth"):
        with pytest.raises(ConversionError, match="Refused to load.*weights_only=True"):
            from_torchvision("resnet18", tmp_path / name)
    assert not marker.exists()


def test_to_torchvision_names_what_does_not_fit():
    variables = from_torchvision("resnet18", tv.models.get_model("resnet18").state_dict())
    del variables["params"]["fc"]
    with pytest.raises(ConversionError, match=r"2 missing.*params/fc/bias \(1000,\)"):
        to_torchvision("resnet18", variables)


def test_cli_writes_verifies_and_loads_back(tmp_path, resnet18_file, capsys):
    out = tmp_path / "converted"
    assert convert.main(["resnet18", str(resnet18_file), "--out", str(out), "--verify"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["arch"] == "resnet18" and card["source"] == "resnet18.pth"
    assert card["from"] == "torchvision" and card["from_model"] == "resnet18"
    assert card["sha256"] == hashlib.sha256(resnet18_file.read_bytes()).hexdigest()
    assert card["fusionjax_version"] == fusionjax.__version__
    transforms = tv.models.get_model_weights("resnet18").DEFAULT.transforms()  # torchvision's own preprocessing
    assert card["normalization"] == {"channel_order": "RGB", "pixel_max": 255.0, "mean": list(transforms.mean),
                                     "std": list(transforms.std)}
    logits = card["verification"]["stages"]["logits"]
    assert card["verification"]["ok"] and logits["rel"] <= RTOL and logits["max_abs"] <= LOGITS_ATOL
    assert "logits" in capsys.readouterr().out

    model, variables = convert.load_pretrained(out)
    assert model == fusionjax.create_model("resnet18")
    expected = torch.load(resnet18_file, weights_only=True)
    assert to_torchvision("resnet18", variables).keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in to_torchvision("resnet18", variables).items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted"]  # no staging directory left


def test_cli_takes_the_files_classifier_and_names_the_option_that_fixes_a_mismatch(tmp_path, capsys):
    path = tmp_path / "ten.pth"
    torch.save(tv.models.get_model("resnet18", num_classes=10).state_dict(), path)
    assert convert.main(["resnet18", str(path), "--out", str(tmp_path / "ten")]) == 0
    assert json.loads((tmp_path / "ten" / "card.json").read_text())["num_classes"] == 10
    assert convert.load_pretrained(tmp_path / "ten")[0].num_classes == 10

    assert convert.main(["resnet18", str(path), "--out", str(tmp_path / "out"), "--num-classes", "1000"]) == 1
    error = capsys.readouterr().err
    assert "Only the classifier differs: 10 classes in the checkpoint, 1000 in the model." in error
    assert "pass --num-classes 10" in error and "strict=False" not in error and "model=" not in error
    assert not (tmp_path / "out").exists()


def test_cli_failures_leave_nothing_and_overwrite_nothing(tmp_path, resnet18_file, capsys, monkeypatch):
    out = tmp_path / "out"
    assert convert.main(["resnet50", str(resnet18_file), "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "does not fit fusionjax 'resnet50' (torchvision resnet50)" in error and "strict=False" not in error
    assert list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for force in ((), ("--force",)):  # --force replaces only an earlier conversion
        assert convert.main(["resnet18", str(resnet18_file), "--out", str(out), *force]) == 1
        assert "holds precious.txt" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == ["precious.txt"]
    (out / "precious.txt").unlink()
    assert convert.main(["resnet18", str(resnet18_file), "--out", str(out)]) == 0
    earlier = (out / "card.json").read_text()

    import orbax.checkpoint as ocp

    def broken_save(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ocp.StandardCheckpointer, "save", broken_save)
    assert convert.main(["resnet18", str(resnet18_file), "--out", str(out), "--force"]) == 1
    assert capsys.readouterr().err == f"fusionjax-convert: error: {out}: No space left on device\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "card.json").read_text() == earlier
    monkeypatch.undo()

    def failed_verification(arch, *args, **kwargs):
        stage = convert.StageError("logits", (2, 1000), 1.0, 10.0, 0.1, ok=False)
        return convert.Comparison(arch, (2, 224, 224, 3), (stage,), top1_agree=True, atol=1e-4, rtol=1e-5)

    monkeypatch.setattr(convert.crosscheck, "compare", failed_verification)
    assert convert.main(["resnet18", str(resnet18_file), "--out", str(out), "--force", "--verify"]) == 2
    assert "verification failed at logits" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "card.json").read_text() == earlier
    monkeypatch.undo()

    assert convert.main(["resnet18", str(resnet18_file), "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "variables"]
    with pytest.raises(FileNotFoundError, match="no card.json"):
        convert.load_pretrained(tmp_path)


def test_pretrained_from_file_url_then_from_cache(tmp_path, resnet18_file, monkeypatch):
    digest = hashlib.sha256(resnet18_file.read_bytes()).hexdigest()
    served = tmp_path / "server" / f"resnet18-{digest[:8]}.pth"
    served.parent.mkdir()
    served.write_bytes(resnet18_file.read_bytes())
    entry = tv.models.get_model_weights("resnet18").DEFAULT
    monkeypatch.setattr(entry.value, "url", served.as_uri())
    monkeypatch.setenv("FUSIONJAX_CACHE", str(tmp_path / "cache"))
    expected = torch.load(resnet18_file, weights_only=True)

    def assert_torchvision_weights(variables):
        back = to_torchvision("resnet18", variables)
        assert all(torch.equal(back[k], v) for k, v in expected.items())

    model, variables = fusionjax.pretrained("resnet18")
    assert_torchvision_weights(variables)
    assert (tmp_path / "cache" / "torchvision" / served.name).read_bytes() == served.read_bytes()
    assert (tmp_path / "cache" / "converted" / f"resnet18.{served.stem}" / "card.json").is_file()

    served.unlink()  # neither downloaded nor converted again: the converted cache is read directly
    monkeypatch.setattr(convert.hub, "from_torchvision", lambda *a, **k: pytest.fail("converted again"))
    assert_torchvision_weights(fusionjax.pretrained("resnet18")[1])

    with pytest.raises(ValueError, match="num_classes=10"):
        fusionjax.pretrained("resnet18", num_classes=10)
    with pytest.raises(ValueError, match="IMAGENET1K_V1, DEFAULT"):
        convert.pretrained_variables("resnet18", model, weights="IMAGENET1K_V2")
    assert convert.torchvision_weights("resnet50", "IMAGENET1K_V1").url.endswith("resnet50-0676ba61.pth")


def test_pretrained_from_prefilled_download_and_hash_checks(tmp_path, resnet18_file, monkeypatch):
    digest = hashlib.sha256(resnet18_file.read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    entry = tv.models.get_model_weights("resnet18").DEFAULT
    monkeypatch.setattr(entry.value, "url", (tmp_path / "nowhere" / name).as_uri())
    monkeypatch.setenv("FUSIONJAX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "torchvision").mkdir(parents=True)
    (tmp_path / "cache" / "torchvision" / name).write_bytes(resnet18_file.read_bytes())
    variables = fusionjax.pretrained("resnet18")[1]
    expected = torch.load(resnet18_file, weights_only=True)
    assert all(torch.equal(to_torchvision("resnet18", variables)[k], v) for k, v in expected.items())

    wrong = f"resnet18-{'0' * 8}.pth"  # a name whose hash prefix the content does not have
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / wrong).write_bytes(resnet18_file.read_bytes())
    monkeypatch.setattr(entry.value, "url", (tmp_path / "server" / wrong).as_uri())
    with pytest.raises(ValueError, match="hash"):
        fusionjax.pretrained("resnet18")
    assert not (tmp_path / "cache" / "torchvision" / wrong).exists()
    assert not (tmp_path / "cache" / "converted" / f"resnet18.{Path(wrong).stem}").exists()
