"""The GPU check: fusionjax against torchvision on one GPU, in one command.

    python -m benchmarks.gpu                     # on a GPU; records the run in RESULTS.md and runs/
    python -m benchmarks.gpu --no-torch-compile  # without torch.compile (it compiles for a minute or two)
    python -m benchmarks.gpu --smoke             # the same code on CPU at toy sizes (the test suite runs it)
    python -m benchmarks.gpu --sections throughput,parity  # some of the checks (the memory rows compile longest)
    python -m benchmarks.gpu --prepare .gpu-carry  # here: what the folder row needs on a machine without registries

On a lent GPU machine, with ``.gpu-carry`` carried beside the working tree::

    pip install -q --no-index --find-links .gpu-carry/wheels grain ml_collections simplejpeg nanoarrow \
        'pillow>=11.2.1' && \
        python -m benchmarks.gpu --folder .gpu-carry/jpegs

One table, each row one check:
- ResNet-50 training, bfloat16, batch 256 at 224²: images/s of a user's ``jax.jit`` step (``benchmarks.steps``)
  against torchvision with AMP (bfloat16 autocast) in channels_last, eager and with ``torch.compile``, and the
  fraction of the GPU's dense bfloat16 peak the model's FLOPs reach;
- the same step with the XLA:CPU kernels forced on (``fusionjax.kernels.use("xla_cpu")``): what they would cost;
- ResNet-50 evaluation, bfloat16, batch 256: images/s against torch;
- training steps at batch 64, 224², bfloat16: DenseNet-121 with and without ``memory_efficient`` beside ResNet-50,
  step time and the compiled program's peak memory (``compiled.memory_analysis()``), compiled without XLA's
  autotuner, so that no minutes go to timing convolution candidates;
- the converter's parity on the GPU: torchvision's ResNet-50 and DenseNet-121 (random weights and BatchNorm
  statistics) converted with ``fusionjax.convert.from_torchvision`` and run in float32 with TF32 off on both sides;
- ResNet-50 training, bfloat16, batch 256, fed from JPEG files by fusionjax's folder pipeline (inception crops and
  flips on the host's cores, ``input_workers`` left to its default, uint8 to the GPU, normalized in the step) against
  the same step on a synthetic batch already on the GPU, in alternating rounds.

It imports only what a GPU machine of the project has (jax, flax, optax, torch, torchvision, fusionjax's library
and converter); the folder row also needs grain, ml_collections, simplejpeg, nanoarrow and Pillow 11.2.1 or later,
which ``--prepare`` downloads as wheels for the machines' Python, and says so instead of running where they are
missing. ``--smoke`` runs every path on CPU with batch 2, 32² images and one block per stage.
"""

import argparse
import dataclasses
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# JAX and torch share the GPU: JAX takes memory as it needs it instead of three quarters of it at start.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import fusionjax  # noqa: E402
from benchmarks import harness, records, steps, tables, torch_models  # noqa: E402

# Dense bfloat16 tensor-core peaks (FLOP/s) from NVIDIA's data sheets, matched in order against jax's device_kind.
GPU_BF16_PEAK = (("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
                 ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12))
PARITY_TOLERANCE = 1e-5  # float32 on both sides, TF32 off: only the order of sums differs
SECTIONS = ("throughput", "folder", "memory", "parity")
# What the folder row needs beyond a GPU machine's packages: the pipeline's imports (and a Pillow with the Arrow
# interface, Image.fromarrow), and what grain imports that jax, flax, optax, orbax and torch do not already bring.
# ``--prepare`` downloads them for GPU_MACHINE_PYTHON.
FOLDER_MODULES = ("grain", "ml_collections", "simplejpeg", "nanoarrow")
FOLDER_PILLOW = "pillow>=11.2.1"
FOLDER_WHEELS = ("grain", "array-record", "portpicker", "cloudpickle", "psutil", "ml-collections", "simplejpeg",
                 "nanoarrow", "pillow")
FOLDER_INSTALL = " ".join(FOLDER_MODULES) + f" '{FOLDER_PILLOW}'"  # what to pip install from the wheels
GPU_MACHINE_PYTHON = "3.12"
FOLDER_CLASSES, FOLDER_IMAGES_PER_CLASS = 10, 60  # 600 ImageNet-sized JPEGs, read with replacement
FOLDER_LABEL, FOLDER_GOAL = "fusionjax, JPEG folder", "≥ 90% of the synthetic batch's"


@dataclasses.dataclass(frozen=True)
class Sizes:
    batch: int  # ResNet-50 training and evaluation
    memory_batch: int  # the DenseNet-121 / ResNet-50 memory rows
    parity_batch: int
    image: int
    rounds: int
    warmup: int
    resnet50: dict  # create_model overrides (and the torchvision model built to match)
    densenet121: dict


# The memory rows compile without XLA's autotuner, which timed convolutions for over four minutes in the first GPU
# run (runs/2026-11-27_1843_gpu-check_cut-off.md): they compare peak memory, and the step times of programs
# compiled alike.
MEMORY_COMPILE_OPTIONS = {"xla_gpu_autotune_level": 0}
GPU_SIZES = Sizes(256, 64, 8, 224, 20, 3, {}, {})
SMOKE_SIZES = Sizes(2, 2, 2, 32, 2, 1, {"stage_sizes": (1, 1, 1, 1)}, {"block_config": (1, 1, 1, 1)})


def gpu_peak() -> float | None:
    kind = jax.devices()[0].device_kind
    return next((peak for key, peak in GPU_BF16_PEAK if key in kind), None)


def torchvision_model(name: str, overrides: dict):
    """torchvision's ``name``, or its shallower version with the same ``overrides`` fusionjax's model gets."""
    from fusionjax.torch_compat import import_torchvision

    if not overrides:
        return torch_models.reference_model(name)
    models = import_torchvision().models
    if name == "resnet50":
        return models.resnet.ResNet(models.resnet.Bottleneck, list(overrides["stage_sizes"]))
    return models.densenet.DenseNet(32, tuple(overrides["block_config"]), 64)


class Torch:
    """Where torch runs, and the calls it times there (AMP bfloat16, channels_last)."""

    def __init__(self, device: str, compile_backend: str | None):
        import torch

        self.torch, self.device, self.compile_backend = torch, device, compile_backend
        # cuDNN picks its convolution algorithms by timing them, as torchvision's reference training script asks
        # and as XLA's autotuner does for JAX
        torch.backends.cudnn.benchmark = device == "cuda"
        self.sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        self.autocast = lambda: torch.autocast(device, dtype=torch.bfloat16)

    def batch(self, size: int, batch: int, num_classes: int = 1000):
        return torch_models.synthetic_batch(batch, size, num_classes, self.device, self.torch.channels_last)

    def variants(self, name: str, overrides: dict, images, labels) -> list[harness.Timed]:
        """Eager training step and forward; with torch.compile, the training step (its compile takes minutes)."""
        built = [("torch AMP channels_last", lambda module: module, ("train", "forward"))]
        if self.compile_backend:
            built.append(("torch.compile AMP channels_last",
                          lambda module: self.torch.compile(module, backend=self.compile_backend), ("train",)))
        variants = []
        for label, wrap, modes in built:
            for mode in modes:
                module = torchvision_model(name, overrides)
                module = wrap(module.to(self.device, memory_format=self.torch.channels_last))
                run = (torch_models.train_call(module, images, labels, self.autocast, self.sync, steps.LEARNING_RATE,
                                               steps.MOMENTUM) if mode == "train" else
                       torch_models.forward_call(module, images, self.autocast, self.sync))
                start = time.perf_counter()
                try:
                    run()  # the first call: compiles where torch.compile wraps the module
                except Exception as error:  # noqa: BLE001 — a backend that fails is a result to record
                    print(f"{label} {mode}: failed: {type(error).__name__}: {str(error).splitlines()[0]}")
                    run = None
                variants.append(harness.Timed("torch", label, mode, run, time.perf_counter() - start))
        return variants


def resnet50_throughput(sizes: Sizes, torch_side: Torch) -> list[harness.Timed]:
    """ResNet-50 bfloat16: fusionjax's step and forward, the step with the CPU kernels, torch's step and forward."""
    model, images, labels, variables = steps.synthetic_batch("resnet50", sizes.batch, sizes.image, jnp.bfloat16,
                                                             **sizes.resnet50)
    variants = list(steps.forward_and_train("fusionjax", model, images, labels, variables))
    with fusionjax.kernels.use("xla_cpu"):  # read when the step is traced, inside train_call
        variants.append(steps.train_call("fusionjax, XLA:CPU kernels", model, images, labels, variables))
    variants += torch_side.variants("resnet50", sizes.resnet50, *torch_side.batch(sizes.image, sizes.batch))
    harness.time_rounds(variants, sizes.rounds, sizes.warmup)
    return variants


def peak_bytes(program) -> int:
    """The compiled program's peak device memory; where the backend does not say, arguments + outputs + temps."""
    stats = program.memory_analysis()
    return getattr(stats, "peak_memory_in_bytes", 0) or (stats.argument_size_in_bytes + stats.output_size_in_bytes
                                                         + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def memory_steps(sizes: Sizes) -> list[harness.Timed]:
    """bfloat16 training steps at ``memory_batch``: DenseNet-121 plain and ``memory_efficient``, ResNet-50."""
    cases = {"densenet121": ("densenet121", sizes.densenet121),
             "densenet121 memory_efficient": ("densenet121", {**sizes.densenet121, "memory_efficient": True}),
             "resnet50": ("resnet50", sizes.resnet50)}
    variants = []
    for label, (name, overrides) in cases.items():
        model, images, labels, variables = steps.synthetic_batch(name, sizes.memory_batch, sizes.image,
                                                                 jnp.bfloat16, **overrides)
        variants.append(steps.train_call(label, model, images, labels, variables, MEMORY_COMPILE_OPTIONS))
    harness.time_rounds(variants, sizes.rounds, sizes.warmup)
    return variants


def converter_parity(name: str, sizes: Sizes, torch_side: Torch) -> float:
    """The largest |logit difference| ÷ the largest |logit| between torchvision's model and its conversion, float32
    on the device, TF32 off."""
    from fusionjax.convert import from_torchvision

    torch = torch_side.torch
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    overrides = getattr(sizes, name)
    module = torchvision_model(name, overrides).eval()
    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():  # statistics and affine terms away from their initial 0 and 1
        if isinstance(layer, torch.nn.BatchNorm2d):
            for tensor, low, high in ((layer.running_mean, -0.2, 0.2), (layer.running_var, 0.5, 1.5),
                                      (layer.weight.data, 0.5, 1.5), (layer.bias.data, -0.2, 0.2)):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    model = fusionjax.create_model(name, **overrides)
    variables = from_torchvision(name, module.state_dict(), model=model)  # from the host copy
    module = module.to(torch_side.device)
    images, _ = torch_side.batch(sizes.image, sizes.parity_batch)
    with torch.inference_mode():
        expected = module(images.contiguous()).float().cpu().numpy()
    with jax.default_matmul_precision("highest"):  # no TF32 in XLA's float32 convolutions and products either
        logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(
            variables, jnp.asarray(images.cpu().numpy().transpose(0, 2, 3, 1)))
    return float(np.abs(np.asarray(logits) - expected).max() / np.abs(expected).max())


def missing_folder_modules() -> list[str]:
    from PIL import Image

    missing = [name for name in FOLDER_MODULES if importlib.util.find_spec(name) is None]
    return missing + ([FOLDER_PILLOW] if not hasattr(Image, "fromarrow") else [])


def folder_training(sizes: Sizes, folder: Path) -> list[harness.Timed]:
    """ResNet-50 bfloat16 training fed from ``folder``'s JPEGs by fusionjax's pipeline, and the same step on a
    synthetic batch already on the device.

    The folder's step is ``steps.user_train_step`` behind the trainer's normalization of uint8 pixels on the device.
    Each timed call launches the step on the batch the call before put on the device, then reads the next batch and
    puts it there while the device computes, as a training loop overlaps them: a call takes the longer of the two.
    """
    from benchmarks import input_pipeline
    from fusionjax.train import data
    from fusionjax.train.data.pipeline import worker_count

    config = input_pipeline.folder_config(folder, "train", None)  # input_workers: its default for this host
    config.image_size = sizes.image
    description = data.describe(config, log=None)
    batches = data.train_batches(description, seed=0, global_batch_size=sizes.batch, normalized=False)
    model, images, labels, variables = steps.synthetic_batch("resnet50", sizes.batch, sizes.image, jnp.bfloat16,
                                                             **sizes.resnet50)
    synthetic = steps.train_call("fusionjax, synthetic batch on the device", model, images, labels, variables)
    tx, state = steps.sgd_momentum(variables)
    train_step = steps.user_train_step(model, tx)

    def step_on_pixels(state, pixels, pixel_labels):
        return train_step(state, description.transform.normalize_on_device(pixels).astype(images.dtype), pixel_labels)

    def put(batch):
        return jax.device_put(batch["image"]), jax.device_put(batch["label"])

    held = {"state": state, "next": put(next(batches))}  # the first batch starts the worker processes
    step, seconds, flops = steps.compiled(step_on_pixels, held["state"], *held["next"])

    def run():
        held["state"], loss = step(held["state"], *held["next"])
        held["next"] = put(next(batches))  # read and sent while the device computes
        jax.block_until_ready((held["state"], loss))

    label = (f"{FOLDER_LABEL}, input_workers={worker_count(description, description.train.source)} on "
             f"{len(os.sched_getaffinity(0))} cores")
    variants = [synthetic, harness.Timed("jax", label, "train", run, seconds, flops, step)]
    try:
        harness.time_rounds(variants, sizes.rounds, sizes.warmup)
    finally:
        batches.close()  # the worker processes stop before the folder may go
    return variants


def folder_row(folder: Path | None, sizes: Sizes, smoke: bool) -> list[harness.Timed] | str:
    """The folder row's calls, or why it did not run."""
    if missing := missing_folder_modules():
        return (f"not run: {', '.join(missing)} not installed (`python -m benchmarks.gpu --prepare DIR` where the "
                f"registries are reachable, then `pip install --no-index --find-links DIR/wheels "
                f"{FOLDER_INSTALL}`)")
    if folder is not None:
        return folder_training(sizes, folder)
    from benchmarks import input_pipeline

    with tempfile.TemporaryDirectory() as made:
        input_pipeline.write_folder(Path(made), *((2, 5) if smoke else (FOLDER_CLASSES, FOLDER_IMAGES_PER_CLASS)))
        return folder_training(sizes, Path(made))


def prepare(directory: Path, python: str = GPU_MACHINE_PYTHON) -> None:
    """``directory/wheels``: FOLDER_WHEELS for Linux x86-64 and ``python``; ``directory/jpegs``: the folder row's
    JPEGs, made as ``benchmarks.input_pipeline`` makes its folder. Run where the package registries are reachable."""
    from benchmarks import input_pipeline

    wheels = directory / "wheels"
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", python, "--platform", "manylinux_2_28_x86_64", "--platform",
                    "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64", "--dest", str(wheels),
                    *FOLDER_WHEELS], check=True)
    jpegs = directory / "jpegs"
    if not jpegs.is_dir():
        with tempfile.TemporaryDirectory(dir=directory) as made:  # complete or absent: never half a folder
            input_pipeline.write_folder(Path(made) / "jpegs", FOLDER_CLASSES, FOLDER_IMAGES_PER_CLASS)
            os.replace(Path(made) / "jpegs", jpegs)


def table(sizes: Sizes, throughput: list[harness.Timed], memory: list[harness.Timed],
          parity: dict[str, float], folder: list[harness.Timed] | str) -> str:
    def find(variants, label, mode="train"):
        return next((v for v in variants if v.label == label and v.mode == mode), None)

    def images_per_s(variant, batch):
        return batch / variant.median_s if tables.measured(variant) else None

    def cell(value, unit=""):
        return "–" if value is None else f"{value:,.0f}{unit}"

    peak = gpu_peak()
    rows = []
    for mode, title in (("train", "ResNet-50 training"), ("forward", "ResNet-50 evaluation")) if throughput else ():
        ours, eager, compiled = (find(throughput, label, mode) for label in (
            "fusionjax", "torch AMP channels_last", "torch.compile AMP channels_last"))
        rate = images_per_s(ours, sizes.batch)
        of_peak = (f" ({rate * ours.flops / sizes.batch / peak:.0%} of bf16 peak)"
                   if rate and ours.flops and peak else "")
        goal = "≥ 5,500 images/s and ≥ 1.2× torch" if mode == "train" else ""
        rows.append([f"{title}, bf16, batch {sizes.batch}, images/s", cell(rate) + of_peak,
                     cell(images_per_s(eager, sizes.batch)), cell(images_per_s(compiled, sizes.batch)),
                     tables.ratio(eager, ours), tables.ratio(compiled, ours), goal])
        if mode == "train":
            forced = find(throughput, "fusionjax, XLA:CPU kernels")
            rows.append(["ResNet-50 training with the XLA:CPU kernels forced on, images/s",
                         cell(images_per_s(forced, sizes.batch)) + f" (time ÷ plain: {tables.ratio(forced, ours)})",
                         "–", "–", tables.ratio(eager, forced), tables.ratio(compiled, forced), "what they would cost"])
    if isinstance(folder, str):
        rows.append(["ResNet-50 training from JPEG files, bf16", folder, "–", "–", "–", "–", FOLDER_GOAL])
    elif folder:
        synthetic, files = folder
        rate, reference = images_per_s(files, sizes.batch), images_per_s(synthetic, sizes.batch)
        share = f" ({rate / reference:.0%} of the synthetic batch's {reference:,.0f})" if rate and reference else ""
        rows.append([f"ResNet-50 training from JPEG files ({files.label.removeprefix(FOLDER_LABEL + ', ')}), "
                     f"bf16, batch {sizes.batch}, images/s", cell(rate) + share, "–", "–", "–", "–", FOLDER_GOAL])
    dense, lean, resnet = (find(memory, label) for label in ("densenet121", "densenet121 memory_efficient", "resnet50"))
    for variant in (dense, lean, resnet) if memory else ():
        comparison = ""
        if variant is lean:
            comparison = (f"; peak ÷ plain {peak_bytes(lean.program) / peak_bytes(dense.program):.2f}, "
                          f"÷ resnet50 {peak_bytes(lean.program) / peak_bytes(resnet.program):.2f}; "
                          f"time ÷ plain {tables.ratio(lean, dense)}")
        rows.append([f"{variant.label} training step, bf16, batch {sizes.memory_batch}, no autotuning",
                     f"{tables.ms(variant)} ms, peak {peak_bytes(variant.program) / 2**20:,.0f} MiB{comparison}",
                     "–", "–", "–", "–", "memory_efficient ≤ 0.5× plain and ≤ resnet50" if variant is lean else ""])
    for name, error in parity.items():
        verdict = "met" if error <= PARITY_TOLERANCE else "NOT met"
        rows.append([f"converter parity, {name}, float32, TF32 off, batch {sizes.parity_batch}: largest logit "
                     "difference ÷ largest logit", f"{error:.1e}", "–", "–", "–", "–",
                     f"≤ {PARITY_TOLERANCE:.0e}: {verdict}"])
    return tables.markdown(["check", "fusionjax", "torch eager", "torch.compile", "speed-up over eager, min (median)",
                            "over compiled", "goal"], rows)


def parse(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The command line, checked as far as it can be without a GPU."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the same code on CPU at toy sizes; recorded only where --results names a file")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated checks to run, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--no-append", action="store_true", help="print only; record nothing")
    parser.add_argument("--results", help=f"summary file to append to (default {records.RESULTS}); the full "
                        "record goes to runs/ beside it")
    parser.add_argument("--folder", type=Path, help="the folder row's JPEGs (class folders, or train/<class>); "
                        "default: made as benchmarks.input_pipeline makes its folder (needs scikit-learn and "
                        "matplotlib)")
    parser.add_argument("--prepare", type=Path, metavar="DIR", help="only write what the folder row needs on a GPU "
                        f"machine without package registries: DIR/wheels (Python {GPU_MACHINE_PYTHON}) and DIR/jpegs")
    args = parser.parse_args(argv)
    if unknown := sorted(set(args.sections.split(",")) - set(SECTIONS)):
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    if args.prepare is not None and args.prepare.exists() and not args.prepare.is_dir():
        parser.error(f"--prepare {args.prepare} is a file: name a folder to write wheels/ and jpegs/ into")
    return parser, args


def main(argv: list[str] | None = None) -> None:
    parser, args = parse(argv)
    if args.prepare:
        prepare(args.prepare)
        print(f"wrote {args.prepare / 'wheels'} and {args.prepare / 'jpegs'}")
        return
    if args.folder is not None and not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is not a folder")
    chosen = args.sections.split(",")
    backend = jax.default_backend()
    if not args.smoke and backend != "gpu":
        parser.error(f"JAX runs on {backend}, not a GPU: install jax[cuda13] (or jax[cuda12]) on a GPU machine, "
                     "or check the code here with --smoke")
    import torch

    device = "cuda" if backend == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("JAX sees a GPU but this torch build has no CUDA: install a CUDA build of torch")
    sizes = SMOKE_SIZES if args.smoke else GPU_SIZES
    # torch.compile's "eager" backend traces the model as inductor would, without generating kernels: fast on CPU
    torch_side = Torch(device, None if args.no_torch_compile else ("eager" if args.smoke else "inductor"))
    started, seconds = records.now(), {}

    def section(name, title, batch, measure):
        """Runs one check if chosen, and prints its calls at once: a run cut short keeps what it measured."""
        if name not in chosen:
            return [] if name != "parity" else {}
        print(f"{title}…", flush=True)
        start = time.perf_counter()
        result = measure()
        seconds[title] = time.perf_counter() - start
        if isinstance(result, str):
            print(result, flush=True)
        elif name != "parity":
            print(tables.markdown(tables.PER_CALL_HEADINGS, tables.per_call_rows(title, batch, result)), flush=True)
        return result

    throughput = section("throughput", "ResNet-50 throughput", sizes.batch,
                         lambda: resnet50_throughput(sizes, torch_side))
    if device == "cuda":
        torch.cuda.empty_cache()  # torch's cached blocks back to the GPU, for JAX's larger programs next
    folder = section("folder", "ResNet-50 from JPEG files", sizes.batch,
                     lambda: folder_row(args.folder, sizes, args.smoke))
    memory = section("memory", "memory rows", sizes.memory_batch, lambda: memory_steps(sizes))
    parity = section("parity", "converter parity", None, lambda: {name: converter_parity(name, sizes, torch_side)
                                                                  for name in ("resnet50", "densenet121")})
    summary = table(sizes, throughput, memory, parity, folder)
    folder_calls = [] if isinstance(folder, str) else folder
    device_name = jax.devices()[0].device_kind
    record = "\n".join([
        *records.header("the GPU check" + (" (smoke run on CPU)" if args.smoke else ""), "benchmarks.gpu", argv,
                        started),
        f"- device: {device_name}; torch sees {torch.cuda.get_device_name() if device == 'cuda' else 'the CPU'}, "
        f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}",
        f"- sizes: {sizes}",
        f"- {sizes.rounds} rounds after {sizes.warmup} warm-up calls; images/s from the median call",
        "- seconds, compiling included: " + ", ".join(f"{title} {s:.0f}" for title, s in seconds.items()),
        "", summary, "",
        tables.markdown(tables.PER_CALL_HEADINGS, tables.per_call_rows("resnet50", sizes.batch, throughput)
                        + tables.per_call_rows("memory rows", sizes.memory_batch, memory)
                        + tables.per_call_rows("resnet50-from-files", sizes.batch, folder_calls)),
        "", "Every call (ms):", "", *tables.raw_times("resnet50", throughput), *tables.raw_times("memory", memory),
        *tables.raw_times("resnet50-from-files", folder_calls), "",
    ])
    print(record)
    if not args.no_append and (args.results or not args.smoke):
        path = records.publish(args.results or records.RESULTS, started, "gpu-check_" + device_name.replace(" ", "-"),
                               f"gpu, {device_name}", record, summary)
        print(f"recorded in {path} and {args.results or records.RESULTS}")


if __name__ == "__main__":
    main()
