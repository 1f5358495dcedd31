"""``fusionjax-predict SOURCE IMAGE_OR_DIR… [--top-k K] [--json]``: each image's most probable classes, by name.

SOURCE is anything ``fusionjax.sources.load`` reads: a training workdir ``DIR[@latest|@best|@STEP]``, a
``fusionjax-convert`` directory, ``torchvision:NAME[:WEIGHTS]``, or an artifact of ``fusionjax-export`` (StableHLO or
ONNX) with its card. Each image is preprocessed as the weights' own evaluation did, as their card records it:
converted to the card's channels (grayscale, RGB or BGR; RGBA and palette images included), brought to the input's
size as ``eval_resize`` says (``fusionjax.cards``: the shorter side resized and the centre square taken, or a
resize to the input's size, which leaves a fixed-size data set's own images as they are), then ``x / pixel_max``
and ``(x - mean) / std``. Probabilities are the softmax of the logits. A directory means the images directly in it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fusionjax import cards, sources, writes

BATCH_SIZE = 32  # images per forward pass
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class PredictError(ValueError):
    """An image or a source that cannot be predicted on; the message names it and the fix."""


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line's arguments (parsing only: nothing is loaded)."""
    parser = argparse.ArgumentParser(
        prog="fusionjax-predict",
        description="Print each image's top-k classes by name with their probabilities, preprocessed as the weights "
                    "expect (as their own evaluation did: the card's channels, resize and normalization). "
                    "docs/training.md.")
    parser.add_argument("source", metavar="SOURCE",
                        help="a training workdir DIR[@latest|@best|@STEP], a fusionjax-convert directory, "
                             "torchvision:NAME[:WEIGHTS], or an exported FILE (StableHLO or ONNX) with FILE.card.json")
    parser.add_argument("images", metavar="IMAGE_OR_DIR", nargs="+",
                        help="image files, or directories whose images are all predicted")
    parser.add_argument("--top-k", type=_positive_int, default=5, metavar="K",
                        help="how many classes to print per image (default 5)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document: [{image, top_k: [{class, index, probability}]}]")
    return parser.parse_args(argv)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def image_files(paths: Sequence[str]) -> list[Path]:
    """The files ``paths`` name: files as given, directories as the image files directly in them, sorted."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.casefold() in IMAGE_SUFFIXES)
            if not found:
                raise PredictError(f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); pass images or a "
                                   "directory of them.")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise PredictError(f"{path} does not exist; pass image files or directories of them.")
    return files


def preprocess(path: Path, image_shape: Sequence[int], normalization: dict, eval_resize: dict) -> np.ndarray:
    """The float32 (H, W, C) input the weights expect from the image file ``path``: ``eval_resize`` and
    ``normalization`` in the cards' format."""
    from PIL import Image, UnidentifiedImageError

    size, channels = image_shape[0], image_shape[-1]
    order = normalization["channel_order"]
    try:
        with Image.open(path) as image:
            # Palette images with a transparent colour convert through RGBA, as PIL asks; RGB drops the alpha.
            image = image.convert("RGBA") if image.mode == "P" else image
            image = image.convert("L" if order == "grayscale" else "RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise PredictError(f"{path} is not an image PIL can read ({error}); pass image files.") from None
    pixels = _resize(image, size, eval_resize)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] != channels:
        raise PredictError(f"the source's card says {order} images, but the model takes {channels} channels; its "
                           "card is wrong: export or convert it again.")
    if order == "BGR":
        pixels = pixels[..., ::-1]
    mean, std = np.asarray(normalization["mean"], np.float32), np.asarray(normalization["std"], np.float32)
    return ((pixels.astype(np.float32) / np.float32(normalization["pixel_max"]) - mean) / std).astype(np.float32)


def _resize(image, size: int, eval_resize: dict) -> np.ndarray:
    """The PIL ``image`` at ``size`` × ``size`` as ``eval_resize`` says (``fusionjax.cards``)."""
    from PIL import Image

    if eval_resize["method"] == cards.RESIZE:
        return np.asarray(image if image.size == (size, size) else image.resize((size, size), Image.BILINEAR))
    # torchvision's Resize(shorter side) + CenterCrop(size), as the trainer evaluates.
    width, height = image.size
    short = cards.shorter_side(size, eval_resize)
    new_h, new_w = (short, int(short * width / height)) if height <= width else (int(short * height / width), short)
    resized = np.asarray(image.resize((new_w, new_h), Image.BILINEAR))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return resized[top:top + size, left:left + size]


def logits_function(source: sources.Source) -> Callable[[np.ndarray], np.ndarray]:
    """``images (N, H, W, C) -> logits (N, classes)`` for any source: the model, or the exported artifact."""
    if source.variables is not None:
        import jax

        model, variables = source.model(), source.variables
        return jax.jit(lambda images: model.apply(variables, images, train=False))
    card = source.origin["card"]
    if source.kind == "onnx":
        from fusionjax.export.onnx import runner

        run = runner(source.origin["path"])
    else:
        from fusionjax.export.stablehlo import load_stablehlo

        run = load_stablehlo(source.origin["path"]).call
    nchw, batch = card["input"]["layout"] == "NCHW", card["input"]["batch"]

    def artifact_logits(images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images.transpose(0, 3, 1, 2)) if nchw else images
        if batch == "dynamic":
            return np.asarray(run(images))
        count = len(images)  # a fixed batch size: zero-padded to it, the padding's logits dropped
        padded = np.concatenate([images, np.zeros((batch - count, *images.shape[1:]), np.float32)])
        return np.asarray(run(padded))[:count]

    return artifact_logits


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    probabilities = np.exp(shifted)
    return probabilities / probabilities.sum(axis=-1, keepdims=True)


def predict(source: sources.Source, files: Sequence[Path], top_k: int) -> list[dict]:
    """``[{"image", "top_k": [{"class", "index", "probability"}]}]`` for each file, most probable first."""
    if source.normalization is None or source.image_shape is None or source.eval_resize is None:
        raise PredictError(f"{source.origin.get('path', source.arch)} records no input normalization, image size or "
                           "eval resize, so its preprocessing is unknown; train, convert or export it again with this "
                           "fusionjax.")
    if source.eval_resize["method"] not in (cards.RESIZE_SHORTER_CROP, cards.RESIZE):
        raise PredictError(f"{source.origin.get('path', source.arch)} was evaluated with the resize "
                           f"{source.eval_resize}, which this fusionjax does not know; install the fusionjax that "
                           "made it.")
    run = logits_function(source)
    batch = "dynamic" if source.variables is not None else source.origin["card"]["input"]["batch"]
    step = BATCH_SIZE if batch == "dynamic" else batch  # an artifact of a fixed batch takes that many at a time
    results = []
    for start in range(0, len(files), step):
        chunk = files[start:start + step]
        images = np.stack([preprocess(path, source.image_shape, source.normalization, source.eval_resize)
                           for path in chunk])
        for path, probabilities in zip(chunk, softmax(run(images))):
            best = np.argsort(-probabilities, kind="stable")[:top_k]
            results.append({"image": str(path), "top_k": [
                {"class": source.class_name(int(i)), "index": int(i), "probability": float(probabilities[i])}
                for i in best]})
    return results


def _text(results: list[dict]) -> str:
    lines = []
    for result in results:
        lines.append(result["image"])
        lines += [f"  {entry['probability']:.4f}  {entry['class']}" for entry in result["top_k"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        files = image_files(args.images)
        results = predict(sources.load(args.source), files, args.top_k)
    except (PredictError, sources.SourceError) as error:
        print(f"fusionjax-predict: error: {error}", file=sys.stderr)
        return 1
    try:
        writes.print_result(json.dumps(results, indent=2) if args.json else _text(results))
    except OSError as error:  # a full disk under a redirected output
        print(f"fusionjax-predict: error: {writes.message(error)}", file=sys.stderr)
        return 1
    return 0
