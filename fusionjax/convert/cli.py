"""``fusionjax-convert ARCH CHECKPOINT --out DIR [--verify]``: a torchvision checkpoint to an Orbax directory."""

import argparse
import sys
from pathlib import Path

import numpy as np

from fusionjax.convert.checkpoint import write_converted
from fusionjax.convert.core import from_torchvision
from fusionjax.convert.keys import ConversionError, torchvision_spec
from fusionjax.convert.sources import sha256
from fusionjax.models.registry import UnknownModelError

VERIFY_IMAGES = 2  # random N(0, 1) images, the scale of normalized ImageNet inputs, seed 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusionjax-convert",
        description="Convert a torchvision checkpoint (.pth/.pt or .safetensors) to a fusionjax Orbax checkpoint "
                    "with a card.json; load it with fusionjax.load_pretrained(DIR).",
    )
    parser.add_argument("arch", help="a torchvision architecture of the zoo, e.g. resnet50 or densenet121")
    parser.add_argument("checkpoint", type=Path, help="the torchvision state_dict file")
    parser.add_argument("--out", type=Path, required=True, help="the directory to write (must not exist or be empty)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default: 1000)")
    parser.add_argument("--verify", action="store_true",
                        help=f"run torchvision side by side on {VERIFY_IMAGES} random images and refuse to write "
                             "unless every stage agrees (needs torch and torchvision)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _convert(args)
    except (ConversionError, UnknownModelError, FileNotFoundError, FileExistsError, ImportError, ValueError) as error:
        print(f"fusionjax-convert: error: {error}", file=sys.stderr)
        return 1


def _convert(args: argparse.Namespace) -> int:
    from fusionjax import __version__
    from fusionjax.models.registry import create_model

    spec = torchvision_spec(args.arch)
    model = create_model(args.arch, num_classes=args.num_classes)
    variables = from_torchvision(args.arch, args.checkpoint, model=model)
    verification = None
    if args.verify:
        from fusionjax.convert.crosscheck import compare

        images = np.random.default_rng(0).standard_normal(
            (VERIFY_IMAGES, spec.input_size, spec.input_size, model.in_channels), dtype=np.float32)
        result = compare(args.arch, args.checkpoint, variables, images, model=model)
        print(result)
        if not result.ok:
            print(f"fusionjax-convert: error: verification failed at {result.first_divergence}; nothing written.",
                  file=sys.stderr)
            return 2
        verification = result.as_dict()
    card = {
        "num_classes": model.num_classes, "source": args.checkpoint.name, "sha256": sha256(args.checkpoint),
        "fusionjax_version": __version__, "verification": verification,
    }
    out = write_converted(args.out, args.arch, variables, card, force=args.force)
    print(f"wrote {out} ({args.arch} from {args.checkpoint.name})")
    return 0
