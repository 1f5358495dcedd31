"""Side by side: the source library (torchvision, timm, Keras) and fusionjax on the same images, error per stage,
first stage that diverges."""

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from fusionjax.convert import frameworks

STAGE_TAPS = {  # fusionjax feature name → torch module whose output it is (ResNet, DenseNet; torchvision and timm)
    "stem": ("maxpool", "features.pool0"),
    **{f"stage{i}": (f"layer{i}", f"features.denseblock{i}") for i in range(1, 5)},
}
HEADS = ("fc", "classifier")  # the pooled features are their input


@dataclasses.dataclass(frozen=True)
class StageError:
    """``rel`` is max|fusionjax − source| / max|source| over the whole stage output."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_ref: float
    rel: float
    ok: bool


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Per-stage errors of fusionjax against the source library. A stage is within tolerance when
    ``rel <= rtol``; the logits must also have ``max_abs <= atol`` and the same top-1 class for every image."""

    arch: str
    image_shape: tuple[int, ...]
    stages: tuple[StageError, ...]
    top1_agree: bool
    atol: float
    rtol: float
    source: str = "torchvision"

    @property
    def logits(self) -> StageError:
        return self.stages[-1]

    @property
    def first_divergence(self) -> str | None:
        """The first stage past tolerance ("top-1" when only the predicted classes differ), or None."""
        bad = next((stage.name for stage in self.stages if not stage.ok), None)
        return bad or (None if self.top1_agree else "top-1")

    @property
    def ok(self) -> bool:
        return self.first_divergence is None

    def as_dict(self) -> dict:
        return {
            "arch": self.arch, "source": self.source, "images": list(self.image_shape), "atol": self.atol,
            "rtol": self.rtol,
            "ok": self.ok, "first_divergence": self.first_divergence, "top1_agree": self.top1_agree,
            "stages": {s.name: {"max_abs": s.max_abs, "rel": s.rel, "ok": s.ok} for s in self.stages},
        }

    def __str__(self) -> str:
        rows = [f"{self.arch}: fusionjax vs {self.source} on images {self.image_shape} (NHWC), "
                f"rel = max|Δ| / max|{self.source}|, tolerance rel ≤ {self.rtol:g} "
                f"(logits also max|Δ| ≤ {self.atol:g})",
                f"  {'stage':<8} {'shape':<22} {'max|Δ|':>10} {'max|ref|':>10} {'rel':>10}  ok"]
        rows += [f"  {s.name:<8} {str(s.shape):<22} {s.max_abs:>10.3e} {s.max_ref:>10.3e} {s.rel:>10.3e}  "
                 f"{'yes' if s.ok else 'NO'}" for s in self.stages]
        rows.append(f"  top-1 {'identical' if self.top1_agree else 'DIFFERS'}; "
                    + ("all within tolerance" if self.ok else f"first divergence: {self.first_divergence}"))
        return "\n".join(rows)


@functools.lru_cache(maxsize=8)
def _features_fn(model: nn.Module):
    return jax.jit(functools.partial(model.apply, train=False, features=True))


def compare(
    arch: str,
    reference: Any,
    variables: Mapping,
    images: Any,
    *,
    source: str = "torchvision",
    model: nn.Module | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-5,
) -> Comparison:
    """Run the ``source`` library's model and fusionjax on ``images`` and compare every stage (stem, stages,
    pooled, logits).

    ``reference`` is that library's model: a torchvision or timm ``torch.nn.Module`` or its state_dict (a
    mapping or a checkpoint path), or a Keras model or weights file. ``arch`` is either library's name for it
    (``from_torchvision``, ``from_timm``, ``from_keras``). ``images`` is a float batch, NHWC or NCHW (told
    apart by the channel axis). Both sides run in float32: torch in eval mode with TF32 off (the model's
    training mode is restored afterwards), Keras with ``training=False``, fusionjax jitted, all under
    ``jax.default_matmul_precision('highest')`` where JAX computes.
    """
    spec = frameworks.find_spec(source, arch)
    model = model or frameworks.model_for_variables(spec, variables)
    images = _nhwc(images, model.in_channels)
    reference_outputs = _reference_features(source, spec.name, reference, images, model)
    with jax.default_matmul_precision("highest"):
        ours = jax.device_get(_features_fn(model)(variables, images))
    stages = []
    for name, ref in reference_outputs.items():
        got = np.asarray(ours[name], np.float64)
        if got.shape != ref.shape:
            raise ValueError(f"{arch}: stage {name!r} is {got.shape} in fusionjax but {ref.shape} in {source}.")
        max_abs, max_ref = float(np.max(np.abs(got - ref))), float(np.max(np.abs(ref)))
        rel = max_abs / max_ref if max_ref else max_abs
        ok = rel <= rtol and (name != "logits" or max_abs <= atol)
        stages.append(StageError(name, got.shape, max_abs, max_ref, rel, ok))
    top1 = "logits" in reference_outputs and bool(
        np.array_equal(np.argmax(ours["logits"], -1), np.argmax(reference_outputs["logits"], -1)))
    return Comparison(spec.name, tuple(images.shape), tuple(stages), top1, atol, rtol, source)


def _reference_features(source: str, arch: str, reference: Any, images: np.ndarray, model: nn.Module) -> dict:
    if source == "keras":
        from fusionjax.convert.keras import is_keras_model, keras_application, keras_features

        if not is_keras_model(reference):
            reference = keras_application(arch, reference, model.num_classes)
        return keras_features(reference, images, model)
    import torch

    if not isinstance(reference, torch.nn.Module):
        if source == "timm":
            from fusionjax.convert.timm import timm_model as build
        else:
            from fusionjax.convert.torchvision import torchvision_model as build
        reference = build(arch, reference, model.num_classes)
    return _torch_features(reference, images)


def _nhwc(images: Any, channels: int) -> np.ndarray:
    if type(images).__module__.startswith("torch"):
        images = images.detach().cpu().numpy()
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be a 4-D batch, NHWC or NCHW, got shape {images.shape}.")
    if images.shape[-1] == channels:
        return images
    if images.shape[1] == channels:
        return np.ascontiguousarray(images.transpose(0, 2, 3, 1))
    raise ValueError(f"images {images.shape} have {channels} channels neither in the last (NHWC) nor the second axis.")


def _torch_features(torch_model, images: np.ndarray) -> dict[str, np.ndarray]:
    import torch

    modules = dict(torch_model.named_modules())
    captured, handles = {}, []

    def keep(name):
        return lambda module, args, output: captured.__setitem__(name, output)

    for name, candidates in STAGE_TAPS.items():
        found = next((modules[c] for c in candidates if c in modules), None)
        if found is not None:
            handles.append(found.register_forward_hook(keep(name)))
    head = next(modules[h] for h in HEADS if h in modules)
    handles.append(head.register_forward_pre_hook(lambda module, args: captured.__setitem__("pooled", args[0])))
    was_training = torch_model.training
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        torch_model.eval()
        with torch.inference_mode():
            captured["logits"] = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2)).float())
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags
        torch_model.train(was_training)
        for handle in handles:
            handle.remove()
    order = [name for name in (*STAGE_TAPS, "pooled", "logits") if name in captured]
    return {name: _to_nhwc(captured[name].double().numpy()) for name in order}


def _to_nhwc(array: np.ndarray) -> np.ndarray:
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array
