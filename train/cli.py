"""Command lines: ``fusionjax-train`` (= ``python -m fusionjax.train``), ``fusionjax-eval``, ``fusionjax-plot``.

Configs are ml_collections config files overridable flag by flag, the Flax examples' convention::

    fusionjax-train --config configs/digits.py --workdir /tmp/digits --config.num_epochs=10

``--config`` takes a file's path or a shipped config's name (``--config digits``), and every field of a config can
be set from the command line (optional fields are typed ``ml_collections`` placeholders). Each command's line is
parsed by its ``parse_*`` function, which its ``main`` runs and which parses alone, running nothing. Errors the user
fixes (a config field, a flag, the data, the workdir: ``errors.UserError``) print as ``error: …`` with exit status
1; anything else is a bug and keeps its traceback. This module lives inside ``fusionjax``, so importing it runs ``import fusionjax``
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
from fusionjax import writes
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
    untyped = [key for key in keys if key in fields and _field_type(config, key) is type(None)]
    if untyped:
        raise ConfigError(
            f"{', '.join(f'--config.{key}' for key in untyped)}: the config sets this field to a plain None, which "
            "has no type to read a value as. Declare it in the config file as a typed placeholder, e.g. "
            "config_dict.placeholder(str) (from ml_collections import config_dict), as configs/common.py does.")


def _field_type(config, key: str) -> type:
    *parents, name = key.split(".")
    for parent in parents:
        config = config[parent]
    return config.get_type(name)


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


def _define_host_flags(flag_values: flags.FlagValues) -> list[str]:
    flags.DEFINE_integer(
        "cpu_devices", 1, "On CPU: run the host as this many XLA devices and shard each batch over them, as over "
        "GPUs (one per core is the useful most; batch sizes must divide). Ignored when JAX runs on a GPU or TPU. "
        "See docs/multi-host.md.", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_bool(
        "reuse_freed_host_memory", False, "On CPU with glibc's malloc: keep the host memory freed between steps in "
        "the process instead of returning it to the kernel (fusionjax.train.host.reuse_freed_host_memory): faster "
        "steps in long runs, slower compiling, the peak heap held until exit. Preloading tcmalloc does better where "
        "you can install it. See docs/cpu-performance.md.", flag_values=flag_values)
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with the process count and index "
                      "of the detected cluster (SLURM, Open MPI, Kubernetes, TPU pods).", flag_values=flag_values)
    flags.DEFINE_string("coordinator_address", None, "Multi-process launch without a cluster manager: host:port of "
                        "process 0, with --num_processes and --process_id.", flag_values=flag_values)
    flags.DEFINE_integer("num_processes", None, "Multi-process launch: the number of processes (hosts).",
                         flag_values=flag_values)
    flags.DEFINE_integer("process_id", None, "Multi-process launch: this process's index, 0 to num_processes - 1.",
                         flag_values=flag_values)
    return ["cpu_devices", "reuse_freed_host_memory", "distributed", "coordinator_address", "num_processes",
            "process_id"]


def _set_up_host(args: flags.FlagValues) -> None:
    """Process-wide, before JAX's backend starts: the allocator, the CPU device count, a multi-process run."""
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


def _key_flags_for_help(flag_values: flags.FlagValues, names: list[str]) -> None:
    """absl's --help lists the main module's key flags; an entry point has none of its own."""
    for name in names:
        flag_values.register_key_flag_for_module(sys.argv[0], flag_values[name])


def _no_arguments(arguments: list[str], command: str) -> None:
    if len(arguments) > 1:
        raise ConfigError(f"{command} takes flags only, got the argument(s) {' '.join(arguments[1:])}; write each "
                          "setting as --NAME=VALUE (--config.KEY=VALUE for a config field).")


def _run(main, parse, usage: str) -> None:
    """``app.run(main)`` with ``parse`` as its flag parser on the process's flags; ``main`` receives what ``parse``
    returns. A mistake in the command line prints as one ``error: …`` line."""
    def flags_parser(argv: list[str]) -> list:
        try:
            return [argv[0], parse(argv, flags.FLAGS)]
        except UserError as error:
            sys.exit(f"error: {error}")
        except flags.Error as error:
            sys.exit(f"error: {error} (--help lists the flags)")

    sys.modules["__main__"].__doc__ = usage  # what absl's --help prints first
    app.run(main, flags_parser=flags_parser)


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-train


def parse_train(argv: list[str], flag_values: flags.FlagValues | None = None) -> flags.FlagValues:
    """fusionjax-train's command line ``argv`` (the program first) parsed into ``flag_values`` (default: new ones)
    exactly as ``train_main`` parses it, nothing run: ``flag_values.config`` is the config with its overrides.
    Raises ``UserError`` or absl's ``flags.Error``."""
    flag_values = flags.FlagValues() if flag_values is None else flag_values
    argv = _resolve_config_flag(argv)
    # Unlocked, so that --config.model_overrides.KEY may add a create_model option; _resolve_config_flag has
    # refused every other unknown key.
    config_flags.DEFINE_config_file(
        "config", None, "Training config: a shipped config's name (listed above) or a config file's path. Every "
        "field can be set with --config.KEY=VALUE in its type: --config.data_dir=/data, --config.image_size=160, "
        "--config.piecewise_epochs='(30, 60)', --config.model_overrides.drop_path=0.1.",
        flag_values=flag_values, lock_config=False, accept_new_attributes=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, TensorBoard events and plots.",
                        flag_values=flag_values)
    host_flags = _define_host_flags(flag_values)
    flags.mark_flags_as_required(["config", "workdir"], flag_values)
    _key_flags_for_help(flag_values, ["config", "workdir", *host_flags])
    _no_arguments(flag_values(argv), "fusionjax-train")
    return flag_values


def _train(argv) -> None:
    _, args = argv
    _quiet_libraries()
    try:
        _set_up_host(args)
        from fusionjax.train import trainer

        writes.check_directory(args.workdir)
        with writes.writing(args.workdir):
            trainer.train_and_evaluate(args.config, args.workdir)
    except UserError as error:
        sys.exit(f"error: {error}")
    except OSError as error:  # a full disk, a read-only or forbidden workdir, a file where it belongs
        sys.exit(f"error: {writes.message(error)}")


def train_main() -> None:
    _run(_train, parse_train,
         "Train a fusionjax model: fusionjax-train --config NAME_OR_FILE --workdir DIR [--config.KEY=VALUE ...]\n"
         f"Shipped configs (in {CONFIGS_DIR}):\n  " + "\n  ".join(shipped_configs()))


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-eval


def _evaluate(args) -> str:
    """Evaluate the run or converted checkpoint in ``--workdir``; the lines to print."""
    from fusionjax.train import trainer, workdir

    directory = Path(args.workdir)
    if (directory / workdir.CONFIG_FILE).exists():
        overrides = {"eval_split": args.split} if args.split else {}
        if args.batch_size:
            overrides["eval_batch_size"] = args.batch_size
        result = trainer.evaluate_workdir(directory, args.checkpoint, args.ema, overrides, args.per_class)
        where = f"{directory} step {result['step']}"
    else:  # a fusionjax-convert directory (evaluate_converted explains what is missing otherwise)
        from fusionjax.configs import common

        config = common.get_config()
        config.update(dataset=args.dataset, data_dir=args.data_dir, eval_split=args.split,
                      image_size=args.image_size, eval_batch_size=args.batch_size or CONVERTED_EVAL_BATCH)
        result = trainer.evaluate_converted(directory, config, args.per_class)
        where = f"{directory} on {args.dataset}"
    lines = [f"{where}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}, loss {result['loss']:.4f}"]
    if args.per_class:
        width = max(map(len, result["per_class"]))
        lines += [f"  {name:<{width}}  top-1 {scores['top1']:.4f} of {scores['count']}"
                  for name, scores in result["per_class"].items()]
    return "\n".join(lines)


def parse_eval(argv: list[str], flag_values: flags.FlagValues | None = None) -> flags.FlagValues:
    """fusionjax-eval's command line ``argv`` parsed into ``flag_values`` (default: new ones) exactly as
    ``eval_main`` parses it, nothing run. Raises ``UserError`` or absl's ``flags.Error``."""
    flag_values = flags.FlagValues() if flag_values is None else flag_values
    flags.DEFINE_string("workdir", None, "The --workdir of a fusionjax-train run, or a fusionjax-convert --out.",
                        flag_values=flag_values)
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (highest eval top-1) or a step number.",
                        flag_values=flag_values)
    flags.DEFINE_string("split", None, "Split to evaluate; default: the run's config.eval_split.",
                        flag_values=flag_values)
    flags.DEFINE_bool("ema", False, "Evaluate the EMA of params and batch_stats (runs with config.ema_decay).",
                      flag_values=flag_values)
    flags.DEFINE_bool("per_class", False, "Also print each class's top-1 and image count, by class name.",
                      flag_values=flag_values)
    host_flags = _define_host_flags(flag_values)
    flags.DEFINE_string("dataset", "imagenet2012", "Converted checkpoints: the tfds data set to evaluate on.",
                        flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "Converted checkpoints: tfds data_dir.", flag_values=flag_values)
    flags.DEFINE_integer("image_size", 224, "Converted checkpoints: evaluation crop size.", flag_values=flag_values)
    flags.DEFINE_integer("batch_size", None, "Global evaluation batch size; default: the run's "
                         f"config.eval_batch_size, or {CONVERTED_EVAL_BATCH} for converted checkpoints.", lower_bound=1,
                         flag_values=flag_values)
    flags.mark_flag_as_required("workdir", flag_values)
    _key_flags_for_help(flag_values, ["workdir", "checkpoint", "split", "ema", "per_class", *host_flags, "dataset",
                                      "data_dir", "image_size", "batch_size"])
    _no_arguments(flag_values(argv), "fusionjax-eval")
    return flag_values


def _eval(argv) -> None:
    _, args = argv
    _quiet_libraries()
    try:
        _set_up_host(args)
        with writes.writing(args.workdir):
            writes.print_result(_evaluate(args))
    except UserError as error:
        sys.exit(f"error: {error}")
    except OSError as error:
        sys.exit(f"error: {writes.message(error)}")


def eval_main() -> None:
    _run(_eval, parse_eval, "Evaluate a fusionjax-train run's checkpoint, or a fusionjax-convert directory on a "
                            "tfds split: fusionjax-eval --workdir DIR")


# ----------------------------------------------------------------------------------------------------------------
# fusionjax-plot


def parse_plot(argv: list[str], flag_values: flags.FlagValues | None = None) -> Path:
    """fusionjax-plot's command line ``argv`` parsed as ``plot_main`` parses it: the WORKDIR to plot."""
    flag_values = flags.FlagValues() if flag_values is None else flag_values
    arguments = flag_values(argv)
    if len(arguments) != 2:
        raise ConfigError(f"fusionjax-plot takes one WORKDIR, got {len(arguments) - 1} argument(s); usage: "
                          "fusionjax-plot WORKDIR.")
    return Path(arguments[1])


def _plot(argv) -> None:
    _, directory = argv
    from fusionjax.train.metrics import plot_curves

    try:
        with writes.writing(directory):
            print(plot_curves(directory).absolute())
    except UserError as error:
        sys.exit(f"error: {error}")
    except OSError as error:
        sys.exit(f"error: {writes.message(error)}")


def plot_main() -> None:
    _run(_plot, parse_plot, "Plot a fusionjax-train run's training and evaluation curves into WORKDIR/curves.png "
                            "and print its path: fusionjax-plot WORKDIR")
