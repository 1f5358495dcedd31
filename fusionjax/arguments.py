"""Range checks for the arguments of models, blocks and layers, run when the module is constructed.

A nonsense value (``drop_path=2.0``, ``num_classes=0``, ``in_channels=0``) fails where it is given, naming the
argument, its range and the value, instead of training silently or failing later as a shape or arithmetic error
inside ``init``.
"""

import numbers
from typing import Any, Sequence


class ModelArgumentError(ValueError):
    """A model, block or layer argument is outside its range; the message names it, the range and the value."""


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _refuse(owner: str, name: str, expected: str, value: Any) -> None:
    raise ModelArgumentError(f"{owner}: {name} must be {expected}, got {value!r}.")


def positive_int(owner: str, name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        _refuse(owner, name, "an integer ≥ 1", value)


def optional_positive_int(owner: str, name: str, value: Any) -> None:
    if value is not None and (not _is_int(value) or value < 1):
        _refuse(owner, name, "None or an integer ≥ 1", value)


def positive_ints(owner: str, name: str, values: Any) -> None:
    """A non-empty sequence of integers ≥ 1 (stage sizes, widths)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values \
            or not all(_is_int(v) and v >= 1 for v in values):
        _refuse(owner, name, "a non-empty sequence of integers ≥ 1", values)


def rate(owner: str, name: str, value: Any) -> None:
    """A drop probability: in [0, 1) (1 would drop everything and scale what is kept by 1/0)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        _refuse(owner, name, "in [0, 1)", value)


def fraction(owner: str, name: str, value: Any) -> None:
    """A share of channels kept: in (0, 1]."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value <= 1:
        _refuse(owner, name, "in (0, 1]", value)


def one_of(owner: str, name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        _refuse(owner, name, "one of " + ", ".join(map(repr, choices)), value)
