"""Nothing lost: ``--force`` replaces only an earlier output of the same command, and a failed write (a full disk,
a read-only directory, a file where a directory belongs) ends a command with one line ``error: PATH: reason`` and
a non-zero exit, what was there before intact.

The faults happen as they do for users: a full disk is a small tmpfs (ENOSPC) or a file-size limit (``prlimit
--fsize``: writes beyond it fail with EFBIG); a read-only directory is a read-only bind mount, and a forbidden one
another user's folder seen from a user namespace, both of which stop root too (file modes do not). Mounts are made
in a user and mount namespace of the command's own (``unshare``), so they need no privileges and vanish with it.
"""

import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

import fusionjax
from fusionjax.convert import cli as convert_cli
from fusionjax.convert import write_converted
from fusionjax.torch_compat import import_torchvision

SMALL_FILES = 64 * 1024  # bytes: a file-size limit below any checkpoint's or artifact's size, above a card's
NOBODY = 65534  # a user id that the namespaces here leave unmapped


def snapshot(directory: Path) -> dict[str, str]:
    """Every file and directory under ``directory``: relative path → SHA-256 (directories: "dir")."""
    return {str(p.relative_to(directory)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*"))}


def run(command: list, *, cwd: Path, mounts: str | None = None, file_size: int | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    """``command`` in a subprocess; with ``mounts`` (shell, may be empty), in a namespace of its own after them;
    ``file_size``: writes beyond that many bytes fail with EFBIG, as on a full disk (Python ignores SIGXFSZ, which
    would kill it)."""
    command = [str(part) for part in command]
    if file_size:
        command = limit_file_size(command, file_size)
    if mounts is not None:
        command = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                   f"{mounts + ' && ' if mounts else ''}exec {shlex.join(command)}"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def limit_file_size(command: list, size: int) -> list:
    """``command`` with writes beyond ``size`` bytes failing, and without the shared compilation cache, whose
    entries it would truncate."""
    return ["env", "JAX_ENABLE_COMPILATION_CACHE=false", "prlimit", f"--fsize={size}:{size}", *map(str, command)]


def read_only(directory: Path) -> str:
    quoted = shlex.quote(str(directory))
    return f"mount --bind {quoted} {quoted} && mount -o remount,bind,ro {quoted}"


def small_disk(directory: Path, size: str) -> str:
    return f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(directory))}"


def assert_one_error(result: subprocess.CompletedProcess, expected: str) -> None:
    """Exit status 1 and ``expected`` as the one error line: no traceback, no other error."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines and lines[-1] == expected, result.stderr[-3000:]
    assert not any("Traceback" in line or "Error" in line for line in lines[:-1]), result.stderr[-3000:]


def command(name: str) -> list:
    return [Path(sys.executable).parent / name]


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-convert


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """A torchvision ResNet-18 state_dict saved by torch, as users download them (random weights)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(import_torchvision().models.resnet18(num_classes=10).state_dict(), path)
    return path


@pytest.fixture
def user_folder(tmp_path, resnet18_file) -> Path:
    """A user's working folder: notes, a data directory and the source weights."""
    folder = tmp_path / "work"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text("image,label\n")
    (folder / "notes.txt").write_text("results so far\n")
    (folder / "r18.pth").write_bytes(resnet18_file.read_bytes())
    return folder


def test_convert_force_never_replaces_a_folder_holding_anything_else(user_folder, monkeypatch, capsys):
    before = snapshot(user_folder)
    monkeypatch.chdir(user_folder)
    for force in ((), ("--force",)):
        assert convert_cli.main(["resnet18", "r18.pth", "--out", ".", *force]) == 1
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "holds data/, notes.txt, r18.pth" in error, error
        assert "pass --force" not in error
    assert snapshot(user_folder) == before


def test_convert_force_replaces_an_earlier_conversion(user_folder, capsys):
    out = user_folder / "converted"
    source = user_folder / "r18.pth"
    assert convert_cli.main(["resnet18", str(source), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "variables"]
    assert convert_cli.main(["resnet18", str(source), "--out", str(out)]) == 1
    assert "holds an earlier conversion" in capsys.readouterr().err
    assert convert_cli.main(["resnet18", str(source), "--out", str(out), "--force"]) == 0
    _, variables = fusionjax.load_pretrained(out)
    state_dict = torch.load(source, weights_only=True)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], state_dict["fc.bias"].numpy())
    assert sorted(p.name for p in user_folder.iterdir()) == ["converted", "data", "notes.txt", "r18.pth"]


def test_convert_write_failures(user_folder):
    """A full disk under an earlier conversion being replaced, a read-only folder, a file in the way."""
    out = user_folder / "converted"
    assert convert_cli.main(["resnet18", str(user_folder / "r18.pth"), "--out", str(out)]) == 0
    before = snapshot(user_folder)
    convert = [*command("fusionjax-convert"), "resnet18", "r18.pth", "--out"]

    result = run([*convert, out, "--force"], cwd=user_folder, file_size=SMALL_FILES)
    assert_one_error(result, f"fusionjax-convert: error: {out}: File too large")
    assert snapshot(user_folder) == before  # the earlier conversion whole, no temporaries left

    result = run([*convert, user_folder / "data" / "converted"], cwd=user_folder, mounts=read_only(user_folder))
    assert_one_error(result, f"fusionjax-convert: error: {user_folder / 'data' / 'converted'}: Read-only file system")
    assert snapshot(user_folder) == before

    result = run([*convert, "notes.txt/converted"], cwd=user_folder)
    assert_one_error(result, f"fusionjax-convert: error: {user_folder / 'notes.txt'}: is a file, not a directory")
    assert snapshot(user_folder) == before


def test_convert_on_a_full_disk(user_folder):
    disk = user_folder / "disk"
    disk.mkdir()
    result = run([*command("fusionjax-convert"), "resnet18", "r18.pth", "--out", disk / "converted"],
                 cwd=user_folder, mounts=small_disk(disk, "5m"))
    assert_one_error(result, f"fusionjax-convert: error: {disk / 'converted'}: No space left on device")


def test_predict_into_a_full_disk(user_folder):
    """Predictions redirected to a file on a full disk: one error line naming standard output."""
    from PIL import Image

    out = user_folder / "converted"
    assert convert_cli.main(["resnet18", str(user_folder / "r18.pth"), "--out", str(out)]) == 0
    image = user_folder / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8)).save(image)
    with open(user_folder / "predictions.txt", "w") as predictions:
        result = subprocess.run(limit_file_size([*command("fusionjax-predict"), out, image], 16),
                                stdout=predictions, stderr=subprocess.PIPE, text=True, timeout=600)
    assert_one_error(result, "fusionjax-predict: error: standard output: File too large")


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-export


@pytest.fixture
def converted_resnet20(tmp_path) -> Path:
    model = fusionjax.create_model("resnet20")
    variables = jax.tree.map(np.asarray, model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32)))
    return write_converted(tmp_path / "resnet20", "resnet20", variables, {"num_classes": 10})


def test_export_write_failures(converted_resnet20, tmp_path):
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    out = out_dir / "model.onnx"
    export = [*command("fusionjax-export"), converted_resnet20, "--format", "onnx", "--out"]
    assert run([*export, out], cwd=tmp_path).returncode == 0
    before = snapshot(out_dir)

    result = run([*export, out, "--force"], cwd=tmp_path, file_size=SMALL_FILES)
    assert_one_error(result, f"fusionjax-export: error: {out}: File too large")
    assert snapshot(out_dir) == before  # the earlier export and its card whole, no temporaries left

    result = run([*export, out_dir / "other.onnx"], cwd=tmp_path, mounts=read_only(out_dir))
    assert_one_error(result, f"fusionjax-export: error: {out_dir / 'other.onnx'}: Read-only file system")
    assert snapshot(out_dir) == before


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-train and fusionjax-plot

TRAIN = ["--config", "digits", "--config.warmup_epochs=0", "--config.model_overrides.stage_sizes=(1, 1, 1)",
         "--config.progress_bar=False", "--config.log_every_steps=1"]


def test_train_workdir_that_is_a_file_read_only_or_forbidden(tmp_path):
    (tmp_path / "notes.txt").write_text("results so far\n")
    (tmp_path / "runs").mkdir()
    # another user's folder: in a user namespace, root has no rights over files of users it does not map
    (tmp_path / "theirs").mkdir(mode=0o755)
    os.chown(tmp_path / "theirs", NOBODY, NOBODY)
    before = snapshot(tmp_path)
    train = [*command("fusionjax-train"), *TRAIN, "--config.num_epochs=0.2", "--workdir"]
    assert_one_error(run([*train, "notes.txt"], cwd=tmp_path), "error: notes.txt: is a file, not a directory")
    assert_one_error(run([*train, "runs/digits"], cwd=tmp_path, mounts=read_only(tmp_path / "runs")),
                     "error: runs/digits: Read-only file system")
    assert_one_error(run([*train, "theirs/digits"], cwd=tmp_path, mounts=""),
                     "error: theirs/digits: Permission denied")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_train_on_a_full_disk_stops_at_the_failed_save_and_keeps_the_last_checkpoint(tmp_path):
    """Checkpoints every 5 steps of ~0.66 MB on a 1.2 MB disk: step 5's fits, step 10's does not. The run stops
    before the next save, with one error line, and step 5 restores and evaluates (from a read-only workdir)."""
    import orbax.checkpoint as ocp

    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    train = [*command("fusionjax-train"), *TRAIN, "--config.num_epochs=2", "--config.checkpoint_every_steps=5",
             "--workdir", disk / "run"]
    # the tmpfs vanishes with the namespace: copy what the failed run left out of it before
    script = f"{small_disk(disk, '1200k')} && {{ {shlex.join(map(str, train))}; status=$?; " \
             f"cp -a {shlex.quote(str(disk / 'run'))} {shlex.quote(str(kept))}; exit $status; }}"
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert_one_error(result, f"error: {disk / 'run' / 'checkpoints' / '10'}: No space left on device")
    records = [json.loads(line) for line in (kept / "metrics.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in records if record["split"] == "train"]
    assert 10 <= max(steps) < 15, steps  # surfaced before the next save, not at it
    state = ocp.PyTreeCheckpointer().restore(kept / "checkpoints" / "5" / "state")
    assert int(state["step"]) == 5
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
    # evaluating writes nothing: it works from a read-only workdir
    result = run([*command("fusionjax-eval"), "--workdir", kept], cwd=tmp_path, mounts=read_only(kept))
    assert result.returncode == 0 and result.stdout.startswith(f"{kept} step 5: top-1 "), result.stderr[-3000:]


def test_plot_into_a_read_only_workdir(tmp_path):
    from fusionjax.train.metrics import MetricWriter

    workdir = tmp_path / "run"
    writer = MetricWriter(workdir)
    for step in (1, 2):
        writer.write(step, "train", {"loss": 1.0 / step, "top1": 0.5, "learning_rate": 0.1})
    writer.close()
    before = snapshot(workdir)
    result = run([*command("fusionjax-plot"), workdir], cwd=tmp_path, mounts=read_only(workdir))
    assert_one_error(result, f"error: {workdir / 'curves.png'}: Read-only file system")
    assert snapshot(workdir) == before
