"""``fusionjax-export DIR --format stablehlo|onnx --out FILE``: a trained or converted model as a deployable file.

``export_directory`` is the same from Python. The steps, in order: load the checkpoint (``sources``), cast to the
compute dtype, fold BatchNorm, export (int8: calibrate on the run's training images first), verify against the
model in this process, write the artifact and its card atomically.
"""

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax import cards, writes
from fusionjax.export import artifact, sources
from fusionjax.export.errors import ExportError, ImageSizeError

FORMATS = ("stablehlo", "onnx")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class UnknownFormatError(ExportError):
    """--format names no format this exporter writes."""


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _batch(text: str) -> int | None:
    return None if text == "dynamic" else _positive_int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusionjax-export",
        description="Export a fusionjax-train workdir or a fusionjax-convert checkpoint as StableHLO (jax.export; "
                    "reloads with only jax and flatbuffers installed) or ONNX (onnxruntime, TensorRT), with a card "
                    "FILE.card.json beside it. docs/export.md.")
    parser.add_argument("directory", help="a training workdir (config.json, checkpoints/) or a converted checkpoint "
                                          "(card.json)")
    parser.add_argument("--format", required=True, help="stablehlo or onnx")
    parser.add_argument("--out", required=True, help="the file to write; its card goes to FILE.card.json")
    parser.add_argument("--batch", type=_batch, default=None, metavar="N|dynamic",
                        help="a fixed batch size, or dynamic (the default)")
    parser.add_argument("--image-size", type=_positive_int, default=None, metavar="S",
                        help="S×S images (default: the size the model was trained or converted at)")
    parser.add_argument("--dtype", default="float32", choices=tuple(DTYPES),
                        help="compute dtype (bfloat16: StableHLO only; the input stays float32)")
    parser.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                        help="fold eval-mode BatchNorm into the convolutions (default: on)")
    parser.add_argument("--int8", action="store_true",
                        help="post-training int8: weights per channel, activations per tensor, calibrated on the "
                             "workdir's training images")
    parser.add_argument("--calibration", type=_positive_int, default=256, metavar="N",
                        help="number of training images to calibrate int8 on (default 256)")
    parser.add_argument("--verify", action="store_true",
                        help="run the artifact here against the model (float32: ≤ 1e-5 relative) before keeping "
                             "it, and print the error measured; with --int8, also report int8 and float32 top-1 on "
                             "the eval split")
    parser.add_argument("--checkpoint", default="latest", metavar="latest|best|STEP",
                        help="which checkpoint of a workdir (default latest)")
    parser.add_argument("--nchw", action="store_true", help="take images as (N, C, H, W) instead of (N, H, W, C)")
    parser.add_argument("--platforms", default="cpu", metavar="cpu,cuda,tpu",
                        help="StableHLO: the platforms the artifact runs on (default cpu)")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier export in FILE (a file with its FILE.card.json); any other file is "
                             "never replaced")
    return parser


def export_directory(directory: str, out: str, *, artifact_format: str, batch: int | None = None,
                     image_size: int | None = None, dtype: str = "float32", fold_bn: bool = True, int8: bool = False,
                     calibration: int = 256, verify: bool = False, checkpoint: str = "latest", nchw: bool = False,
                     platforms: Sequence[str] = ("cpu",), force: bool = False) -> Path:
    """The command line's work: see ``fusionjax-export --help``. Returns the path written."""
    if artifact_format not in FORMATS:
        raise UnknownFormatError(f"Unknown format {artifact_format!r}; --format must be one of {', '.join(FORMATS)}.")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    if artifact_format == "onnx" and dtype != "float32":
        raise ExportError("ONNX export is float32 only (onnxruntime's CPU kernels have no bfloat16 convolutions); "
                          "use --int8 for a smaller, faster ONNX model, or --format stablehlo for bfloat16.")
    if artifact_format == "stablehlo" and verify and "cpu" not in platforms:
        raise ExportError("--verify runs the artifact on this machine's CPU: add cpu to --platforms.")
    _check_replaceable(Path(out), force)
    writes.check_directory_path(out)

    source = sources.load(directory, checkpoint)
    input_shape = _input_shape(source, image_size)
    model, variables = source.model, source.variables
    if dtype != "float32":
        model = model.clone(dtype=DTYPES[dtype])
    if fold_bn:
        model, variables = _fold(model, variables)
    job = _Job(source, model, variables, artifact.input_spec(input_shape, batch, nchw=nchw), nchw, verify,
               _calibration(source, calibration) if int8 else None)
    if artifact_format == "onnx":
        payload, details = _onnx(job, input_shape, batch)
    else:
        payload, details = _stablehlo(job, platforms)
    card = artifact.make_card(artifact_format=artifact_format, architecture=source.architecture, spec=job.spec,
                              nchw=nchw, normalization=source.normalization, eval_resize=source.eval_resize,
                              classes=source.classes, source=source.origin, dtype=dtype, batchnorm_folded=fold_bn,
                              **details)
    with writes.writing(out):
        return artifact.write_artifact(out, payload, card, force=force)


def _check_replaceable(out: Path, force: bool) -> None:
    """Refuse an existing ``out`` or card, and with ``force`` anything but an earlier export: a file whose card
    beside it names an export format (a card alone, an interrupted export's, is replaced too)."""
    card = artifact.card_path(out)
    if out.is_dir():
        raise FileExistsError(f"{out} is a directory; --out names the file to write, e.g. {out / 'model.onnx'}.")
    if not (out.exists() or card.exists()):
        return
    if not _is_export_card(card):
        raise FileExistsError(f"{out if out.exists() else card} exists and {card.name} is no export card: it is not "
                              "an earlier export, so it is never replaced, --force or not. Choose another --out.")
    if not force:
        raise FileExistsError(f"{out} holds an earlier export; choose another --out, or pass --force to replace it.")


def _is_export_card(path: Path) -> bool:
    try:
        return cards.read_json(path).get("format") in FORMATS
    except (OSError, ValueError, AttributeError):  # missing, unreadable, not JSON, not an object
        return False


@dataclasses.dataclass(frozen=True)
class _Job:
    source: sources.Source
    model: object
    variables: dict
    spec: jax.ShapeDtypeStruct
    nchw: bool
    verify: bool
    calibration_images: np.ndarray | None  # NHWC; None: float32 export

    @property
    def forward(self):
        return artifact.image_function(self.model, self.variables, nchw=self.nchw)


def _onnx(job: _Job, input_shape, batch) -> tuple[bytes, dict]:
    from fusionjax.export import onnx as onnx_export
    from fusionjax.export.quantize import quantize_onnx

    proto = onnx_export.to_onnx(job.model, job.variables, input_shape, batch=batch, nchw=job.nchw)
    details = {"onnx_opset": onnx_export.OPSET}
    if job.verify:  # the float32 graph against the model; int8 is reported as accuracy below
        details["verification"] = artifact.check_parity(onnx_export.runner(proto), jax.jit(job.forward), job.spec,
                                                        "The ONNX model")
    if job.calibration_images is not None:
        proto = quantize_onnx(proto, _layout(job.calibration_images, job.nchw))
        details["int8"] = _int8_report(job, onnx_export.runner(proto), "onnxruntime static QDQ quantization")
    return proto.SerializeToString(), details


def _stablehlo(job: _Job, platforms: Sequence[str]) -> tuple[bytes, dict]:
    from fusionjax.export import stablehlo
    from fusionjax.export.quantize import int8_apply

    artifact.check_takes(job.forward, job.spec, job.source.architecture)
    details = {"platforms": list(platforms)}
    exported_fn = job.forward
    if job.calibration_images is not None:
        int8_forward = int8_apply(job.model, job.variables, job.calibration_images)
        exported_fn = (lambda images: int8_forward(jnp.transpose(images, (0, 2, 3, 1)))) if job.nchw else int8_forward
        details["int8"] = _int8_report(job, exported_fn, "fusionjax.export.quantize.int8_apply")
    payload = stablehlo.export_function(exported_fn, job.spec, platforms).serialize()
    if job.verify:  # the reloaded artifact against the function it was exported from (int8 included)
        details["verification"] = artifact.check_parity(stablehlo.load_stablehlo(payload).call, jax.jit(exported_fn),
                                                        job.spec, "The reloaded StableHLO artifact")
    return payload, details


def _input_shape(source: sources.Source, image_size: int | None) -> tuple[int, int, int]:
    height, width, channels = source.image_shape
    if image_size is None:
        return height, width, channels
    from fusionjax.models.registry import get_model_spec

    minimum = get_model_spec(source.architecture).min_input_size
    if image_size < minimum:
        raise ImageSizeError(f"{source.architecture} needs images of at least {minimum}×{minimum} (its last stage "
                             f"must keep one cell); --image-size {image_size} is too small.")
    return image_size, image_size, channels


def _fold(model, variables):
    from fusionjax.deploy import fold_batchnorm

    try:
        return fold_batchnorm(model, variables)
    except (TypeError, ValueError) as error:
        raise ExportError(f"BatchNorm folding does not apply: {error} Export with --no-fold-bn.") from None


def _calibration(source: sources.Source, count: int) -> np.ndarray:
    if source.calibration_images is None:
        raise ExportError("--int8 calibrates on a training workdir's own training images; a converted checkpoint "
                          "has none. Quantize from Python with fusionjax.export.quantize_onnx(proto, images) or "
                          "int8_apply(model, variables, images).")
    return source.calibration_images(count)


def _layout(images: np.ndarray, nchw: bool) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if nchw else images


def _int8_report(job: _Job, int8_run, method: str) -> dict:
    """How the int8 artifact was made and, with --verify, its top-1 beside float32's on the eval split."""
    report = {"method": method, "calibration_images": len(job.calibration_images), "calibrated_on": "training split",
              "weights": "int8, symmetric, per output channel", "activations": "int8, per tensor (min/max)"}
    if not job.verify or job.source.evaluation_batches is None:
        return report
    float_run = jax.jit(job.forward)
    correct, total = {"float32": 0, "int8": 0}, 0
    for batch in job.source.evaluation_batches():
        keep = batch["mask"] > 0
        images, labels = _layout(batch["image"][keep], job.nchw), batch["label"][keep]
        for name, run in (("float32", float_run), ("int8", int8_run)):
            logits = _in_batches(run, images, job.spec.shape[0])
            correct[name] += int(np.sum(np.argmax(logits, -1) == labels))
        total += len(labels)
    return {**report, "eval_images": total, "top1_float32": correct["float32"] / total,
            "top1_int8": correct["int8"] / total}


def _in_batches(run, images: np.ndarray, batch) -> np.ndarray:
    """``run`` over ``images``; an artifact with a fixed batch size gets slices of that size, the last zero-padded."""
    if not isinstance(batch, int):
        return np.asarray(run(images))
    padded = np.concatenate([images, np.zeros((-len(images) % batch, *images.shape[1:]), images.dtype)])
    return np.concatenate([np.asarray(run(padded[i:i + batch])) for i in range(0, len(padded), batch)])[:len(images)]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments (``argv`` without the program's name), parsed as ``main`` parses them."""
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    platforms = tuple(p for p in args.platforms.split(",") if p)
    try:
        path = export_directory(
            args.directory, args.out, artifact_format=args.format, batch=args.batch, image_size=args.image_size,
            dtype=args.dtype, fold_bn=args.fold_bn, int8=args.int8, calibration=args.calibration, verify=args.verify,
            checkpoint=args.checkpoint, nchw=args.nchw, platforms=platforms, force=args.force)
    except ExportError as error:
        print(f"fusionjax-export: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a refused --out, a failed write: PATH: reason
        print(f"fusionjax-export: error: {writes.message(error)}", file=sys.stderr)
        return 1
    print(f"Wrote {path} and {artifact.card_path(path)}")
    for line in _measured(cards.read_json(artifact.card_path(path))):
        print(line)
    return 0


def _measured(card: dict) -> list[str]:
    """What --verify measured, as the card records it: the artifact's error against the model and its tolerance,
    and int8's top-1 beside float32's."""
    lines = []
    if "verification" in card:
        check = card["verification"]
        lines.append(f"Verified: max |artifact - model| / max |model| = {check['relative_error']:.3e} (tolerance "
                     f"{check['tolerance']:.0e}) on {check['inputs']} images, batch sizes "
                     + ", ".join(map(str, check["batch_sizes"])))
    if "top1_int8" in card.get("int8", {}):
        int8 = card["int8"]
        lines.append(f"int8 top-1 {int8['top1_int8']:.4f}, float32 top-1 {int8['top1_float32']:.4f} on "
                     f"{int8['eval_images']} eval images")
    return lines
