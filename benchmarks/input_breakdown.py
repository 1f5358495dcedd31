"""Where one image's time goes in the input transforms: fusionjax's steps beside torchvision's, one core.

    python -m benchmarks.input_breakdown [--folder PATH] [--images 300]

In this process, pinned to one core, on the same JPEGs (default: the folder ``benchmarks.input_pipeline`` makes),
milliseconds per image, the best of 3 rounds that alternate fusionjax's steps with torchvision's: reading the file,
the full decode (simplejpeg, as fusionjax decodes JPEGs; Pillow, as torchvision does), the antialiased bilinear
resize of a RandomResizedCrop box to 224, the crop into NumPy, and torchvision's ToTensor and Normalize; then each
library's whole training and evaluation transforms. A pipeline that decodes every image whole cannot beat decode +
resize.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import input_pipeline
from benchmarks.harness import Timed, load_average, pin_to_cores, time_rounds

SIZE = input_pipeline.IMAGE_SIZE
ROUNDS = 3


def breakdown(files: list[str]) -> dict[str, float]:
    import simplejpeg
    import torch

    from fusionjax.torch_compat import import_torchvision
    from fusionjax.train.data import decode
    from fusionjax.train.data.transforms import Transform, array_of, inception_boxes

    torch.set_num_threads(1)
    transforms = import_torchvision().transforms
    blobs = [Path(path).read_bytes() for path in files]
    decoded = [Image.open(io.BytesIO(blob)).convert("RGB") for blob in blobs]
    ours = Transform("inception", SIZE, False, 255.0, (0.0,) * 3, (1.0,) * 3)
    boxes = inception_boxes(np.asarray([(image.height, image.width) for image in decoded]),
                            ours.draw(np.random.default_rng(0), len(decoded)))
    pil_boxes = [(int(left), int(top), int(left + w), int(top + h)) for top, left, h, w in boxes]
    crops = [image.resize((SIZE, SIZE), Image.BILINEAR, box=box) for image, box in zip(decoded, pil_boxes)]
    tensors = [transforms.ToTensor()(crop) for crop in crops]
    normalize = transforms.Normalize(input_pipeline.MEAN, input_pipeline.STD)
    torchvision_train = transforms.Compose([transforms.RandomResizedCrop(SIZE), transforms.RandomHorizontalFlip(),
                                            transforms.ToTensor(), normalize])
    rng = np.random.default_rng(1)

    def fusionjax_whole():
        for start in range(0, len(files), 32):
            images = [decode.open_image(Path(path), "RGB") for path in files[start:start + 32]]
            ours.train(images, ours.draw(rng, len(images)))

    def torchvision_whole(transform):
        def run():
            for path in files:
                with open(path, "rb") as file:  # torchvision's pil_loader
                    image = Image.open(file).convert("RGB")
                transform(image)
        return run

    evaluation = Transform("none", SIZE, False, 255.0, (0.0,) * 3, (1.0,) * 3)
    torchvision_eval = transforms.Compose([transforms.Resize(int(SIZE / 0.875)), transforms.CenterCrop(SIZE),
                                           transforms.ToTensor(), normalize])

    def fusionjax_eval():
        for start in range(0, len(files), 32):
            evaluation.eval([decode.open_image(Path(path), "RGB") for path in files[start:start + 32]])

    # "jax" marks fusionjax's side (and the steps both share), "torch" torchvision's: time_rounds alternates them.
    steps = [
        ("jax", "read the file", lambda: [Path(path).read_bytes() for path in files]),
        ("jax", "full decode (simplejpeg, RGBX read in place by PIL: fusionjax's JPEG decode)", lambda: [
            decode.image_on_rgbx(simplejpeg.decode_jpeg(blob, "RGBX")) for blob in blobs]),
        ("torch", "full decode (PIL, RGB: torchvision's loader)",
         lambda: [Image.open(io.BytesIO(b)).convert("RGB") for b in blobs]),
        ("jax", "resize the crop box to 224 (PIL bilinear, antialiased)",
         lambda: [image.resize((SIZE, SIZE), Image.BILINEAR, box=box) for image, box in zip(decoded, pil_boxes)]),
        ("jax", "crop into NumPy (Arrow view, OpenCV packs RGBX: fusionjax's)",
         lambda: [array_of(crop) for crop in crops]),
        ("torch", "torchvision ToTensor", lambda: [transforms.ToTensor()(crop) for crop in crops]),
        ("torch", "torchvision Normalize", lambda: [normalize(tensor) for tensor in tensors]),
        ("jax", "fusionjax training transform, whole (uint8 batches)", fusionjax_whole),
        ("torch", "torchvision training transform, whole (loader to normalized tensor)",
         torchvision_whole(torchvision_train)),
        ("jax", "fusionjax evaluation transform, whole (uint8 batches)", fusionjax_eval),
        ("torch", "torchvision evaluation transform, whole (loader to normalized tensor)",
         torchvision_whole(torchvision_eval)),
    ]
    timed = [Timed(framework, label, "train", run) for framework, label, run in steps]
    time_rounds(timed, ROUNDS)
    return {variant.label: variant.min_s / len(files) * 1e3 for variant in timed}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="a folder of JPEGs (searched recursively); default: one made "
                                                    "as benchmarks.input_pipeline makes it")
    parser.add_argument("--images", type=int, default=300, help="how many of the folder's JPEGs to time")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.folder is not None and not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is not a folder")
    with tempfile.TemporaryDirectory() as made:
        folder = args.folder
        if folder is None:
            folder = Path(made)
            input_pipeline.write_folder(folder, classes=10, per_class=60)
        files = sorted(str(path) for path in folder.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg"))
        files = files[:args.images]
        if not files:
            parser.error(f"--folder {folder} holds no .jpg or .jpeg files")
        pin_to_cores({min(pin_to_cores())})
        load_before = load_average()
        rows = breakdown(files)
    print(f"{len(files)} JPEGs, one core; load average before {load_before}, after {load_average()}")
    print("| step | ms per image | images/s |\n|---|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms:.3f} | {1e3 / ms:,.0f} |")


if __name__ == "__main__":
    main()
