"""torchvision's ImageNet weights: ``pretrained(arch)`` downloads, verifies, converts once and caches them.

The weight URL and its SHA-256 prefix come from torchvision's own weights enums
(``torchvision.models.get_model_weights(arch)``). The cache lives in ``$FUSIONJAX_CACHE`` (default
``~/.cache/fusionjax``): ``torchvision/<file>.pth`` is the download, ``converted/<arch>.<file stem>/`` the Orbax
checkpoint made from it, which later calls load directly. Offline, a file placed at ``torchvision/<file>.pth`` is
used as if downloaded; every way of not getting the weights raises ``PretrainedUnavailableError`` saying the fix.
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import flax.linen as nn

from fusionjax.cards import resize_shorter_crop
from fusionjax.convert import frameworks
from fusionjax.convert.checkpoint import CARD, load_pretrained, write_converted
from fusionjax.convert.errors import ConversionError
from fusionjax.convert.torch_files import sha256
from fusionjax.convert.torchvision import from_torchvision


class PretrainedUnavailableError(ConversionError):
    """``pretrained`` cannot get torchvision's weights here: torch is not installed, the download failed (offline),
    or the file in the cache is not the one the URL names. The one-line message says the fix: the extra to
    install, or the URL and the exact cache path to place the file at."""


def cache_dir() -> Path:
    return Path(os.environ.get("FUSIONJAX_CACHE") or os.path.expanduser("~/.cache/fusionjax"))


def torchvision_weights(arch: str, weights: str | None = None):
    """torchvision's weights enum entry: ``weights`` names one (``'IMAGENET1K_V1'``, ``'IMAGENET1K_V2'``…);
    None means torchvision's ``DEFAULT``."""
    from fusionjax.torch_compat import import_torchvision

    spec = frameworks.find_spec("torchvision", arch)
    try:
        torchvision = import_torchvision()
    except ImportError:
        raise PretrainedUnavailableError(
            f"Reading torchvision's {spec.torchvision} weights needs torch and torchvision, which are not installed: "
            "pip install 'fusionjax[torch]'") from None
    enum = torchvision.models.get_model_weights(spec.torchvision)
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
    Offline, or without torch, it raises ``PretrainedUnavailableError``: its message names the URL and the cache
    path to place the downloaded file at, or the extra to install.
    """
    from fusionjax.models.registry import create_model

    model = create_model(arch, **model_options)
    return model, pretrained_variables(arch, model, weights)


def pretrained_variables(name: str, model: nn.Module, weights: str | None = None) -> dict:
    """The variables of torchvision's ``weights`` (default: torchvision's DEFAULT) for ``model``."""
    spec = frameworks.find_spec("torchvision", name)
    classes = spec.weights_from("torchvision").num_classes
    if model.num_classes != classes:
        raise ValueError(
            f"torchvision's {name} weights have a {classes}-class ImageNet classifier, but the model has "
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
        "num_classes": classes, "source": file_name, "sha256": sha256(checkpoint),
        "weights": str(entry), "url": entry.url, "fusionjax_version": _version(),
        "normalization": frameworks.normalization("torchvision", spec), "eval_resize": eval_resize(entry),
        "classes": list(entry.meta["categories"]), "verification": None,
    }
    write_converted(converted, name, variables, card, force=True)
    return variables


def eval_resize(entry) -> dict:
    """How torchvision evaluates ``entry``'s weights (its transforms' resize and crop), in the cards' format."""
    evaluation = entry.transforms()
    return resize_shorter_crop(evaluation.crop_size[0] / evaluation.resize_size[0])


def _download(url: str, destination: Path) -> Path:
    """``url`` at ``destination`` (fetched unless already there) whose SHA-256 starts with the hash in its name."""
    import torch.hub

    match = torch.hub.HASH_REGEX.search(destination.name)
    prefix = match.group(1) if match else None
    if destination.is_file():
        digest = sha256(destination)
        if prefix and not digest.startswith(prefix):
            raise PretrainedUnavailableError(
                f"{destination} has SHA-256 {digest[:12]}…, not the {prefix}… its name promises: it is truncated, "
                f"corrupt or another file. Delete it, and download {url} to that path again.")
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:  # writes to a temporary file and renames it only once the hash matches
        torch.hub.download_url_to_file(url, str(destination), hash_prefix=prefix, progress=sys.stderr.isatty())
    except RuntimeError as error:
        raise PretrainedUnavailableError(f"Downloading {url} failed its hash check: {error}") from None
    except OSError as error:  # urllib's URLError and HTTPError, a refused or dropped connection, a timeout
        reason = getattr(error, "reason", None) or error
        raise PretrainedUnavailableError(
            f"Could not download {url} ({reason}). Download it where there is network access and place it at "
            f"{destination} ($FUSIONJAX_CACHE/torchvision/); it is then used as if downloaded.") from None
    return destination


def _version() -> str:
    from fusionjax import __version__

    return __version__
