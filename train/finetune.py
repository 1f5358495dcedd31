"""Fine-tuning: start a run from converted or trained weights, and keep parts of the model fixed.

``config.init_from`` names a source (``fusionjax.sources.load``): a ``fusionjax-convert`` directory, a training
workdir (``DIR``, ``DIR@best``, ``DIR@STEP``) or ``torchvision:NAME``. The source fixes the architecture and the
input normalization; every variable loads exactly except the classifier, which starts afresh when the class count
differs. A resumed run restores its own checkpoint and never reads the source again.

``config.freeze`` names parameters by the model's own structure (``ModelLayout``): ``stem``, ``stage1``…, ``head``,
``backbone`` (everything but the head), a top-level module (``layer1_0``, ``denseblock2``, ``norm5``) or a glob over
'/'-joined parameter paths (``*/bn*``). The optimizer zeroes their updates (``optim.make_optimizer``); with
``config.freeze_batch_stats`` their BatchNorm layers also normalize with, and keep, their running statistics.
The user's guide: ``docs/training.md``, "Fine-tuning".
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.layers import BatchNorm
from fusionjax.train import workdir as workdir_lib
from fusionjax.train.errors import ConfigError, DataError

# The zoo names each stage's modules with the stage number: ResNets' blocks, DenseNets' blocks and the transition
# that follows each (timm's group_matcher groups them the same way).
_STAGE_PREFIX = re.compile(r"^(?:layer|denseblock|transition)(\d+)(?:_|$)")


class InitFromError(ConfigError):
    """config.init_from names no usable source, or one whose architecture the config contradicts."""


class FreezeError(ConfigError):
    """A config.freeze pattern matches no parameter of the model."""


class SourceMismatchError(DataError):
    """The source's variables do not fit the model built from its own description."""


def path_name(path: tuple) -> str:
    """A parameter's key path as '/'-joined names: ``layer1_0/bn1/scale``."""
    return "/".join(str(getattr(key, "key", key)) for key in path)


@dataclasses.dataclass(frozen=True)
class ModelLayout:
    """A model's top-level modules in the order it calls them, grouped as users name them.

    ``groups`` maps a module to ``'stem'`` (the modules called before the first stage), ``'stageN'``, ``'head'``
    (the last module called: the classifier) or None (e.g. a final norm between the last stage and the head).
    ``paths`` lists every parameter as '/'-joined names.
    """

    modules: tuple[str, ...]
    groups: dict[str, str | None]
    paths: tuple[str, ...]

    @property
    def head(self) -> str:
        return self.modules[-1]

    @classmethod
    def of(cls, model: nn.Module, image_shape: tuple[int, int, int]) -> ModelLayout:
        order: list[str] = []

        def init(key):  # a fresh function per call: eval_shape caches by function and would skip the side effect
            variables = model.init(key, jnp.zeros((1, *image_shape), jnp.float32))
            order.extend(variables["params"])  # Flax creates the entries in call order
            return variables["params"]

        params = jax.eval_shape(init, jax.random.key(0))
        first_stage = next((i for i, m in enumerate(order) if _STAGE_PREFIX.match(m)), len(order) - 1)
        groups = {}
        for i, module in enumerate(order):
            stage = _STAGE_PREFIX.match(module)
            groups[module] = ("head" if i == len(order) - 1 else f"stage{stage.group(1)}" if stage
                              else "stem" if i < first_stage else None)
        paths = tuple(path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
        return cls(tuple(order), groups, paths)

    def frozen_paths(self, patterns: str) -> frozenset[str]:
        """The parameter paths that the comma-separated ``patterns`` (``config.freeze``) name."""
        frozen: set[str] = set()
        for pattern in (p.strip() for p in patterns.split(",")):
            if not pattern:
                continue
            if pattern == "backbone":
                modules = [m for m in self.modules if m != self.head]
            else:
                modules = [m for m in self.modules if self.groups[m] == pattern]
            matched = {p for p in self.paths if p.split("/")[0] in modules
                       or fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, f"{pattern}/*")}
            if not matched:
                stages = [g for g in dict.fromkeys(self.groups.values()) if g]
                raise FreezeError(
                    f"config.freeze: {pattern!r} matches no parameter. Name a group ({', '.join(stages)}, backbone), "
                    f"a top-level module ({', '.join(self.modules)}) or a glob over '/'-joined parameter paths "
                    "such as 'layer1_*' or '*/bn1/*'.")
            frozen |= matched
        return frozenset(frozen)


def parameter_roles(layout: ModelLayout, frozen: frozenset[str]) -> Callable[[Any], Any]:
    """``params -> tree of 'frozen' | 'head' | 'backbone'`` (optax's ``param_labels``; also for masked trees)."""

    def roles(params):
        def role(path, _):
            name = path_name(path)
            return "frozen" if name in frozen else "head" if name.split("/")[0] == layout.head else "backbone"

        return jax.tree_util.tree_map_with_path(role, params)

    return roles


def frozen_norms(frozen: frozenset[str]) -> frozenset[str]:
    """The module paths of the norm layers whose scale and offset are both frozen."""
    return frozenset(p.rsplit("/", 1)[0] for p in frozen
                     if p.endswith("/scale") and p.rsplit("/", 1)[0] + "/bias" in frozen)


def running_statistics_for(norms: frozenset[str]):
    """A Flax method interceptor: the BatchNorm layers at ``norms`` run as in evaluation (timm's FrozenBatchNorm2d):
    they normalize with their running statistics and leave them unchanged."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        # The zoo's BatchNorm(x, train); its evaluation mode then calls Flax's with use_running_average, unchanged.
        if (context.method_name == "__call__" and isinstance(module, BatchNorm) and "use_running_average" not in kwargs
                and "/".join(module.path) in norms):
            return next_fun(args[0], train=False)
        return next_fun(*args, **kwargs)

    return interceptor


def statistics_mask(batch_stats, norms: frozenset[str]):
    """True for the running statistics of the frozen norm layers."""
    return jax.tree_util.tree_map_with_path(lambda path, _: path_name(path).rsplit("/", 1)[0] in norms, batch_stats)


# ----------------------------------------------------------------------------------------------------------------
# The source.


def load_source(spec: str):
    """``fusionjax.sources.load(spec)``, its errors as the trainer's user errors."""
    from fusionjax import sources

    try:
        return sources.load(spec)
    except sources.SourceError as error:
        raise InitFromError(f"config.init_from: {error}") from error


def adopt_architecture(config, source) -> None:
    """Set ``config.model`` and ``config.model_overrides`` to the source's; a different model is an error."""
    if config.model and config.model != source.arch:
        raise InitFromError(
            f"config.model={config.model!r} but config.init_from={config.init_from!r} holds a {source.arch}; leave "
            "config.model unset (the source's architecture) or pick a source of that model.")
    config.model = source.arch
    for key, value in source.model_options.items():  # the user's own overrides (drop_path, ...) stay on top
        if key not in config.model_overrides:
            config.model_overrides[key] = value


def initial_variables(source, fresh: dict, log: Callable[[str], None] | None = print) -> dict:
    """``fresh`` (the model's own initialization, on device) with every variable the source has, loaded exactly,
    as host arrays.

    The classifier keeps its fresh initialization where the class count differs (logged); any other difference in
    shape or structure is an error naming the parameters.
    """
    from jax.experimental import multihost_utils

    loaded = jax.tree_util.tree_map(np.asarray, {k: source.variables.get(k, {}) for k in fresh})
    head = source.head
    reinitialized = []
    if loaded["params"][head]["kernel"].shape != np.shape(fresh["params"][head]["kernel"]):
        # Gathered whole: with config.fsdp on several hosts, each holds only its shards.
        fresh_head = jax.tree_util.tree_map(lambda x: multihost_utils.process_allgather(x, tiled=True),
                                            fresh["params"][head])
        loaded["params"] = {**loaded["params"], head: fresh_head}
        reinitialized = sorted(f"{head}/{name}" for name in fresh["params"][head])
    expected = {path_name(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(fresh)[0]}
    found = {path_name(p): np.shape(v) for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    wrong = [f"{p}: {found.get(p, 'missing')} in the source, {shape} in the model" for p, shape in expected.items()
             if found.get(p) != shape]
    wrong += [f"{p}: in the source only" for p in found if p not in expected]
    if wrong:
        raise SourceMismatchError(f"config.init_from={source.origin.get('path', source.arch)!r}: its variables do "
                                  "not fit the model it describes: " + "; ".join(wrong[:8]))
    if reinitialized and log:
        log(f"init_from: {source.num_classes} classes in the source, {np.shape(fresh['params'][head]['kernel'])[-1]} "
            f"here; re-initialized {', '.join(reinitialized)}")
    return loaded


def prepare(config, workdir: Path):
    """Give ``config`` the architecture of ``config.init_from`` and return the source to start from: None when
    training from scratch, or when ``workdir`` holds checkpoints of this run (it resumes from them, and the
    architecture is the one its ``config.json`` recorded when it started)."""
    if not config.init_from:
        if not config.model:
            raise InitFromError("config.model is unset: pass --config.init_from=SOURCE to start from its weights and "
                                "architecture, or --config.model=NAME to train from scratch.")
        return None
    recorded = workdir / workdir_lib.CONFIG_FILE
    checkpoints = workdir / workdir_lib.CHECKPOINT_DIR
    if recorded.is_file() and checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()):
        run = workdir_lib.load_workdir_config(workdir)
        if run.get("init_from") == config.init_from and config.model in (None, run.model):
            config.model = run.model
            for key, value in run.model_overrides.items():
                if key not in config.model_overrides:
                    config.model_overrides[key] = tuple(value) if isinstance(value, list) else value
            return None
    source = load_source(config.init_from)
    adopt_architecture(config, source)
    return source
