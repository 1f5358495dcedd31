"""benchmarks/: the scripts run end to end on tiny inputs (they are timed on real sizes by hand, never here), the
model FLOPs behind their throughput figures are the model's (against a closed-form count of its multiply-adds), and
the DenseNet memory goal of issue #5 holds on the residuals a training step keeps (a byte count, not a time).
"""

import re

import pytest

from benchmarks import compare, memory


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


def test_model_flops_are_the_models_closed_form_count():
    batch = 2
    model, x, _, variables = compare.synthetic_inputs("resnet20", batch, 32)
    _, _, flops = compare._compiled(lambda v, x: model.apply(v, x, train=False), variables, x)
    expected = 2 * batch * cifar_resnet_multiply_adds(20)
    # BatchNorm, ReLU, the residual additions and the pooling add a few element-wise operations per product term.
    assert expected <= flops <= 1.03 * expected, (flops, expected)


def test_compare_runs_every_variant_and_appends_nothing_when_quick(capsys):
    before = compare.RESULTS.read_bytes()
    compare.main(["--models", "resnet20", "--batch", "8", "--quick"])  # 8 devices here: one image each
    printed = capsys.readouterr().out
    assert compare.RESULTS.read_bytes() == before

    def cells(prefix: str, after: str = "") -> list[str]:
        row = next(line for line in printed[printed.index(after):].splitlines() if line.startswith(prefix))
        return [cell.strip() for cell in row.strip("|").split("|")]

    forward, train = cells("| resnet20 | forward | 8 |"), cells("| resnet20 | train | 8 |")
    time_cell = re.compile(r"^\d+\.\d / \d+\.\d$")
    # fusionjax, folded, folded + micro-batched, batch over devices, torch NCHW, channels_last, micro-batched;
    # no torch.compile (--quick)
    assert all(time_cell.match(cell) for cell in forward[3:10]) and forward[10] == "–", forward
    trained = [bool(time_cell.match(cell)) for cell in train[3:11]]
    assert trained == [True, False, False, True, True, True, False, False], train
    for variant in ("fusionjax", "torch channels_last"):
        for mode in ("forward", "train"):
            row = cells(f"| resnet20 | {variant} | {mode} |", after="| images/s")
            images_per_s, gflops_per_s, page_faults = row[3:6]
            assert float(images_per_s) > 0 and float(gflops_per_s) > 0 and int(page_faults) >= 0


def test_compare_rejects_bad_arguments(capsys):
    for argv, message in ((["--models", "resnet21"], "unknown model(s) ['resnet21']"),
                          (["--batch", "0"], "--batch must be at least 1")):
        with pytest.raises(SystemExit, match="2"):
            compare.main(argv)
        assert message in capsys.readouterr().err


def test_memory_efficient_densenet121_keeps_at_most_half_and_less_than_resnet50(capsys):
    memory.main(["--no-compile", "--size", "32", "--no-append"])
    printed = capsys.readouterr().out
    lean_over_plain = float(re.search(r"memory_efficient ÷ plain \(traced\): (\d\.\d\d)", printed)[1])
    lean_over_resnet = float(re.search(r"÷ resnet50 \(traced, goal ≤ 1\): memory_efficient (\d\.\d\d)", printed)[1])
    assert lean_over_plain <= 0.5 and lean_over_resnet <= 1.0, printed


def test_memory_time_rounds_needs_the_compiled_steps(capsys):
    with pytest.raises(SystemExit, match="2"):
        memory.main(["--no-compile", "--time-rounds", "2"])
    assert "drop --no-compile" in capsys.readouterr().err
