"""benchmarks/: the commands run end to end on tiny inputs and write what they say, where they say, atomically; their
tables hold the ratios of the times they recorded; the model FLOPs behind throughput figures are the model's (a
closed-form count of its multiply-adds); the GPU check's smoke run reaches every path the GPU run takes, with only
the imports a GPU machine has, and its converter parity holds against torchvision; the DenseNet memory goal holds
on the residuals a training step keeps (a byte count). Timings themselves are never asserted.
"""

import os
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import compare, harness, init_compile, memory, records, steps, tables, user_step

ROOT = Path(__file__).resolve().parent.parent


def valid_taps(size: int, kernel: int, stride: int, pad: int) -> int:
    """Kernel taps that land inside the image, summed over one spatial dimension's output positions."""
    outputs = (size + 2 * pad - kernel) // stride + 1
    return sum(0 <= o * stride - pad + t < size for o in range(outputs) for t in range(kernel))


def cifar_resnet_multiply_adds(depth: int, size: int = 32, num_classes: int = 10) -> int:
    """Per image: He et al.'s CIFAR ResNet, 3×3 convolutions (padding 1) and the classifier; zero-pad shortcuts
    have none. Taps over the zero padding are not work, so they are not counted."""
    total, channels = valid_taps(size, 3, 1, 1) ** 2 * 3 * 16, 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range((depth - 2) // 6):
            stride = 2 if stage > 0 and block == 0 else 1
            total += valid_taps(size, 3, stride, 1) ** 2 * channels * width
            size = (size - 1) // stride + 1
            total += valid_taps(size, 3, 1, 1) ** 2 * width * width
            channels = width
    return total + channels * num_classes


def table_rows(text: str, headings_start: str) -> tuple[list[str], list[list[str]]]:
    """The headings and the rows of the first markdown table whose heading line starts with ``headings_start``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(headings_start))
    cells = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert set(cells[1]) == {"---"}, cells[1]
    return cells[0], cells[2:]


def linked_record(results: Path) -> str:
    """The run record that a summary file links to (``([record](runs/NAME.md))``), read from beside it."""
    return (results.parent / re.search(r"\(\[record\]\((runs/[^)]+\.md)\)\)", results.read_text())[1]).read_text()


def recorded_calls(record: str) -> dict[tuple[str, str], list[float]]:
    """``(variant label, mode) -> wall ms of every call`` from a record's "Every call" lines."""
    calls = {}
    for label, mode, times in re.findall(r"^- \S+ (.+) (forward|train): wall ([\d., ]+);", record, re.M):
        calls[label, mode] = [float(t) for t in times.split(", ")]
    return calls


def assert_ratio_cell(cell: str, numerator: list[float], denominator: list[float]) -> None:
    """``cell`` is "min ÷ min (median ÷ median)" of the two lists of ms, printed to 2 decimals.

    The record keeps 0.001 ms, so the recomputed ratio may differ from the printed one by half its last digit plus
    that rounding (≤ 1e-3 of it for calls of ≥ 1 ms); more than that is a wrong ratio."""
    printed = re.fullmatch(r"(\d+\.\d\d) \((\d+\.\d\d)\)", cell)
    assert printed, cell
    expected = (min(numerator) / min(denominator), statistics.median(numerator) / statistics.median(denominator))
    for shown, value in zip(map(float, printed.groups()), expected):
        assert abs(shown - value) <= 0.005 + 1e-3 * value, (cell, expected)


def test_ratio_cells_are_min_over_min_and_median_over_median():
    numerator = harness.Timed("jax", "a", "train", None, times=[0.30, 0.10, 0.20], cpu_times=[0.5, 0.4, 0.6])
    denominator = harness.Timed("torch", "b", "train", None, times=[0.04, 0.08, 0.05], cpu_times=[0.2, 0.1, 0.3])
    assert tables.ratio(numerator, denominator) == "2.50 (4.00)"
    assert tables.cpu_ratio(numerator, denominator) == "4.00"
    assert tables.ms(numerator) == "100.0 (200.0)"
    assert tables.ratio(numerator, None) == "–" and tables.ms(harness.Timed("torch", "c", "train", None)) == "failed"


def test_rounds_alternate_the_frameworks_and_reverse_every_other_round():
    calls = []
    variants = [harness.Timed(framework, label, "train", lambda label=label: calls.append(label))
                for framework, label in (("jax", "j1"), ("jax", "j2"), ("torch", "t1"), ("torch", "t2"))]
    harness.time_rounds(variants, rounds=2, warmup=1)
    assert calls == ["j1", "t1", "j2", "t2"] * 2 + ["t2", "j2", "t1", "j1"]
    assert all(len(v.times) == len(v.cpu_times) == len(v.page_faults) == 2 for v in variants)


@pytest.mark.slow
def test_model_flops_are_the_models_closed_form_count():
    batch = 2
    model, images, _, variables = steps.synthetic_batch("resnet20", batch, 32)
    _, _, flops = steps.compiled(lambda v, x: model.apply(v, x, train=False), variables, images)
    expected = 2 * batch * cifar_resnet_multiply_adds(20)
    # BatchNorm, ReLU, the residual additions and the pooling add a few element-wise operations per product term.
    assert expected <= flops <= 1.03 * expected, (flops, expected)


def test_results_are_replaced_in_one_rename_and_records_never_overwritten(tmp_path, monkeypatch):
    results = tmp_path / "RESULTS.md"
    results.write_text("# kept\n")
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        records.append_atomically(results, "lost\n")
    assert results.read_text() == "# kept\n" and sorted(p.name for p in tmp_path.iterdir()) == ["RESULTS.md"]
    monkeypatch.undo()
    first, second = (records.save_record(tmp_path / "runs", "2026-01-01_0000_x", text) for text in ("one", "two"))
    assert (first.name, first.read_text()) == ("2026-01-01_0000_x.md", "one")
    assert (second.name, second.read_text()) == ("2026-01-01_0000_x-2.md", "two")
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {first.name, second.name}  # no temporary left


@pytest.fixture(scope="module")
def compare_run(tmp_path_factory):
    """One small ``benchmarks.compare`` run into a scratch RESULTS.md: (its printed report, the results file)."""
    results = tmp_path_factory.mktemp("compare") / "RESULTS.md"
    results.write_text("# earlier summary\n")
    compare.main(["--models", "resnet20", "--batch", "8", "--rounds", "3", "--no-torch-compile",
                  "--results", str(results)])
    return results


def test_compare_records_the_run_and_appends_its_table(compare_run):
    summary = compare_run.read_text()
    assert summary.startswith("# earlier summary\n") and summary.count(records.RUNS_HEADING) == 1
    record = linked_record(compare_run)
    assert "- command: `python -m benchmarks.compare --models resnet20 --batch 8" in record
    assert re.search(r"^- load average \(1, 5, 15 min\): before [\d., ]+; after [\d., ]+$", record, re.M)
    assert re.search(r"^- host malloc: \S+", record, re.M)
    assert "- YNNPACK fusions in the compiled fusionjax step: resnet20 " in record
    headings, rows = table_rows(summary.split(records.RUNS_HEADING)[1], "| model | mode |")
    assert headings == compare.SUMMARY_HEADINGS and [row[:3] for row in rows] == [
        ["resnet20", "forward", "8"], ["resnet20", "train", "8"]]


def test_compare_ratios_are_those_of_the_recorded_times(compare_run):
    record = linked_record(compare_run)
    calls = recorded_calls(record)
    _, rows = table_rows(record, "| model | mode |")
    column = {heading: i for i, heading in enumerate(compare.SUMMARY_HEADINGS)}
    for row in rows:
        mode = row[1]
        ours = calls["fusionjax", mode]
        assert len(ours) == 3 and len(calls["torch channels_last", mode]) == 3
        assert_ratio_cell(row[column["÷ channels_last, min (median)"]], ours, calls["torch channels_last", mode])
        assert_ratio_cell(row[column["÷ NCHW"]], ours, calls["torch NCHW", mode])
        # the test process runs 8 CPU devices (conftest): batch 8 splits over them
        assert_ratio_cell(row[column["batch over devices ÷ channels_last"]], calls[compare.SHARDED, mode],
                          calls["torch channels_last", mode])
        deployed = row[column["deployed ÷ channels_last"]]
        if mode == "forward":
            assert_ratio_cell(deployed, calls["fusionjax deployed", mode], calls["torch channels_last", mode])
        else:
            assert deployed == "–"
        assert row[column["÷ torch.compile"]] == "–"  # --no-torch-compile


def test_user_step_times_a_plain_jit_step_against_torch(capsys):
    before = records.RESULTS.read_bytes()
    user_step.main(["--quick"])
    printed = capsys.readouterr().out
    assert records.RESULTS.read_bytes() == before  # --quick records nothing
    headings, rows = table_rows(printed, "| model | batch | call |")
    assert headings == user_step.SUMMARY_HEADINGS
    assert [row[:3] for row in rows] == [["resnet20", str(user_step.QUICK_BATCH), "training step"],
                                         ["resnet20", str(user_step.QUICK_BATCH), "forward"]]
    calls = recorded_calls(printed)
    for row, mode in zip(rows, ("train", "forward")):
        assert_ratio_cell(row[5], calls["fusionjax", mode], calls["torch channels_last", mode])
    cores = sorted(os.sched_getaffinity(0))
    assert f"- threads: pinned to cores {','.join(map(str, cores))}; torch {len(cores)} threads" in printed
    assert re.search(r"^- YNNPACK fusions in the compiled fusionjax step: resnet20 \d+$", printed, re.M)
    assert "recorded in" not in printed


def test_init_compile_times_both_initializers_on_the_same_values(capsys):
    before = records.RESULTS.read_bytes()
    init_compile.main(["--models", "resnet20", "--rounds", "1", "--no-append"])
    printed = capsys.readouterr().out
    assert records.RESULTS.read_bytes() == before  # --no-append records nothing
    _, rows = table_rows(printed, "| model |")
    assert [row[0] for row in rows] == ["resnet20"] and rows[0][-1] == "yes", rows
    times = {label: [float(t) for t in walls.split(", ")]
             for label, walls in re.findall(r"^- resnet20 (\w+) init: wall ([\d., ]+);", printed, re.M)}
    assert sorted(times) == ["fusionjax", "jax"] and all(len(t) == 1 for t in times.values()), times
    assert_ratio_cell(rows[0][3], times["fusionjax"], times["jax"])


def test_input_pipeline_times_every_pipeline_on_the_folder_it_makes():
    import json

    from fusionjax.torch_compat import import_torchvision

    import_torchvision()  # the command times torchvision's DataLoader beside fusionjax's pipeline

    # A subprocess: the command pins itself to cores and starts worker processes.
    done = subprocess.run([sys.executable, "-m", "benchmarks.input_pipeline", "--classes", "2", "--images-per-class",
                           "5", "--batch-size", "4", "--warmup", "1", "--batches", "2", "--rounds", "1", "--workers",
                           "1", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["images"] == 10 and result["cores"] == os.cpu_count()
    rates = result["images_per_s_per_core"]
    assert {"fusionjax", "torchvision"} <= set(rates)
    assert all(rates[name][transform]["1"] > 0 for name in rates for transform in ("train", "eval"))
    assert result["full_decode_per_core"]["Pillow"]["median"] > 0
    assert result["full_decode_per_core"]["simplejpeg"]["median"] > 0
    assert ("tf.data" in rates) != any(note.startswith("tf.data: not run") for note in result["notes"])


def test_input_breakdown_times_each_step_on_a_folder(tmp_path):
    from benchmarks import input_pipeline
    from fusionjax.torch_compat import import_torchvision

    import_torchvision()  # the breakdown times torchvision's ToTensor and Normalize beside fusionjax's steps
    input_pipeline.write_folder(tmp_path, classes=2, per_class=5)
    done = subprocess.run([sys.executable, "-m", "benchmarks.input_breakdown", "--folder", str(tmp_path), "--images",
                           "6"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("6 JPEGs, one core")
    rows = dict(line.strip("| ").split(" | ")[:2] for line in done.stdout.splitlines()[3:])
    assert len(rows) == 11 and all(float(ms) > 0 for ms in rows.values())
    assert "full decode (PIL, RGB: torchvision's loader)" in rows and "torchvision Normalize" in rows
    assert "fusionjax evaluation transform, whole (uint8 batches)" in rows


def test_input_breakdown_names_a_folder_without_jpegs_and_a_bad_count(tmp_path, capsys):
    from benchmarks import input_breakdown

    for argv, message in ((["--folder", str(tmp_path)], f"--folder {tmp_path} holds no .jpg or .jpeg files"),
                          (["--folder", str(tmp_path / "missing")], "is not a folder"),
                          (["--images", "0"], "--images must be at least 1")):
        with pytest.raises(SystemExit, match="2"):
            input_breakdown.main(argv)
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [compare, user_step])
def test_benchmark_commands_reject_bad_arguments(command, capsys):
    for argv, message in ((["--models", "resnet21"], "unknown model(s) ['resnet21']"),
                          (["--batch", "0"], "--batch must be at least 1"),
                          (["--rounds", "0"], "--rounds must be at least 1")):
        with pytest.raises(SystemExit, match="2"):
            command.main(argv)
        assert message in capsys.readouterr().err


# What the GPU machines lent to the project lack: the check must run without importing any of them.
NOT_ON_GPU_MACHINES = ("ml_collections", "tensorflow_datasets", "tensorflow", "grain", "simplejpeg", "nanoarrow",
                       "sklearn", "safetensors", "timm", "keras", "onnx", "onnxruntime", "matplotlib", "fusionjax.train")
BLOCKED_RUN = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # as if not installed: import raises ImportError, importlib.util.find_spec gives None
sys.argv = ["benchmarks.gpu", *sys.argv[2:]]
runpy.run_module("benchmarks.gpu", run_name="__main__", alter_sys=True)
"""


def test_gpu_check_smoke_run_takes_every_path_with_only_the_gpu_machines_imports(tmp_path):
    import torch  # noqa: F401  (benchmarks.gpu, run in a subprocess, compares against torch)

    results = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "-c", BLOCKED_RUN, ",".join(NOT_ON_GPU_MACHINES), "--smoke", "--results",
                           str(results)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = linked_record(results)
    headings, rows = table_rows(record, "| check |")
    assert headings == ["check", "fusionjax", "torch eager", "torch.compile", "speed-up over eager, min (median)",
                        "over compiled", "goal"]
    checks = [row[0] for row in rows]
    assert checks == [
        "ResNet-50 training, bf16, batch 2, images/s",
        "ResNet-50 training with the XLA:CPU kernels forced on, images/s",
        "ResNet-50 evaluation, bf16, batch 2, images/s",
        "ResNet-50 training from JPEG files, bf16",
        "densenet121 training step, bf16, batch 2, no autotuning",
        "densenet121 memory_efficient training step, bf16, batch 2, no autotuning",
        "resnet50 training step, bf16, batch 2, no autotuning",
        "converter parity, resnet50, float32, TF32 off, batch 2: largest logit difference ÷ largest logit",
        "converter parity, densenet121, float32, TF32 off, batch 2: largest logit difference ÷ largest logit",
    ]
    calls = recorded_calls(record)
    train, forced, evaluation = rows[:3]
    assert_ratio_cell(train[4], calls["torch AMP channels_last", "train"], calls["fusionjax", "train"])
    assert_ratio_cell(re.search(r"time ÷ plain: (.+)\)$", forced[1])[1], calls["fusionjax, XLA:CPU kernels", "train"],
                      calls["fusionjax", "train"])
    assert_ratio_cell(train[5], calls["torch.compile AMP channels_last", "train"], calls["fusionjax", "train"])
    assert_ratio_cell(evaluation[4], calls["torch AMP channels_last", "forward"], calls["fusionjax", "forward"])
    assert evaluation[3] == "–"  # torch.compile times the training step only
    # Without the folder pipeline's packages the row says what is missing and how to bring it, and the rest runs.
    assert rows[3][1] == ("not run: grain, ml_collections, simplejpeg, nanoarrow not installed (`python -m "
                          "benchmarks.gpu --prepare DIR` where the registries are reachable, then `pip install "
                          "--no-index --find-links DIR/wheels grain ml_collections simplejpeg nanoarrow "
                          "'pillow>=11.2.1'`)")
    for row in rows[4:7]:
        assert re.fullmatch(r"\d+\.\d \(\d+\.\d\) ms, peak [\d,]+ MiB.*", row[1]), row
    # The parity rows are a real cross-check: torchvision's own outputs against the converted model's, float32.
    for row in rows[7:]:
        assert float(row[1]) <= 1e-5 and row[6] == "≤ 1e-05: met", row


def test_gpu_check_folder_row_trains_from_jpegs_beside_the_synthetic_batch(tmp_path):
    """The folder row on CPU at toy sizes, with the folder pipeline's packages installed: each call is a
    training step on a batch the folder pipeline read, and the share is the two rows' median calls."""
    import torch  # noqa: F401  (benchmarks.gpu, run in a subprocess, imports torch whatever the sections)

    results = tmp_path / "RESULTS.md"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--smoke", "--sections", "folder", "--results",
                           str(results)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = linked_record(results)
    _, rows = table_rows(record, "| check |")
    ((check, cell, *_, goal),) = rows
    workers = re.fullmatch(r"ResNet-50 training from JPEG files \(input_workers=(\d+) on \d+ cores\), bf16, "
                           r"batch 2, images/s", check)
    assert workers and goal == "≥ 90% of the synthetic batch's", rows
    calls = recorded_calls(record)
    synthetic = statistics.median(calls["fusionjax, synthetic batch on the device", "train"])
    files = statistics.median(calls[f"fusionjax, JPEG folder, input_workers={workers[1]} on "
                                    f"{len(os.sched_getaffinity(0))} cores", "train"])
    rate, share, reference = re.fullmatch(r"([\d,]+) \((\d+)% of the synthetic batch's ([\d,]+)\)", cell).groups()
    # The record keeps 0.001 ms: recomputed values may round the other way, by one in their last digit.
    assert abs(int(rate.replace(",", "")) - 2e3 / files) <= 1
    assert abs(int(reference.replace(",", "")) - 2e3 / synthetic) <= 1
    assert abs(int(share) - 100 * synthetic / files) <= 1


def test_documented_gpu_check_commands_parse():
    """Every ``python -m benchmarks.gpu`` line of RESULTS.md and of the command's own docstring, by its parser."""
    from benchmarks import gpu

    commands = [line for text in ((ROOT / "benchmarks" / "RESULTS.md").read_text(), gpu.__doc__)
                for line in text.splitlines() if line.strip().startswith("python -m benchmarks.gpu")]
    assert len(commands) >= 10, commands
    for command in commands:
        argv = shlex.split(command.split("#", 1)[0])[3:]
        _, args = gpu.parse(argv)
        assert args.sections, command


def test_gpu_check_names_a_bad_folder_or_prepare_target(tmp_path, capsys):
    from benchmarks import gpu

    (tmp_path / "file").write_text("not a folder")
    for argv, message in ((["--prepare", str(tmp_path / "file")], f"--prepare {tmp_path / 'file'} is a file"),
                          (["--folder", str(tmp_path / "missing")], f"--folder {tmp_path / 'missing'} is not a folder"),
                          (["--sections", "folder,bogus"], "unknown section(s) bogus")):
        with pytest.raises(SystemExit, match="2"):
            gpu.main(argv)
        assert message in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "not a folder"  # nothing written over


def test_gpu_check_prepares_the_folder_rows_wheels_and_jpegs(tmp_path):
    """``--prepare``: the wheels a GPU machine lacks, for its Python, from the package registry (reachable in CI),
    and the JPEG folder, written whole or not at all."""
    from benchmarks import gpu

    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--prepare", str(tmp_path / "carry")], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = [path.name.lower() for path in (tmp_path / "carry" / "wheels").iterdir()]
    for name in gpu.FOLDER_WHEELS:
        assert any(wheel.startswith(name.replace("-", "_") + "-") for wheel in wheels), (name, wheels)
    assert all(wheel.endswith(".whl") and ("cp312" in wheel or "py3-none" in wheel or "abi3" in wheel)
               for wheel in wheels), wheels
    jpegs = tmp_path / "carry" / "jpegs"
    for split, count in (("train", gpu.FOLDER_IMAGES_PER_CLASS), ("val", gpu.FOLDER_IMAGES_PER_CLASS // 5)):
        classes = sorted((jpegs / split).iterdir())
        assert len(classes) == gpu.FOLDER_CLASSES and all(len(list(c.glob("*.jpg"))) == count for c in classes)
    assert sorted(path.name for path in (tmp_path / "carry").iterdir()) == ["jpegs", "wheels"]  # no temporary left


@pytest.mark.slow
def test_memory_efficient_densenet121_keeps_at_most_half_and_less_than_resnet50():
    per_image = memory.traced_residuals(32)  # bytes per image with the plain ops (a GPU's program), exact integers
    plain, lean, resnet = (per_image[label] for label in memory.CASES)
    assert 0 < lean and 2 * lean <= plain and lean <= resnet, per_image  # exact: no tolerance on a byte count


def test_memory_time_rounds_needs_the_compiled_steps(capsys):
    with pytest.raises(SystemExit, match="2"):
        memory.main(["--no-compile", "--time-rounds", "2"])
    assert "drop --no-compile" in capsys.readouterr().err
