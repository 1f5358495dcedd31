"""The algorithm every source shares: a key table applied to one architecture, every mismatch collected, then raised.

A key table (``fusionjax.convert.tables``) is a tuple of ``KeyRule(source key template, JAX path template,
transform)``. ``{name}`` in a template stands for a number and must appear on both sides; on the source side
``{name+1}`` says the source counts from one more (Keras's ``conv2_block1`` is the zoo's ``layer1_0``). A source key
takes the first rule that matches it and names a variable the architecture has, so one table serves architectures
whose source keys overlap (timm's ``downsample.1`` is a BatchNorm, or the conv of an average-pool shortcut). Rules
with a ``family`` apply only to that family (``family_of``). ``legacy`` rules are read and never written.
"""

import dataclasses
import functools
import re
from typing import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fusionjax.convert.errors import ConversionError
from fusionjax.convert.report import ConversionReport


@dataclasses.dataclass(frozen=True)
class Transform:
    """How a source tensor's axes map to the JAX array's: ``jax = source.transpose(to_jax)``."""

    name: str
    to_jax: tuple[int, ...]

    @property
    def to_source(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.to_jax))

    def source_shape(self, jax_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(jax_shape[i] for i in self.to_source)


CONV = Transform("conv", (2, 3, 1, 0))  # torch OIHW → HWIO
CONV1D = Transform("conv1d", (2, 1, 0))  # torch (out, in, width) → (width, in, out)
LINEAR = Transform("linear", (1, 0))  # torch (out, in) → (in, out)
VECTOR = Transform("vector", (0,))
SAME = Transform("same", (0, 1, 2, 3))  # Keras's conv kernels are HWIO already
SAME_2D = Transform("same_2d", (0, 1))  # Keras's dense kernels are (in, out) already
COUNTER = Transform("counter", ())  # BatchNorm's num_batches_tracked: no JAX counterpart, written back as 0

_PLACEHOLDER = re.compile(r"\\\{(\w+)(?:\\\+(\d+))?\\\}")  # {name} or {name+k}, as re.escape writes them


@dataclasses.dataclass(frozen=True)
class KeyRule:
    source: str
    jax: str
    transform: Transform
    legacy: bool = False
    family: str | None = None

    @functools.cached_property
    def source_regex(self) -> re.Pattern:
        return re.compile("^" + _PLACEHOLDER.sub(r"(?P<\1>\\d+)", re.escape(self.source)) + "$")

    @functools.cached_property
    def jax_regex(self) -> re.Pattern:
        return re.compile("^" + _PLACEHOLDER.sub(r"(?P<\1>\\d+)", re.escape(self.jax)) + "$")

    @functools.cached_property
    def offsets(self) -> dict[str, int]:
        return {name: int(k or 0) for name, k in _PLACEHOLDER.findall(re.escape(self.source))}

    def jax_path(self, source_key: str) -> str | None:
        match = self.source_regex.match(source_key)
        if not match:
            return None
        numbers = {name: int(value) - self.offsets[name] for name, value in match.groupdict().items()}
        return None if min(numbers.values(), default=0) < 0 else self.jax.format(**numbers)

    def source_key(self, jax_path: str) -> str | None:
        match = None if self.legacy else self.jax_regex.match(jax_path)
        if not match:
            return None
        numbers = {name: int(value) for name, value in match.groupdict().items()}
        return re.sub(r"\{(\w+)(?:\+(\d+))?\}", lambda m: str(numbers[m[1]] + int(m[2] or 0)), self.source)


def family_of(model: nn.Module) -> str:
    """``'densenet'``, ``'resnet'`` or ``'preact_resnet'``: which family-specific rows of a table apply."""
    from fusionjax.models import DenseNet

    if isinstance(model, DenseNet):
        return "densenet"
    block = model.block.func if isinstance(model.block, functools.partial) else model.block
    return "preact_resnet" if block.preactivated else "resnet"


def _rules(table: tuple[KeyRule, ...], family: str):
    return [rule for rule in table if rule.family in (None, family)]


def to_jax_path(table, source_key: str, expected: Mapping, family: str) -> tuple[KeyRule, str] | None:
    """The first rule naming a variable of the architecture for ``source_key`` (else the first that matches)."""
    found = [(rule, path) for rule in _rules(table, family) if (path := rule.jax_path(source_key)) is not None]
    return next(((rule, path) for rule, path in found if path in expected), found[0] if found else None)


@functools.lru_cache(maxsize=32)
def expected_variables(model: nn.Module) -> dict[str, jax.ShapeDtypeStruct]:
    """The model's variables as ``{'params/.../kernel': ShapeDtypeStruct}``, traced, never computed, ordered
    by the first call of their layer (JAX returns dicts sorted by key; the sources order by execution)."""
    calls = []

    def record(call, args, kwargs, context):
        calls.append("/".join(context.module.path))
        return call(*args, **kwargs)

    size = 64  # parameter shapes do not depend on the image size; tracing does not either
    x = jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32)
    with nn.intercept_methods(record):
        shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    first_call = {path: i for i, path in reversed(list(enumerate(calls)))}
    flat = traverse_util.flatten_dict(dict(shapes), sep="/")
    return dict(sorted(flat.items(), key=lambda item: (first_call.get(_layer(item[0]), len(calls)), item[0])))


def _layer(path: str) -> str:
    """``'batch_stats/layer1_0/bn1/mean'`` → ``'layer1_0/bn1'``: params and statistics of one layer together."""
    return path.split("/", 1)[1].rsplit("/", 1)[0]


def _shape(array) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(array))


def source_keys_in_order(table, paths, family: str) -> list[tuple[KeyRule, str, str]]:
    """``(rule, source key, JAX path)`` for ``paths`` (in ``expected_variables``' order), in the source's order:
    layers as they run, and within a layer the table's order (torch: weight, bias, running_mean, running_var,
    num_batches_tracked)."""
    rules = _rules(table, family)
    layer_order = {}
    for path in paths:
        layer_order.setdefault(_layer(path), len(layer_order))
    found = [(layer_order[_layer(path)], i, key, rule, path)
             for path in paths for i, rule in enumerate(rules) if (key := rule.source_key(path)) is not None]
    return [(rule, key, path) for *_, key, rule, path in sorted(found, key=lambda item: item[:2])]


def checkpoint_classes(table, state_dict: Mapping, head: str) -> int | None:
    """The number of classes of the checkpoint's classifier (the length of its bias), if it has one; ``head`` is
    the classifier's params key (``ModelSpec.head``), whose bias every family's rows name alike."""
    bias = f"params/{head}/bias"
    keys = [key for rule in table if (key := rule.source_key(bias)) is not None]
    value = next((state_dict[key] for key in keys if key in state_dict), None)
    return None if value is None or np.ndim(value) != 1 else _shape(value)[0]


def variables_classes(variables: Mapping, head: str) -> int | None:
    """The number of classes of the classifier ``head`` (``ModelSpec.head``) in ``variables``, if they have one."""
    bias = variables.get("params", {}).get(head, {}).get("bias")
    return None if bias is None or np.ndim(bias) != 1 else _shape(bias)[0]


def state_dict_to_variables(
    table, state_dict: Mapping[str, np.ndarray], model: nn.Module, head: str, *, arch: str, reference: str
) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Flat ``{jax path: float32 array}`` for the keys that fit, and a report of those that do not; ``head`` is the
    classifier's params key, whose size alone differing is reported as a number of classes."""
    expected, family = expected_variables(model), family_of(model)
    loaded, sources, mismatched_paths = {}, {}, set()
    missing, unexpected, mismatched = [], [], []
    for key, value in state_dict.items():
        found = to_jax_path(table, key, expected, family)
        if found is None or found[1] not in expected:
            unexpected.append((key, _shape(value)))
            continue
        rule, path = found
        if rule.transform is COUNTER:
            continue
        want = rule.transform.source_shape(expected[path].shape)
        if _shape(value) != want:
            mismatched.append((key, _shape(value), want))
            mismatched_paths.add(path)
        elif path in sources:
            unexpected.append((key, _shape(value)))  # e.g. both "norm.1.weight" and "norm1.weight"
        else:
            # a copy: torch's .numpy() shares memory with the model, which may go on training
            loaded[path] = np.array(np.asarray(value).transpose(rule.transform.to_jax), np.float32, order="C")
            sources[path] = key
    for rule, key, path in source_keys_in_order(table, expected, family):
        if path not in loaded and path not in mismatched_paths and rule.transform is not COUNTER:
            missing.append((key, rule.transform.source_shape(expected[path].shape)))
    only_head = bool(mismatched) and not missing and not unexpected and all(
        to_jax_path(table, key, expected, family)[1].startswith(f"params/{head}/") for key, *_ in mismatched)
    classes = (checkpoint_classes(table, state_dict, head), model.num_classes) if only_head else None
    report = ConversionReport(arch, tuple(missing), tuple(unexpected), tuple(mismatched), reference=reference,
                              classes=classes if classes and classes[0] else None)
    return loaded, report


def check_variables(arch: str, variables: Mapping, model: nn.Module) -> dict:
    """``variables`` flattened to ``{path: array}``; a ``ConversionError`` names every path that does not fit."""
    expected = expected_variables(model)
    flat = traverse_util.flatten_dict(_plain(variables), sep="/")
    missing = [(p, tuple(s.shape)) for p, s in expected.items() if p not in flat]
    unexpected = [(p, _shape(v)) for p, v in flat.items() if p not in expected]
    mismatched = [(p, _shape(flat[p]), tuple(s.shape)) for p, s in expected.items()
                  if p in flat and _shape(flat[p]) != tuple(s.shape)]
    if missing or unexpected or mismatched:
        report = ConversionReport(arch, tuple(missing), tuple(unexpected), tuple(mismatched),
                                  subject="the variables", plural=True)
        raise ConversionError(str(report), report)
    return flat


def variables_to_state_dict(table, variables: Mapping, model: nn.Module, *, arch: str) -> dict[str, np.ndarray]:
    """The source's state_dict as NumPy arrays (torch's num_batches_tracked as int64 zeros) for ``variables``."""
    flat = check_variables(arch, variables, model)
    state_dict = {}
    for rule, key, path in source_keys_in_order(table, expected_variables(model), family_of(model)):
        if rule.transform is COUNTER:
            state_dict[key] = np.zeros((), np.int64)
        else:
            state_dict[key] = np.array(np.asarray(flat[path]).transpose(rule.transform.to_source), order="C")
    return state_dict


def _plain(tree: Mapping) -> dict:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def unflatten(flat: Mapping[str, np.ndarray]) -> dict:
    return traverse_util.unflatten_dict(dict(flat), sep="/")


def initialized(model: nn.Module) -> dict[str, np.ndarray]:
    """Freshly initialized variables (seed 0), flat, for what a non-strict load leaves unfilled."""
    x = jnp.zeros((1, 64, 64, model.in_channels), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    return {path: np.asarray(value) for path, value in traverse_util.flatten_dict(dict(variables), sep="/").items()}
