"""``fusionjax-convert [--from torchvision|timm|keras] ARCH FILE --out DIR [--verify]``: weights to an Orbax
directory with a ``card.json``."""

import argparse
import sys
from pathlib import Path

import numpy as np

from fusionjax import writes
from fusionjax.convert import frameworks
from fusionjax.convert.checkpoint import check_replaceable, write_converted
from fusionjax.convert.errors import ConversionError
from fusionjax.convert.torch_files import sha256
from fusionjax.models.registry import UnknownModelError, list_models

VERIFY_IMAGES = 2  # random N(0, 1) images, the scale of normalized ImageNet inputs, seed 0
FILES = {"torchvision": ".pth/.pt or .safetensors", "timm": ".pth/.pt or .safetensors",
         "keras": ".keras, .weights.h5 or Keras 2 .h5"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fusionjax-convert",
        description="Convert torchvision, timm or Keras weights to a fusionjax Orbax checkpoint with a card.json; "
                    "load it with fusionjax.load_pretrained(DIR). Mismatched keys are named, pickled code is never "
                    "run, and the output directory appears complete or not at all.",
    )
    parser.add_argument("--from", dest="source", choices=frameworks.SOURCES, default="torchvision",
                        help="the library the weights come from (default: torchvision)")
    parser.add_argument("arch", help="the library's model name, e.g. resnet50 (torchvision), resnet50d, seresnet18 or "
                                     "any other timm ResNet or DenseNet the zoo expresses (timm), ResNet50V2 (keras); "
                                     "or the zoo's name")
    parser.add_argument("checkpoint", type=Path, metavar="file",
                        help="the weights: " + "; ".join(f"{k}: {v}" for k, v in FILES.items()))
    parser.add_argument("--out", type=Path, required=True, help="the directory to write (must not exist or be empty)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the file's)")
    parser.add_argument("--verify", action="store_true",
                        help=f"run the source library side by side on {VERIFY_IMAGES} random images, print each "
                             "stage's error and the tolerances, and refuse to write unless every stage agrees (needs "
                             "that library: torch/torchvision, timm, keras)")
    parser.add_argument("--force", action="store_true",
                        help="replace an earlier output of this command in --out (exactly card.json and variables/); "
                             "a directory holding anything else is never replaced")
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments (``argv`` without the program's name), parsed as ``main`` parses them."""
    return _parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return _convert(args)
    except ConversionError as error:
        print(f"fusionjax-convert: error: {_for_the_command_line(error, args)}", file=sys.stderr)
        return 1
    except OSError as error:  # a missing or unreadable file, a refused --out, a failed write: PATH: reason
        print(f"fusionjax-convert: error: {writes.message(error)}", file=sys.stderr)
        return 1
    except (UnknownModelError, ImportError, ValueError) as error:
        print(f"fusionjax-convert: error: {error}", file=sys.stderr)
        return 1


def _for_the_command_line(error: ConversionError, args: argparse.Namespace) -> str:
    """The error with the fix a command-line user can apply (the Python API's say strict=False or model=)."""
    report = error.report
    if report is None:
        return str(error)
    if report.classes:
        fix = (f"pass --num-classes {report.classes[0]}, or leave --num-classes out to keep the file's "
               "classifier.")
    else:
        fix = f"check ARCH ({args.arch}) and --from ({args.source}): the file holds another architecture."
    return f"{report}\n  {fix}"


def _read(source: str, arch: str, path: Path, model):
    if source == "keras":
        from fusionjax.convert.keras import from_keras

        return from_keras(arch, path, model=model)
    if source == "timm":
        from fusionjax.convert.timm import from_timm

        return from_timm(arch, path, model=model)
    from fusionjax.convert.torchvision import from_torchvision

    return from_torchvision(arch, path, model=model)


def _convert(args: argparse.Namespace) -> int:
    from fusionjax import __version__

    check_replaceable(args.out, args.force)  # before the work, not after it
    spec = frameworks.find_spec(args.source, args.arch)
    model = None if args.num_classes is None else frameworks.model_for(spec, num_classes=args.num_classes)
    variables = _read(args.source, args.arch, args.checkpoint, model)
    model = model or frameworks.model_for_variables(spec, variables)
    verification = None
    if args.verify:
        from fusionjax.convert import crosscheck

        images = np.random.default_rng(0).standard_normal(
            (VERIFY_IMAGES, spec.input_size, spec.input_size, model.in_channels), dtype=np.float32)
        result = crosscheck.compare(spec.name, args.checkpoint, variables, images, source=args.source, model=model)
        print(result)
        if not result.ok:
            print(f"fusionjax-convert: error: verification failed at {result.first_divergence}; nothing written.",
                  file=sys.stderr)
            return 2
        verification = result.as_dict()
    card = {
        "num_classes": model.num_classes, "from": args.source, "from_model": getattr(spec, args.source),
        "source": args.checkpoint.name, "sha256": sha256(args.checkpoint), "fusionjax_version": __version__,
        "normalization": frameworks.normalization(args.source, spec),
        "eval_resize": spec.weights_from(args.source).eval_resize,
        "classes": frameworks.class_names(args.source, spec, model.num_classes), "verification": verification,
    }
    if args.source == "timm" and spec.name not in list_models():  # read from timm: the card says how to build it
        from fusionjax.convert.timm_architecture import architecture

        card["architecture"] = architecture(spec.name)
    out = write_converted(args.out, spec.name, variables, card, force=args.force)
    print(f"wrote {out} ({spec.name} from {args.source} {getattr(spec, args.source)}, {args.checkpoint.name})")
    return 0
