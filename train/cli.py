"""Command lines: ``fusionjax-train`` (= ``python -m fusionjax.train``), ``fusionjax-eval``, ``fusionjax-plot``.

Configs are ml_collections config files overridable flag by flag, the Flax examples' convention::

    fusionjax-train --config configs/digits.py --workdir /tmp/digits --config.num_epochs=10

``--config`` takes a file's path or a shipped config's name (``--config digits``). Errors the user fixes (a config
field, a flag, the data, the workdir: ``errors.UserError``) print as ``error: …`` with exit status 1; anything else
is a bug and keeps its traceback. This module lives inside ``fusionjax``, so importing it runs ``import fusionjax``
before anything starts JAX's backend, as the library's process-wide settings need. The user's guide:
``docs/training.md``.
"""

import difflib
import importlib.util
import json
import re
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

import fusionjax.configs
from fusionjax.train import host
from fusionjax.train.errors import ConfigError, UserError

CONFIGS_DIR = Path(fusionjax.configs.__file__).resolve().parent
CONVERTED_EVAL_BATCH = 200  # fusionjax-eval's default batch for a converted checkpoint, which has no config
# Fields a config may gain on the command line: any create_model option (drop_path, stage_sizes, ...).
OPEN_FIELDS = ("model_overrides",)


# ----------------------------------------------------------------------------------------------------------------
# Configs by name or path, and their command-line overrides.


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.py") if p.stem not in ("__init__", "common"))


def config_path(name_or_path: str) -> Path:
    """The config file that ``--config`` names: a path to a file, or a shipped config's name (``'digits'``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if name_or_path in shipped_configs():
        return CONFIGS_DIR / f"{name_or_path}.py"
    raise ConfigError(f"--config {name_or_path}: no such file, and no shipped config of that name. Shipped configs: "
                      f"{', '.join(shipped_configs())} (pass a name, or the path of a config file).")


def load_config(name_or_path: str, argument: str | None = None):
    """The config that ``--config NAME_OR_PATH[:ARGUMENT]`` loads, before command-line overrides."""
    path = config_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"{path.stem}_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if argument is None else module.get_config(argument)


def _field_names(config) -> list[str]:
    def flatten(tree, prefix=""):
        for key, value in tree.items():
            yield f"{prefix}{key}"
            if isinstance(value, dict):
                yield from flatten(value, f"{prefix}{key}.")

    return list(flatten(json.loads(config.to_json_best_effort())))


def check_overrides(config, keys: list[str]) -> None:
    """Refuse a ``--config.KEY`` whose KEY is no field of ``config``, listing the fields it has."""
    fields = _field_names(config)
    unknown = [key for key in keys if key not in fields and not key.startswith(tuple(f"{f}." for f in OPEN_FIELDS))]
    if unknown:
        hints = [f"--config.{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, fields, 1))
                 else f"--config.{key}" for key in unknown]
        raise ConfigError(
            f"{', '.join(hints)}: no such config field. The config's fields: {', '.join(fields)}, and "
            + ", ".join(f"{f}.<any create_model option>" for f in OPEN_FIELDS) + ".")


_CONFIG_FLAG = re.compile(r"^--?config(=(?P<value>.*))?$")
_OVERRIDE_FLAG = re.compile(r"^--?(no)?config\.(?P<key>[^=]+)")


def _resolve_config_flag(argv: list[str]) -> list[str]:
    """``argv`` with ``--config NAME`` replaced by the shipped file's path (ml_collections loads files only),
    after checking that the config loads and that every ``--config.KEY`` names one of its fields."""
    argv = list(argv)
    for index, arg in enumerate(argv):
        match = _CONFIG_FLAG.match(arg)
        if match is None:
            continue
        value_index = index if match["value"] is not None else index + 1
        if value_index >= len(argv):
            return argv  # absl reports the missing value
        value = match["value"] if match["value"] is not None else argv[value_index]
        name_or_path, colon, argument = value.partition(":")
        config = load_config(name_or_path, argument if colon else None)
        check_overrides(config, [m["key"] for m in map(_OVERRIDE_FLAG.match, argv) if m])
        resolved = f"{config_path(name_or_path)}{colon}{argument}"
        argv[value_index] = f"--config={resolved}" if value_index == index else resolved
        return argv
    return argv


# ----------------------------------------------------------------------------------------------------------------
# Flags the command lines share: the host's process-wide set-up.


def _define_host_flags() -> list[str]:
    flags.DEFINE_integer(
        "cpu_devices", 1, "On CPU: run the host as this many XLA devices and shard each batch over them, as over "
        "GPUs (one per core is the useful most; batch sizes must divide). Ignored when JAX runs on a GPU or TPU. "
        "See docs/multi-host.md.", lower_bound=1)
    flags.DEFINE_bool(
        "reuse_freed_host_memory", False, "On CPU with glibc's malloc: keep the host memory freed between steps in "
        "the process instead of returning it to the kernel (fusionjax.train.host.reuse_freed_host_memory): faster "
        "steps in long runs, slower compiling, the peak heap held until exit. Preloading tcmalloc does better where "
        "you can install it. See docs/cpu-performance.md.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with the process count and index "
                      "of the detected cluster (SLURM, Open MPI, Kubernetes, TPU pods).")
    flags.DEFINE_string("coordinator_address", None, "Multi-process launch without a cluster manager: host:port of "
                        "process 0, with --num_processes and --process_id.")
    flags.DEFINE_integer("num_processes", None, "Multi-process launch: the number of processes (hosts).")
    flags.DEFINE_integer("process_id", None, "Multi-process launch: this process's index, 0 to num_processes - 1.")
    return ["cpu_devices", "reuse_freed_host_memory", "distributed", "coordinator_address", "num_processes",
            "process_id"]


def _set_up_host() -> None:
    """Process-wide, before JAX's backend starts: the allocator, the CPU device count, a multi-process run."""
    args = flags.FLAGS
    if args.reuse_freed_host_memory and not host.reuse_freed_host_memory():
        print(f"--reuse_freed_host_memory changes nothing: this process's malloc is {host.host_malloc()}, not "
              "glibc's.", file=sys.stderr)
    if args.cpu_devices > 1:
        host.split_cpu_host(args.cpu_devices)
    host.join_multi_process_run(args.coordinator_address, args.num_processes, args.process_id,
                                detect=args.distributed)


def _quiet_libraries() -> None:
    """Show warnings and errors, not Orbax's per-save INFO lines; ``--verbosity=0`` brings them back."""
    from absl import logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def _describe_for_help(usage: str, flag_names: list[str]) -> None:
    """absl's --help prints the main module's docstring and key flags; entry points have neither."""
    sys.modules["__main__"].__doc__ = usage
    for name in flag_names:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def _no_arguments(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-train


def _train(argv) -> None:
    _no_arguments(argv)
    _quiet_libraries()
    try:
        _set_up_host()
        from fusionjax.train import trainer

        trainer.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    except UserError as error:
        sys.exit(f"error: {error}")


def train_main() -> None:
    try:
        sys.argv = _resolve_config_flag(sys.argv)
    except UserError as error:
        sys.exit(f"error: {error}")
    # Unlocked, so that --config.model_overrides.KEY may add a create_model option; _resolve_config_flag has
    # refused every other unknown key.
    config_flags.DEFINE_config_file(
        "config", None, "Training config: a shipped config's name (listed above) or a config file's path; override "
        "any field with --config.KEY=VALUE.", lock_config=False, accept_new_attributes=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, TensorBoard events and plots.")
    host_flags = _define_host_flags()
    flags.mark_flags_as_required(["config", "workdir"])
    _describe_for_help(
        "Train a fusionjax model: fusionjax-train --config NAME_OR_FILE --workdir DIR [--config.KEY=VALUE ...]\n"
        f"Shipped configs (in {CONFIGS_DIR}):\n  " + "\n  ".join(shipped_configs()),
        ["config", "workdir", *host_flags])
    app.run(_train)


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-eval


def _evaluate(args) -> str:
    """Evaluate the run or converted checkpoint in ``--workdir``; the line to print."""
    from fusionjax.train import trainer, workdir

    directory = Path(args.workdir)
    if (directory / workdir.CONFIG_FILE).exists():
        overrides = {"eval_split": args.split} if args.split else {}
        if args.batch_size:
            overrides["eval_batch_size"] = args.batch_size
        result = trainer.evaluate_workdir(directory, args.checkpoint, args.ema, overrides)
        where = f"{directory} step {result['step']}"
    else:  # a fusionjax-convert directory (evaluate_converted explains what is missing otherwise)
        from fusionjax.configs import common

        config = common.get_config()
        config.update(dataset=args.dataset, data_dir=args.data_dir, eval_split=args.split,
                      image_size=args.image_size, eval_batch_size=args.batch_size or CONVERTED_EVAL_BATCH)
        result = trainer.evaluate_converted(directory, config)
        where = f"{directory} on {args.dataset}"
    return f"{where}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}, loss {result['loss']:.4f}"


def _eval(argv) -> None:
    _no_arguments(argv)
    _quiet_libraries()
    try:
        _set_up_host()
        print(_evaluate(flags.FLAGS))
    except UserError as error:
        sys.exit(f"error: {error}")


def eval_main() -> None:
    flags.DEFINE_string("workdir", None, "The --workdir of a fusionjax-train run, or a fusionjax-convert --out.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (highest eval top-1) or a step number.")
    flags.DEFINE_string("split", None, "Split to evaluate; default: the run's config.eval_split.")
    flags.DEFINE_bool("ema", False, "Evaluate the EMA of params and batch_stats (runs with config.ema_decay).")
    host_flags = _define_host_flags()
    flags.DEFINE_string("dataset", "imagenet2012", "Converted checkpoints: the tfds data set to evaluate on.")
    flags.DEFINE_string("data_dir", None, "Converted checkpoints: tfds data_dir.")
    flags.DEFINE_integer("image_size", 224, "Converted checkpoints: evaluation crop size.")
    flags.DEFINE_integer("batch_size", None, "Global evaluation batch size; default: the run's "
                         f"config.eval_batch_size, or {CONVERTED_EVAL_BATCH} for converted checkpoints.", lower_bound=1)
    flags.mark_flag_as_required("workdir")
    _describe_for_help("Evaluate a fusionjax-train run's checkpoint, or a fusionjax-convert directory on a tfds "
                       "split: fusionjax-eval --workdir DIR",
                       ["workdir", "checkpoint", "split", "ema", *host_flags, "dataset", "data_dir", "image_size",
                        "batch_size"])
    app.run(_eval)


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-plot


def _plot(argv) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: fusionjax-plot WORKDIR")
    from fusionjax.train.metrics import plot_curves

    try:
        print(plot_curves(Path(argv[1])).absolute())
    except UserError as error:
        sys.exit(f"error: {error}")


def plot_main() -> None:
    _describe_for_help("Plot a fusionjax-train run's training and evaluation curves into WORKDIR/curves.png "
                       "and print its path: fusionjax-plot WORKDIR", [])
    app.run(_plot)
