"""torchvision state_dict keys ↔ fusionjax variable paths: one table, checked as a whole.

Each row of ``KEY_TABLE`` reads ``(torch key pattern, JAX path template, transform)``; ``{name}`` stands for a
number and must appear on both sides. Rows are tried in order; ``legacy`` rows are accepted when loading and never
written. Every mismatch between a checkpoint and the architecture is collected first (missing, unexpected and
wrongly shaped keys) and reported in one ``ConversionError``.
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

from fusionjax.models.registry import create_model, get_model_spec, list_models

_SHOWN = 5  # offending keys named per kind of error; the count says how many more there are


class ConversionError(ValueError):
    """A checkpoint does not fit the architecture, or a file is not a checkpoint; the message says why."""


class ConversionWarning(UserWarning):
    """Issued by ``from_torchvision(..., strict=False)`` when keys do not fit; ``.report`` lists them."""

    def __init__(self, report: "ConversionReport"):
        super().__init__(str(report))
        self.report = report


@dataclasses.dataclass(frozen=True)
class Transform:
    """How a torch tensor's axes map to the JAX array's: ``jax = torch.transpose(to_jax)``."""

    name: str
    to_jax: tuple[int, ...]

    @property
    def to_torch(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.to_jax))

    def torch_shape(self, jax_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(jax_shape[i] for i in self.to_torch)


CONV = Transform("conv", (2, 3, 1, 0))  # OIHW → HWIO
LINEAR = Transform("linear", (1, 0))  # (out, in) → (in, out)
VECTOR = Transform("vector", (0,))
COUNTER = Transform("counter", ())  # BatchNorm's num_batches_tracked: no JAX counterpart, written back as 0


@dataclasses.dataclass(frozen=True)
class KeyRule:
    torch: str
    jax: str
    transform: Transform
    legacy: bool = False

    @functools.cached_property
    def torch_regex(self) -> re.Pattern:
        return _compile(self.torch)

    @functools.cached_property
    def jax_regex(self) -> re.Pattern:
        return _compile(self.jax)


def _compile(template: str) -> re.Pattern:
    """``{name}`` matches a number, everything else itself."""
    return re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>\\d+)", re.escape(template)) + "$")


def _batchnorm(torch: str, jax: str, legacy: bool = False) -> list[KeyRule]:
    return [
        KeyRule(f"{torch}.weight", f"params/{jax}/scale", VECTOR, legacy),
        KeyRule(f"{torch}.bias", f"params/{jax}/bias", VECTOR, legacy),
        KeyRule(f"{torch}.running_mean", f"batch_stats/{jax}/mean", VECTOR, legacy),
        KeyRule(f"{torch}.running_var", f"batch_stats/{jax}/var", VECTOR, legacy),
        KeyRule(f"{torch}.num_batches_tracked", f"batch_stats/{jax}/mean", COUNTER, legacy),
    ]


_DENSE_LAYER = "features.denseblock{block}.denselayer{layer}"
KEY_TABLE: tuple[KeyRule, ...] = (
    # ResNet, ResNeXt, Wide ResNet (torchvision.models.resnet)
    KeyRule("conv1.weight", "params/conv1/kernel", CONV),
    *_batchnorm("bn1", "bn1"),
    KeyRule("layer{stage}.{block}.conv{n}.weight", "params/layer{stage}_{block}/conv{n}/kernel", CONV),
    *_batchnorm("layer{stage}.{block}.bn{n}", "layer{stage}_{block}/bn{n}"),
    KeyRule("layer{stage}.{block}.downsample.0.weight", "params/layer{stage}_{block}/downsample_conv/kernel", CONV),
    *_batchnorm("layer{stage}.{block}.downsample.1", "layer{stage}_{block}/downsample_bn"),
    KeyRule("fc.weight", "params/fc/kernel", LINEAR),
    KeyRule("fc.bias", "params/fc/bias", VECTOR),
    # DenseNet (torchvision.models.densenet); "norm.1"-style names are those of checkpoints before torchvision 0.3,
    # which torchvision's own densenet._load_state_dict renames to "norm1" the same way.
    KeyRule("features.conv0.weight", "params/conv0/kernel", CONV),
    *_batchnorm("features.norm0", "norm0"),
    KeyRule(_DENSE_LAYER + ".conv{n}.weight", "params/denseblock{block}/denselayer{layer}/conv{n}/kernel", CONV),
    *_batchnorm(_DENSE_LAYER + ".norm{n}", "denseblock{block}/denselayer{layer}/norm{n}"),
    KeyRule(_DENSE_LAYER + ".conv.{n}.weight", "params/denseblock{block}/denselayer{layer}/conv{n}/kernel", CONV,
            legacy=True),
    *_batchnorm(_DENSE_LAYER + ".norm.{n}", "denseblock{block}/denselayer{layer}/norm{n}", legacy=True),
    KeyRule("features.transition{block}.conv.weight", "params/transition{block}/conv/kernel", CONV),
    *_batchnorm("features.transition{block}.norm", "transition{block}/norm"),
    *_batchnorm("features.norm5", "norm5"),
    KeyRule("classifier.weight", "params/classifier/kernel", LINEAR),
    KeyRule("classifier.bias", "params/classifier/bias", VECTOR),
)


def torch_to_jax_key(torch_key: str) -> tuple[KeyRule, str] | None:
    """The first rule matching ``torch_key`` and the JAX path it names, or None."""
    for rule in KEY_TABLE:
        match = rule.torch_regex.match(torch_key)
        if match:
            return rule, rule.jax.format(**match.groupdict())
    return None


def jax_to_torch_keys(jax_path: str) -> list[tuple[KeyRule, str]]:
    """Every non-legacy rule matching ``jax_path`` and the torch key it names (a BN mean also names the counter)."""
    found = []
    for rule in KEY_TABLE:
        match = None if rule.legacy else rule.jax_regex.match(jax_path)
        if match:
            found.append((rule, rule.torch.format(**match.groupdict())))
    return found


def torchvision_spec(arch: str):
    """The registry entry of ``arch``, which must be one of torchvision's architectures."""
    spec = get_model_spec(arch)
    if spec.torchvision is None:
        convertible = [name for name in list_models() if get_model_spec(name).torchvision]
        raise ConversionError(
            f"{arch!r} has no torchvision counterpart, so torchvision checkpoints do not convert to it. "
            f"Architectures that convert: {', '.join(convertible)}."
        )
    return spec


def model_for(arch: str, model: nn.Module | None) -> nn.Module:
    return create_model(torchvision_spec(arch).name) if model is None else model


@functools.lru_cache(maxsize=32)
def expected_variables(model: nn.Module) -> dict[str, jax.ShapeDtypeStruct]:
    """The model's variables as ``{'params/.../kernel': ShapeDtypeStruct}``, traced, never computed, ordered
    by the first call of their layer (JAX returns dicts sorted by key; torchvision orders by execution)."""
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


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    """What did not fit: ``missing`` (torch key, expected torch shape), ``unexpected`` (torch key, shape),
    ``mismatched`` (torch key, checkpoint's shape, expected shape); JAX paths when checking variables."""

    arch: str
    missing: tuple[tuple[str, tuple[int, ...]], ...] = ()
    unexpected: tuple[tuple[str, tuple[int, ...]], ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    subject: str = "the checkpoint"

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        if not self:
            return f"{self.subject} fits {self.arch} exactly"
        lines = [f"{self.subject} does not fit fusionjax {self.arch!r} (torchvision {self.arch}):"]

        def section(items, title, describe):
            if items:
                shown = "; ".join(describe(*item) for item in items[:_SHOWN])
                more = f"; and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
                lines.append(f"  {len(items)} {title}: {shown}{more}")

        section(self.missing, f"missing key(s) that {self.arch} needs", lambda k, s: f"{k} {s}")
        section(self.unexpected, f"unexpected key(s) that {self.arch} does not have", lambda k, s: f"{k} {s}")
        section(self.mismatched, "key(s) with the wrong shape",
                lambda k, got, want: f"{k}: checkpoint {got}, {self.arch} expects {want}")
        if self.missing and (self.unexpected or self.mismatched):
            lines.append("  Keys both missing and unexpected or misshapen usually mean a checkpoint of another "
                         "architecture.")
        elif self.mismatched and all(k.startswith(("fc.", "classifier.")) for k, *_ in self.mismatched):
            lines.append("  Only the classifier differs: for a checkpoint with N classes pass "
                         f"model=fusionjax.create_model({self.arch!r}, num_classes=N).")
        return "\n".join(lines)


def _layer(path: str) -> str:
    """``'batch_stats/layer1_0/bn1/mean'`` → ``'layer1_0/bn1'``: params and statistics of one layer together."""
    return path.split("/", 1)[1].rsplit("/", 1)[0]


def _shape(array) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(array))


def torch_keys_in_order(paths) -> list[tuple[KeyRule, str, str]]:
    """``(rule, torch key, JAX path)`` for ``paths`` (in ``expected_variables``' order), in the order of
    torchvision's state_dict: layers as they run, and within a layer the rules' order, which is torchvision's
    (weight, bias, running_mean, running_var, num_batches_tracked).
    """
    layer_order = {}
    for path in paths:
        layer_order.setdefault(_layer(path), len(layer_order))
    found = [(layer_order[_layer(path)], KEY_TABLE.index(rule), torch_key, rule, path)
             for path in paths for rule, torch_key in jax_to_torch_keys(path)]
    return [(rule, torch_key, path) for *_, torch_key, rule, path in sorted(found, key=lambda item: item[:2])]


def state_dict_to_variables(
    arch: str, state_dict: Mapping[str, np.ndarray], model: nn.Module
) -> tuple[dict[str, np.ndarray], ConversionReport]:
    """Flat ``{jax path: float32 array}`` for the keys that fit, and a report of those that do not."""
    expected = expected_variables(model)
    loaded, sources, mismatched_paths = {}, {}, set()
    missing, unexpected, mismatched = [], [], []
    for torch_key, value in state_dict.items():
        found = torch_to_jax_key(torch_key)
        if found is None or found[1] not in expected:
            unexpected.append((torch_key, _shape(value)))
            continue
        rule, path = found
        if rule.transform is COUNTER:
            continue
        want = rule.transform.torch_shape(expected[path].shape)
        if _shape(value) != want:
            mismatched.append((torch_key, _shape(value), want))
            mismatched_paths.add(path)
        elif path in sources:
            unexpected.append((torch_key, _shape(value)))  # e.g. both "norm.1.weight" and "norm1.weight"
        else:
            # a copy: torch's .numpy() shares memory with the model, which may go on training
            loaded[path] = np.array(np.asarray(value).transpose(rule.transform.to_jax), np.float32, order="C")
            sources[path] = torch_key
    for rule, torch_key, path in torch_keys_in_order(expected):
        if path not in loaded and path not in mismatched_paths and rule.transform is not COUNTER:
            missing.append((torch_key, rule.transform.torch_shape(expected[path].shape)))
    return loaded, ConversionReport(arch, tuple(missing), tuple(unexpected), tuple(mismatched))


def check_variables(arch: str, variables: Mapping, model: nn.Module) -> dict:
    """``variables`` flattened to ``{path: array}``; a ``ConversionError`` names every path that does not fit."""
    expected = expected_variables(model)
    flat = traverse_util.flatten_dict(_plain(variables), sep="/")
    missing = [(p, tuple(s.shape)) for p, s in expected.items() if p not in flat]
    unexpected = [(p, _shape(v)) for p, v in flat.items() if p not in expected]
    mismatched = [(p, _shape(flat[p]), tuple(s.shape)) for p, s in expected.items()
                  if p in flat and _shape(flat[p]) != tuple(s.shape)]
    if missing or unexpected or mismatched:
        raise ConversionError(str(ConversionReport(arch, tuple(missing), tuple(unexpected), tuple(mismatched),
                                                   subject="the variables")))
    return flat


def variables_to_state_dict(arch: str, variables: Mapping, model: nn.Module) -> dict[str, np.ndarray]:
    """torchvision's state_dict as NumPy arrays (num_batches_tracked as int64 zeros) for ``variables``."""
    flat = check_variables(arch, variables, model)
    state_dict = {}
    for rule, torch_key, path in torch_keys_in_order(expected_variables(model)):
        if rule.transform is COUNTER:
            state_dict[torch_key] = np.zeros((), np.int64)
        else:
            state_dict[torch_key] = np.array(np.asarray(flat[path]).transpose(rule.transform.to_torch), order="C")
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

