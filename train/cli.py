"""Command lines: ``fusionjax-train`` (= ``python -m train``), ``fusionjax-eval``, ``fusionjax-plot``.

Configs are ml_collections config files overridable flag by flag, the Flax examples' convention::

    fusionjax-train --config configs/digits.py --workdir /tmp/digits --config.num_epochs=10
"""

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
    from ml_collections.config_flags import config_flags as loader

    _make_configs_importable()
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIGS_DIR / f"{name_or_path}.py"
    if not path.exists():
        raise FileNotFoundError(f"No config {name_or_path!r}; shipped configs: {', '.join(shipped_configs())}.")
    return loader._LoadConfigModule(f"{path.stem}_config", str(path)).get_config()


def _initialize_distributed() -> None:
    """Join a multi-host run when launched as one (``--distributed`` or the JAX coordinator variables)."""
    import os

    import jax

    if flags.FLAGS.distributed or "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize()


def _define_train_flags() -> None:
    _make_configs_importable()
    config_flags.DEFINE_config_file(
        "config", None,
        "Training config file (shipped ones listed above); override any field with --config.KEY=VALUE.",
        lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, TensorBoard events and plots.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host launch).")
    flags.mark_flags_as_required(["config", "workdir"])
    _describe_for_help(
        "Train a fusionjax model: fusionjax-train --config configs/NAME.py --workdir DIR [--config.KEY=VALUE ...]\n"
        f"Shipped configs in {CONFIGS_DIR}:\n  " + "\n  ".join(shipped_configs()),
        ["config", "workdir", "distributed"])


def _describe_for_help(usage: str, flag_names: list[str]) -> None:
    """absl's --help prints the main module's docstring and key flags; entry points have neither."""
    sys.modules["__main__"].__doc__ = usage
    for name in flag_names:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def _train(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _quiet_libraries()
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


def train_main() -> None:
    _define_train_flags()
    app.run(_train)


def _eval(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    _quiet_libraries()
    _initialize_distributed()
    from train import train

    overrides = {"eval_split": flags.FLAGS.split} if flags.FLAGS.split else {}
    result = train.evaluate_workdir(flags.FLAGS.workdir, flags.FLAGS.checkpoint, flags.FLAGS.ema, overrides)
    print(f"{flags.FLAGS.workdir} step {result['step']}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}, "
          f"loss {result['loss']:.4f}")


def eval_main() -> None:
    flags.DEFINE_string("workdir", None, "The --workdir of a fusionjax-train run.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' (highest eval top-1) or a step number.")
    flags.DEFINE_string("split", None, "Split to evaluate; default: the run's config.eval_split.")
    flags.DEFINE_bool("ema", False, "Evaluate the EMA of params and batch_stats (runs with config.ema_decay).")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host launch).")
    flags.mark_flag_as_required("workdir")
    _describe_for_help("Evaluate a fusionjax-train run's checkpoint: fusionjax-eval --workdir DIR",
                       ["workdir", "checkpoint", "split", "ema", "distributed"])
    app.run(_eval)


def _plot(argv) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: fusionjax-plot WORKDIR")
    from train.metrics import plot_curves

    print(plot_curves(Path(argv[1])).absolute())


def plot_main() -> None:
    app.run(_plot)
