"""Reading a state_dict from whatever a user holds: a mapping, a ``.pth``/``.pt`` file or a ``.safetensors`` file.

Files are recognized by their first bytes, not their names, so a misnamed file gets an error that says what it
is. PyTorch files load with ``torch.load(weights_only=True)``, which refuses pickled code instead of running it;
safetensors files load with ``safetensors.numpy`` and never import torch.
"""

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fusionjax.convert.errors import ConversionError

_WRAPPERS = ("state_dict", "model")  # training scripts often save {"state_dict": ..., "optimizer": ...}
_DATA_PARALLEL_PREFIX = "module."  # torch.nn.DataParallel / DistributedDataParallel prefix every key


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_state_dict(source: Any) -> dict[str, np.ndarray]:
    """``source`` (a state_dict of torch tensors or arrays, or a checkpoint path) as ``{key: NumPy array}``."""
    if isinstance(source, Mapping):
        return _as_numpy(source, "the state_dict")
    if isinstance(source, (str, os.PathLike)):
        return _as_numpy(_read_file(Path(source)), str(source))
    raise TypeError(
        "source must be a state_dict (a mapping of names to torch tensors or NumPy arrays) or the path of a "
        f".pth, .pt or .safetensors file, got {type(source).__name__}."
    )


def _as_numpy(state: Mapping, where: str) -> dict[str, np.ndarray]:
    for wrapper in _WRAPPERS:
        if isinstance(state.get(wrapper), Mapping) and not any(_is_tensor(v) for v in state.values()):
            state = state[wrapper]
            break
    if state and all(isinstance(k, str) and k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    not_tensors = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not _is_tensor(v)]
    if not_tensors:
        raise ConversionError(
            f"{where} is not a state_dict of tensors: {len(not_tensors)} entries are not tensors or arrays, e.g. "
            f"{', '.join(not_tensors[:5])}. Pass model.state_dict() or a file written by "
            "torch.save(model.state_dict())."
        )
    return {str(k): _to_numpy(v) for k, v in state.items()}


def _is_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray) or type(value).__module__.startswith(("torch", "jax", "jaxlib"))


def _to_numpy(value: Any) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype.itemsize < 4:  # NumPy has no bfloat16
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _read_file(path: Path) -> Mapping:
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}." + (" It is a directory." if path.is_dir() else ""))
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(16)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch.save's zip, or its legacy pickle
        return _read_torch(path)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return _read_safetensors(path)
    kind = "an empty file" if size == 0 else (
        f"a text file (it starts with {head.decode(errors='replace')!r})" if _is_text(head) else
        f"of an unknown format (it starts with bytes {head[:8].hex(' ')})")
    raise ConversionError(
        f"{path} is not a checkpoint: it is {kind}. Expected a PyTorch file written by torch.save (.pth/.pt, "
        "a zip archive or a pickle) or a .safetensors file."
    )


def _is_text(head: bytes) -> bool:
    try:
        return all(char.isprintable() or char.isspace() for char in head.decode())
    except UnicodeDecodeError:
        return False


def _read_torch(path: Path) -> Mapping:
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"{path} is a PyTorch file and reading it needs torch: pip install 'fusionjax[torch]', or save the "
            "state_dict as .safetensors (safetensors.torch.save_file), which loads without torch."
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = next((line.strip() for line in str(error).splitlines() if "Unsupported" in line), str(error)[:200])
        raise ConversionError(
            f"Refused to load {path}: it holds pickled Python objects other than tensors ({reason}). Unpickling "
            "them would run code from the file, so fusionjax loads with torch.load(weights_only=True), which does "
            "not. If you trust the file, load it yourself with torch.load(..., weights_only=False) and pass "
            "model.state_dict() to fusionjax."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise ConversionError(
            f"{path} could not be read as a PyTorch checkpoint; it is truncated or corrupt ({error}). "
            "Download or copy it again."
        ) from None
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path} holds a {type(state).__name__}, not a state_dict (a dict of tensors).")
    return state


def _read_safetensors(path: Path) -> Mapping:
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError(f"{path} is a safetensors file and reading it needs safetensors: pip install safetensors") from None

    try:
        return safetensors.numpy.load_file(path)
    except Exception as error:  # safetensors raises its own SafetensorError and plain exceptions alike
        raise ConversionError(
            f"{path} could not be read as a safetensors file; it is truncated or corrupt ({error})."
        ) from None
