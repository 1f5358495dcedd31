"""``fusionjax-export`` on a training workdir and on a converted checkpoint: the artifacts, their cards, and each
refusal (a named error, exit status 1, and no file left behind).

The workdir is the README's digits job's (``configs/digits.py``, one block per stage) with its initial state saved
as a checkpoint by the trainer's own functions: these tests check the command, not the training (int8 accuracy on a
trained model: ``test_export_int8.py``).
"""

import json
import shutil

import jax
import numpy as np
import onnx
import pytest

import fusionjax
from fusionjax.export import artifact, cli, load_stablehlo
from fusionjax.export import onnx as onnx_export


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from fusionjax.configs import digits
    from fusionjax.train import data, trainer
    from fusionjax.train import workdir as workdir_lib

    path = tmp_path_factory.mktemp("digits")
    config = digits.get_config()
    config.model_overrides.stage_sizes = (1, 1, 1)
    workdir_lib.claim_workdir(path, config)
    data.describe(config).save(path)  # the data card, as the trainer writes it when a run starts
    setup = trainer.make_setup(config, training=False)
    manager = workdir_lib.checkpoint_manager(path, config)
    workdir_lib.save_checkpoint(manager, trainer.init_state(setup), {"top1": 0.5})
    manager.wait_until_finished()
    manager.close()
    return path, setup.model


def restored_variables(path):
    from fusionjax.train import trainer
    from fusionjax.train import workdir as workdir_lib

    config = workdir_lib.load_workdir_config(path)
    setup = trainer.make_setup(config, training=False)
    manager = workdir_lib.checkpoint_manager(path, config, read_only=True)
    state = workdir_lib.restore_checkpoint(manager, manager.latest_step(), trainer.abstract_state(setup))
    manager.close()
    return state.variables()


def run(*argv) -> int:
    return cli.main([str(a) for a in argv])


def test_onnx_from_workdir_with_card(workdir, tmp_path):
    path, model = workdir
    out = tmp_path / "digits.onnx"
    assert run(path, "--format", "onnx", "--out", out, "--verify") == 0
    card = json.loads(artifact.card_path(out).read_text())
    assert card["architecture"] == "resnet20" and card["format"] == "onnx"
    assert card["input"] == {"shape": [None, 8, 8, 1], "layout": "NHWC", "dtype": "float32", "batch": "dynamic"}
    assert card["normalization"] == {"channel_order": "grayscale", "pixel_max": 16.0, "mean": [0.3054],
                                     "std": [0.3761]}
    assert card["classes"] == [str(digit) for digit in range(10)] and card["batchnorm_folded"] is True
    assert card["source"]["step"] == 0 and len(card["source"]["sha256"]) == 64
    assert card["fusionjax_version"] == fusionjax.__version__ and card["jax_version"] == jax.__version__
    assert card["verification"]["relative_error"] <= artifact.FLOAT32_TOLERANCE
    images = np.random.default_rng(0).standard_normal((5, 8, 8, 1), np.float32)
    expected = jax.jit(model.apply)(restored_variables(path), images)
    assert artifact.relative_error(onnx_export.runner(str(out))(images), expected) <= artifact.FLOAT32_TOLERANCE


def test_int8_onnx_reports_accuracy_beside_float32(workdir, tmp_path):
    path, _ = workdir
    out = tmp_path / "digits-int8.onnx"
    assert run(path, "--format", "onnx", "--out", out, "--int8", "--calibration", 64, "--verify") == 0
    report = json.loads(artifact.card_path(out).read_text())["int8"]
    assert report["calibration_images"] == 64 and report["eval_images"] == 360
    assert 0 <= report["top1_int8"] <= 1 and 0 <= report["top1_float32"] <= 1
    proto = onnx.load(out)
    assert "QuantizeLinear" in {node.op_type for node in proto.graph.node}


def test_stablehlo_nchw_for_several_platforms(workdir, tmp_path):
    path, model = workdir
    out = tmp_path / "digits.stablehlo"
    assert run(path, "--format", "stablehlo", "--out", out, "--nchw", "--platforms", "cpu,cuda",
               "--checkpoint", "best", "--verify", "--no-fold-bn") == 0
    restored = load_stablehlo(out)
    assert restored.platforms == ("cpu", "cuda")
    images = np.random.default_rng(1).standard_normal((2, 8, 8, 1), np.float32)
    actual = restored.call(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    expected = jax.jit(model.apply)(restored_variables(path), images)
    assert artifact.relative_error(actual, expected) <= artifact.FLOAT32_TOLERANCE
    card = json.loads(artifact.card_path(out).read_text())
    assert card["input"]["layout"] == "NCHW" and card["input"]["shape"] == [None, 1, 8, 8]
    assert card["batchnorm_folded"] is False and card["platforms"] == ["cpu", "cuda"]


def refused(capsys, tmp_path, *argv, message: str):
    assert run(*argv) == 1
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), sorted(p.name for p in tmp_path.iterdir())


def test_unknown_format(workdir, tmp_path, capsys):
    refused(capsys, tmp_path, workdir[0], "--format", "tflite", "--out", tmp_path / "m.tflite",
            message="Unknown format 'tflite'")


def test_workdir_without_checkpoint(workdir, tmp_path, capsys):
    empty = tmp_path / "run"
    empty.mkdir()
    shutil.copy(workdir[0] / "config.json", empty / "config.json")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    refused(capsys, out_dir, empty, "--format", "onnx", "--out", out_dir / "m.onnx", message="no checkpoints")
    refused(capsys, out_dir, workdir[0], "--format", "onnx", "--out", out_dir / "m.onnx", "--checkpoint", "7",
            message="no checkpoint at step 7; kept steps: [0]")
    refused(capsys, out_dir, tmp_path / "nothing", "--format", "onnx", "--out", out_dir / "m.onnx",
            message="does not exist")


def test_image_size_the_model_cannot_take(workdir, tmp_path, capsys):
    refused(capsys, tmp_path, workdir[0], "--format", "onnx", "--out", tmp_path / "m.onnx", "--image-size", 4,
            message="at least 8×8")


def test_failed_verification_leaves_no_file(workdir, tmp_path, capsys, monkeypatch):
    correct_runner = onnx_export.runner
    monkeypatch.setattr(onnx_export, "runner", lambda proto: lambda images: correct_runner(proto)(images) + 1.0)
    refused(capsys, tmp_path, workdir[0], "--format", "onnx", "--out", tmp_path / "m.onnx", "--verify",
            message="differs from the model")


def test_existing_file_is_kept(workdir, tmp_path, capsys):
    """--force replaces an earlier export (a file with its card), never another file."""
    out = tmp_path / "m.onnx"
    out.write_bytes(b"earlier")
    for force in ((), ("--force",)):
        assert run(workdir[0], "--format", "onnx", "--out", out, *force) == 1
        assert "not an earlier export" in capsys.readouterr().err
        assert out.read_bytes() == b"earlier" and not artifact.card_path(out).exists()
    out.unlink()
    assert run(workdir[0], "--format", "onnx", "--out", out) == 0
    assert run(workdir[0], "--format", "onnx", "--out", out) == 1
    assert "pass --force" in capsys.readouterr().err
    assert run(workdir[0], "--format", "onnx", "--out", out, "--force") == 0
    assert onnx.load(out).graph.input[0].name == "images"


def test_bfloat16_onnx_is_refused(workdir, tmp_path, capsys):
    refused(capsys, tmp_path, workdir[0], "--format", "onnx", "--out", tmp_path / "m.onnx", "--dtype", "bfloat16",
            message="float32 only")


@pytest.mark.slow
def test_converted_checkpoint(tmp_path, capsys):
    """A fusionjax-convert directory: exported at another image size; int8 needs a workdir's training images."""
    from fusionjax.convert import write_converted

    model = fusionjax.create_model("resnet18", num_classes=10)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: (rng.uniform(0.5, 1.5, s.shape) if s.ndim == 1 else  # He-scaled kernels
                                        rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape)).astype(np.float32),
                             shapes)
    converted = write_converted(tmp_path / "converted", "resnet18", variables, {"num_classes": 10})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "r18.onnx"
    assert run(converted, "--format", "onnx", "--out", out, "--image-size", 32, "--verify") == 0
    card = json.loads(artifact.card_path(out).read_text())
    assert card["architecture"] == "resnet18" and card["input"]["shape"] == [None, 32, 32, 3]
    assert card["source"]["kind"] == "converted"
    out.unlink()
    artifact.card_path(out).unlink()
    refused(capsys, out_dir, converted, "--format", "onnx", "--out", out, "--int8", message="calibrates on")
