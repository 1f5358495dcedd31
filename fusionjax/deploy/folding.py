"""Eval-mode BatchNorm folded into the convolution that feeds it.

In evaluation a BatchNorm is a per-channel affine map, ``y = x·a + b`` with ``a = γ/√(σ²+ε)`` and
``b = β − μ·a``. When ``x`` is a convolution's output, ``a`` scales the convolution's kernel (its output
channels) and ``b`` becomes the convolution's bias: one op instead of two, the same numbers.

What folds, per family (a BN folds only when its input is exactly a convolution's output; a ReLU, a concat or an
addition in between prevents it):

- Post-activation ResNets (ResNet, ResNeXt, Wide ResNet, SE-ResNet, CIFAR ResNets, plain nets): every BN —
  ``bn1`` of the stem, ``bn1``/``bn2``/``bn3`` of each block and ``downsample_bn`` of projection shortcuts.
- Pre-activation ResNets (v2, ResNet-164, WRN): the BNs that follow a convolution inside a block, ``bn2`` (and
  ``bn3`` in bottlenecks). ``bn1`` of each block and ``final_bn`` read the sum of a residual addition, and
  BN→ReLU→conv cannot move into the *following* convolution either (the ReLU sits between), so they stay.
- DenseNet: ``norm0`` (after the stem convolution) and every dense layer's ``norm2`` (after its 1×1 conv).
  ``norm1`` of each layer reads the concatenation of earlier layers' outputs, and each earlier output is
  normalized differently by every later layer, so it cannot be moved into the convolutions that made it;
  ``transition*/norm`` and ``norm5`` read a whole block's concatenation. They stay.

A BN that stays becomes its precomputed affine map (``scale`` = a, ``bias`` = b, no statistics), so the folded
variables have ``params`` only. Folding happens in float64 and is stored in float32.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from fusionjax.layers import Conv2d


def _path(module: nn.Module) -> str:
    return "/".join(module.path)


class FoldedConv(Conv2d):
    """A ``Conv2d`` that, when its path is in ``biased``, adds the bias of the BatchNorm folded into it."""

    biased: frozenset[str] = frozenset()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        if self.use_bias or _path(self) not in self.biased:
            return y
        return y + self.param("bias", self.bias_init, (self.features,), jnp.float32).astype(self.dtype)


class FoldedNorm(nn.Module):
    """What a BatchNorm becomes after folding: nothing (its path is in ``folded``), or its eval-mode affine map.

    Takes ``(x, train)`` like the norm it replaces; a folded model is for inference and has no batch
    statistics, so ``train=True`` is refused.
    """

    folded: frozenset[str] = frozenset()
    dtype: Any = jnp.float32
    scale_init: Callable = nn.initializers.ones  # blocks pass BatchNorm's init arguments (zero_init_last)
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if train:
            raise ValueError(
                "A BatchNorm-folded model is for inference only: call it with train=False, and train the "
                "unfolded model instead."
            )
        if _path(self) in self.folded:
            return x
        features = (x.shape[-1],)
        scale = self.param("scale", self.scale_init, features, jnp.float32)
        bias = self.param("bias", self.bias_init, features, jnp.float32)
        return x.astype(self.dtype) * scale.astype(self.dtype) + bias.astype(self.dtype)


@dataclasses.dataclass(frozen=True)
class FoldingPlan:
    """Which BatchNorm (by path) folds into which convolution, which stay, and each BatchNorm's epsilon."""

    folds: dict[str, str]  # BN path -> path of the convolution that feeds it
    kept: tuple[str, ...]  # BN paths that read something other than a convolution's output
    epsilon: dict[str, float]


def _module_class(factory: Any) -> type | None:
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory if isinstance(factory, type) else None


def _inference_model(model: nn.Module) -> nn.Module:
    """``model`` checked for foldability; rematerialization (a backward-pass trade) is dropped.

    Inside ``nn.remat`` a convolution's output and the BatchNorm's input are different tracers, which would hide
    the pair; for inference remat changes nothing.
    """
    for field in ("conv", "norm"):
        if not hasattr(model, field):
            raise TypeError(
                f"fold_batchnorm needs a model with injectable `conv` and `norm` (fusionjax's ResNet, DenseNet); "
                f"{type(model).__name__} has no `{field}`."
            )
    conv_class, norm_class = _module_class(model.conv), _module_class(model.norm)
    if conv_class is not Conv2d:
        raise TypeError(f"fold_batchnorm folds into fusionjax.layers.Conv2d; this model's conv is {model.conv!r}.")
    if norm_class is None or not issubclass(norm_class, nn.BatchNorm):
        raise ValueError(
            f"fold_batchnorm folds BatchNorm only; this model's norm is {model.norm!r}. GroupNorm and other "
            "norms compute their statistics from the input at inference too, so they cannot be folded."
        )
    if getattr(model, "memory_efficient", False):
        model = model.clone(memory_efficient=False)
    return model


def folding_plan(model: nn.Module, variables: dict) -> FoldingPlan:
    """Trace ``model`` once (shapes only, nothing runs) and pair every BatchNorm with the convolution feeding it."""
    model = _inference_model(model)
    conv_outputs: dict[int, tuple[str, jax.Array]] = {}  # id of a conv's output -> (conv path, the output kept alive)
    folds: dict[str, str] = {}
    kept: list[str] = []
    epsilon: dict[str, float] = {}

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(module, nn.BatchNorm) and _path(module) not in epsilon:
            path = _path(module)
            if module.axis != -1 or module.use_running_average is False:
                raise ValueError(f"{path}: only BatchNorm over the last (channel) axis, in eval mode, folds.")
            epsilon[path] = module.epsilon
            source = conv_outputs.get(id(args[0]))
            if source is not None and source[1] is args[0]:
                folds[path] = source[0]
            else:
                kept.append(path)
        out = next_fun(*args, **kwargs)
        if isinstance(module, Conv2d):
            conv_outputs[id(out)] = (_path(module), out)
        return out

    size = 64  # any size the model accepts gives the same pairs; 64 survives every zoo model's downsampling
    image = jax.ShapeDtypeStruct((1, size, size, model.in_channels), jnp.float32)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(functools.partial(model.apply, train=False), variables, image)
    convs_folded_into = list(folds.values())
    if len(set(convs_folded_into)) != len(convs_folded_into):
        raise ValueError(f"fold_batchnorm: a convolution feeds two BatchNorms, which cannot both fold: {folds}.")
    return FoldingPlan(folds, tuple(kept), epsilon)


def fold_batchnorm(model: nn.Module, variables: dict) -> tuple[nn.Module, dict]:
    """Fold every eval-mode BatchNorm of ``model`` into the convolution that feeds it (see the module docstring).

    Returns ``(folded_model, folded_variables)``: the same model class with ``conv``/``norm`` swapped for
    ``FoldedConv``/``FoldedNorm`` and variables holding ``params`` only. ``folded_model.apply(folded_variables,
    x)`` equals ``model.apply(variables, x, train=False)`` to float32 rounding (≈1e-6 relative).
    Assumes a convolution whose output a BatchNorm reads feeds nothing else (true of every model in the zoo).
    """
    inference_model = _inference_model(model)
    if "params" not in variables or "batch_stats" not in variables:
        raise ValueError(
            "fold_batchnorm needs the model's variables with 'params' and 'batch_stats' (what model.init or "
            f"training returns); got collections {sorted(variables)}."
        )
    plan = folding_plan(model, variables)
    params = {k: np.asarray(v, np.float64) for k, v in traverse_util.flatten_dict(variables["params"], sep="/").items()}
    stats = {k: np.asarray(v, np.float64)
             for k, v in traverse_util.flatten_dict(variables["batch_stats"], sep="/").items()}

    def affine(bn: str) -> tuple[np.ndarray, np.ndarray]:
        mean, var = stats.pop(f"{bn}/mean"), stats.pop(f"{bn}/var")
        gamma = params.pop(f"{bn}/scale", np.ones_like(mean))
        beta = params.pop(f"{bn}/bias", np.zeros_like(mean))
        scale = gamma / np.sqrt(var + plan.epsilon[bn])
        return scale, beta - mean * scale

    for bn, conv in plan.folds.items():
        scale, shift = affine(bn)
        params[f"{conv}/kernel"] = params[f"{conv}/kernel"] * scale  # HWIO: the last axis is the output channel
        params[f"{conv}/bias"] = params.get(f"{conv}/bias", 0.0) * scale + shift
    for bn in plan.kept:
        params[f"{bn}/scale"], params[f"{bn}/bias"] = affine(bn)
    if stats:
        raise ValueError(f"fold_batchnorm: batch statistics of no BatchNorm the model calls: {sorted(stats)}.")

    conv_factory = inference_model.conv
    conv_kwargs = dict(conv_factory.keywords) if isinstance(conv_factory, functools.partial) else {}
    conv_args = conv_factory.args if isinstance(conv_factory, functools.partial) else ()
    folded_model = inference_model.clone(
        conv=functools.partial(FoldedConv, *conv_args, biased=frozenset(plan.folds.values()), **conv_kwargs),
        norm=functools.partial(FoldedNorm, folded=frozenset(plan.folds)),
    )
    folded_params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    return folded_model, {"params": traverse_util.unflatten_dict(folded_params, sep="/")}
