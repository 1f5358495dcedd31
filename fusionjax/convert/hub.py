"""torchvision's ImageNet weights: ``pretrained(arch)`` downloads, verifies, converts once and caches them.

The weight URL and its SHA-256 prefix come from torchvision's own weights enums
(``torchvision.models.get_model_weights(arch)``). The cache lives in ``$FUSIONJAX_CACHE`` (default
``~/.cache/fusionjax``): ``torchvision/<file>.pth`` is the download, ``converted/<arch>.<file stem>/`` the Orbax
checkpoint made from it, which later calls load directly.
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import flax.linen as nn

from fusionjax.convert import frameworks
from fusionjax.convert.checkpoint import CARD, load_pretrained, write_converted
from fusionjax.convert.torch_files import sha256
from fusionjax.convert.torchvision import from_torchvision

PRETRAINED_CLASSES = 1000


def cache_dir() -> Path:
    return Path(os.environ.get("FUSIONJAX_CACHE") or os.path.expanduser("~/.cache/fusionjax"))


def torchvision_weights(arch: str, weights: str | None = None):
    """torchvision's weights enum entry: ``weights`` names one (``'IMAGENET1K_V1'``, ``'IMAGENET1K_V2'``…);
    None means torchvision's ``DEFAULT``."""
    from fusionjax.torch_compat import import_torchvision

    enum = import_torchvision().models.get_model_weights(frameworks.find_spec("torchvision", arch).torchvision)
    if weights is None:
        return enum.DEFAULT
    try:
        return enum.verify(weights)  # torchvision's own lookup: "IMAGENET1K_V2", "ResNet50_Weights.IMAGENET1K_V2"
    except (KeyError, TypeError):
        known = ", ".join(enum.__members__)
        raise ValueError(f"{arch} has no torchvision weights {weights!r}; it has {known}.") from None


def pretrained(arch: str, weights: str | None = None, **model_options) -> tuple[nn.Module, dict]:
    """``(model, variables)``: ``create_model(arch, **model_options)`` holding torchvision's ImageNet ``weights``
    (``'IMAGENET1K_V1'``, ``'IMAGENET1K_V2'``…; default torchvision's DEFAULT), downloaded once into
    ``$FUSIONJAX_CACHE``, checked against torchvision's SHA-256 prefix, converted once and read from there after.
    ``model_options`` are ``create_model``'s, e.g. ``dtype=jnp.bfloat16``; the classifier stays 1000-class.
    """
    from fusionjax.models.registry import create_model

    model = create_model(arch, **model_options)
    return model, pretrained_variables(arch, model, weights)


def pretrained_variables(name: str, model: nn.Module, weights: str | None = None) -> dict:
    """The variables of torchvision's ``weights`` (default: torchvision's DEFAULT) for ``model``."""
    frameworks.find_spec("torchvision", name)
    if model.num_classes != PRETRAINED_CLASSES:
        raise ValueError(
            f"torchvision's {name} weights have a {PRETRAINED_CLASSES}-class ImageNet classifier, but the model has "
            f"num_classes={model.num_classes}. Load them with fusionjax.pretrained({name!r}) and replace "
            "the classifier's parameters, or convert with from_torchvision(..., strict=False, model=your_model)."
        )
    entry = torchvision_weights(name, weights)
    file_name = os.path.basename(urlparse(entry.url).path)
    converted = cache_dir() / "converted" / f"{name}.{Path(file_name).stem}"
    if (converted / CARD).is_file():
        return load_pretrained(converted, model=model)[1]
    checkpoint = _download(entry.url, cache_dir() / "torchvision" / file_name)
    variables = from_torchvision(name, checkpoint, model=model)
    card = {
        "num_classes": PRETRAINED_CLASSES, "source": file_name, "sha256": sha256(checkpoint),
        "weights": str(entry), "url": entry.url, "fusionjax_version": _version(),
        "normalization": frameworks.IMAGENET, "verification": None,
    }
    write_converted(converted, name, variables, card, force=True)
    return variables


def _download(url: str, destination: Path) -> Path:
    """``url`` at ``destination`` (fetched unless already there) whose SHA-256 starts with the hash in its name."""
    import torch.hub

    match = torch.hub.HASH_REGEX.search(destination.name)
    prefix = match.group(1) if match else None
    if destination.is_file():
        digest = sha256(destination)
        if prefix and not digest.startswith(prefix):
            raise ValueError(f"{destination} has SHA-256 {digest}, not the {prefix}… its name promises; it is "
                             "corrupt or another file. Delete it to download it again.")
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:  # writes to a temporary file and renames it only once the hash matches
        torch.hub.download_url_to_file(url, str(destination), hash_prefix=prefix, progress=sys.stderr.isatty())
    except RuntimeError as error:
        raise ValueError(f"Downloading {url} failed its hash check: {error}") from None
    return destination


def _version() -> str:
    from fusionjax import __version__

    return __version__
