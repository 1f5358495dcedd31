"""Command lines: ``fusionjax-train`` (= ``python -m train``), ``fusionjax-eval``, ``fusionjax-plot``.

Configs are ml_collections config files overridable flag by flag, the Flax examples' convention::

    fusionjax-train --config configs/digits.py --workdir /tmp/digits --config.num_epochs=10

On CPU, training and evaluation use XLA's Eigen convolutions instead of YNNPACK (``prefer_eigen_cpu_convolutions``);
an ``XLA_FLAGS`` that sets ``--xla_cpu_experimental_ynn_fusion_type`` itself is left alone. ``--cpu_devices N`` runs
a CPU host as N XLA devices that each batch is sharded over; ``--reuse_freed_host_memory`` keeps freed host memory
in the process (``fusionjax.deploy.reuse_freed_host_memory``).
"""

import importlib.util
import os
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if p.stem not in ("__init__", "common"))


def _make_configs_importable() -> None:
    """Config files import ``configs.common``; make that work from any directory in a source checkout."""
    root = str(CONFIGS_DIR.parent)
    if root not in sys.path:
        sys.path.insert(0, root)


def load_config(name_or_path: str):
    """A shipped config by name (``'digits'``) or any config file by path, as ``--config`` loads it."""
    _make_configs_importable()
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / f"{name_or_path}.py"
    if not path.exists():
        raise FileNotFoundError(f"No config {name_or_path!r}; shipped configs: {', '.join(shipped_configs())}.")
    spec = importlib.util.spec_from_file_location(f"{path.stem}_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _set_up_host() -> None:
    """``--reuse_freed_host_memory`` and ``--cpu_devices``: process-wide, before JAX's CPU backend starts."""
    import jax

    from fusionjax.deploy import host_malloc, reuse_freed_host_memory

    if flags.FLAGS.reuse_freed_host_memory and not reuse_freed_host_memory():
        print(f"--reuse_freed_host_memory changes nothing: this process's malloc is {host_malloc()}, not glibc's.",
              file=sys.stderr)
    if flags.FLAGS.cpu_devices > 1:
        jax.config.update("jax_num_cpu_devices", flags.FLAGS.cpu_devices)


def _initialize_distributed() -> None:
    """Join a multi-host run when launched as one.

    ``--coordinator_address`` with ``--num_processes`` and ``--process_id`` names the run explicitly (any machines,
    or several processes on one). ``--distributed``, or ``JAX_COORDINATOR_ADDRESS`` in the environment, leaves them
    to ``jax.distributed.initialize()``, which takes them from the cluster it detects (SLURM, Open MPI, Kubernetes,
    TPU pods). CPU processes exchange data with gloo, jax's default CPU collectives.
    """
    import jax

    args = flags.FLAGS
    explicit = (args.coordinator_address, args.num_processes, args.process_id)
    if any(value is not None for value in explicit):
        if any(value is None for value in explicit):
            raise app.UsageError("--coordinator_address, --num_processes and --process_id go together: pass all "
                                 "three, or --distributed alone to detect them from the cluster.")
        jax.distributed.initialize(*explicit)
    elif args.distributed or "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize()


def _define_distributed_flags() -> list[str]:
    flags.DEFINE_integer(
        "cpu_devices", 1, "On CPU: run the host as this many XLA devices and shard each batch over them, as over "
        "GPUs (one per core is the useful most; batch sizes must divide). With 2 on the 2-core benchmark machine: "
        "ResNet-20 evaluation 13% and training 5% faster, ResNet-50 training 4% slower (benchmarks/RESULTS.md, "
        "attempt 25). Ignored when JAX runs on a GPU or TPU.",
        lower_bound=1)
    flags.DEFINE_bool(
        "reuse_freed_host_memory", False, "For long CPU runs: keep the host memory freed between steps in the "
        "process for the next step (glibc malloc: one arena, no mmap, no trimming) instead of returning it to the "
        "kernel, which then page-faults it in again. On the 2-core benchmark machine training steps are 9% "
        "(ResNet-20 CIFAR) and 12% (ResNet-50) faster, compiling 15-20% slower, and the process holds its peak heap "
        "until it exits (fusionjax.deploy.reuse_freed_host_memory; benchmarks/RESULTS.md, attempt 28). Where you "
        "can install it, tcmalloc does better with neither cost: LD_PRELOAD=/usr/lib/x86_64-linux-gnu/"
        "libtcmalloc_minimal.so.4 (package libtcmalloc-minimal4; attempt 29). Changes nothing when malloc is not "
        "glibc's.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with the process count and index "
                      "of the detected cluster (SLURM, Open MPI, Kubernetes, TPU pods).")
    flags.DEFINE_string("coordinator_address", None, "Multi-process launch without a cluster manager: host:port of "
                        "process 0, with --num_processes and --process_id.")
    flags.DEFINE_integer("num_processes", None, "Multi-process launch: the number of processes (hosts).")
    flags.DEFINE_integer("process_id", None, "Multi-process launch: this process's index, 0 to num_processes - 1.")
    return ["cpu_devices", "reuse_freed_host_memory", "distributed", "coordinator_address", "num_processes",
            "process_id"]


def _define_train_flags() -> None:
    _make_configs_importable()
    config_flags.DEFINE_config_file(
        "config", None,
        "Training config file (shipped ones listed above); override any field with --config.KEY=VALUE.",
        lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, TensorBoard events and plots.")
    distributed = _define_distributed_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    _describe_for_help(
        "Train a fusionjax model: fusionjax-train --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]\n"
        f"Shipped configs in {CONFIGS_DIR}:\n  " + "\n  ".join(shipped_configs()),
        ["config", "workdir", *distributed])


def _describe_for_help(usage: str, flag_names: list[str]) -> None:
    """absl's --help prints the main module's docstring and key flags; entry points have neither."""
    sys.modules["__main__"].__doc__ = usage
    for name in flag_names:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def _train(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _quiet_libraries()
    _set_up_host()
    _initialize_distributed()
    from train import train

    try:
        train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    except (train.TrainingDivergedError, train.WorkdirConflictError) as error:
        sys.exit(f"error: {error}")


def _quiet_libraries() -> None:
    """Show warnings and errors, not Orbax's per-save INFO lines; ``--verbosity=0`` brings them back."""
    from absl import logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


# Process-wide, so set by the command lines (applications) and not by the library: jaxlib 0.10.2 sends every CPU
# convolution, weight gradients included, to YNNPACK, whose weight gradient is several times slower than XLA's
# Eigen kernel here; switching it off halves a ResNet-20 CIFAR training step (benchmarks/RESULTS.md, lever 4).
EIGEN_CPU_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type="


def prefer_eigen_cpu_convolutions(environ=os.environ) -> None:
    """Add ``EIGEN_CPU_CONVOLUTIONS`` to ``XLA_FLAGS`` before jax starts, unless XLA_FLAGS already chooses."""
    flags_now = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" not in flags_now:
        environ["XLA_FLAGS"] = f"{flags_now} {EIGEN_CPU_CONVOLUTIONS}".strip()


def train_main() -> None:
    prefer_eigen_cpu_convolutions()
    _define_train_flags()
    app.run(_train)


CONVERTED_EVAL_BATCH = 200  # fusionjax-eval's default batch for a converted checkpoint, which has no config


def _eval(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _quiet_libraries()
    _set_up_host()
    _initialize_distributed()
    from train import train

    args = flags.FLAGS
    directory = Path(args.workdir)
    try:
        if (directory / train.CONFIG_FILE).exists():
            overrides = {"eval_split": args.split} if args.split else {}
            if args.batch_size:
                overrides["eval_batch_size"] = args.batch_size
            result = train.evaluate_workdir(directory, args.checkpoint, args.ema, overrides)
            where = f"{directory} step {result['step']}"
        else:  # a fusionjax-convert directory (load_pretrained explains what is missing otherwise)
            config = load_config("common")
            config.update(dataset=args.dataset, data_dir=args.data_dir, eval_split=args.split,
                          image_size=args.image_size, eval_batch_size=args.batch_size or CONVERTED_EVAL_BATCH)
            result = train.evaluate_converted(directory, config)
            where = f"{directory} on {args.dataset}"
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    print(f"{where}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}, loss {result['loss']:.4f}")


def eval_main() -> None:
    prefer_eigen_cpu_convolutions()
    flags.DEFINE_string("workdir", None, "The --workdir of a fusionjax-train run, or a fusionjax-convert --out.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (highest eval top-1) or a step number.")
    flags.DEFINE_string("split", None, "Split to evaluate; default: the run's config.eval_split.")
    flags.DEFINE_bool("ema", False, "Evaluate the EMA of params and batch_stats (runs with config.ema_decay).")
    distributed = _define_distributed_flags()
    flags.DEFINE_string("dataset", "imagenet2012", "Converted checkpoints: the tfds data set to evaluate on.")
    flags.DEFINE_string("data_dir", None, "Converted checkpoints: tfds data_dir.")
    flags.DEFINE_integer("image_size", 224, "Converted checkpoints: evaluation crop size.")
    flags.DEFINE_integer("batch_size", None, "Global evaluation batch size; default: the run's "
                         f"config.eval_batch_size, or {CONVERTED_EVAL_BATCH} for converted checkpoints.", lower_bound=1)
    flags.mark_flag_as_required("workdir")
    _describe_for_help("Evaluate a fusionjax-train run's checkpoint, or a fusionjax-convert directory on a tfds "
                       "split: fusionjax-eval --workdir DIR",
                       ["workdir", "checkpoint", "split", "ema", *distributed, "dataset", "data_dir", "image_size",
                        "batch_size"])
    app.run(_eval)


def _plot(argv) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: fusionjax-plot WORKDIR")
    from train.metrics import plot_curves

    try:
        print(plot_curves(Path(argv[1])).absolute())
    except FileNotFoundError as error:
        sys.exit(f"error: {error}")


def plot_main() -> None:
    app.run(_plot)
