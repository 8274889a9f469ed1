"""Exceptions the engine raises. Every message names the bad value and the fix.

ComfyUI's error dialog titles an exception ``<class.__module__>.<class.__qualname__>``, and it imports a
pack under a module name built from its install path; so every class here reports the short, importable
module ``uir_lora`` (the package re-exports them) and the dialog reads e.g. ``uir_lora.InputError``.
"""

from __future__ import annotations

import re
from numbers import Integral, Real

PUBLIC_MODULE = "uir_lora"


class UIRError(Exception):
    """Base class: anything the pack reports to a user on purpose."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.__module__ = PUBLIC_MODULE


UIRError.__module__ = PUBLIC_MODULE


class InputError(UIRError, ValueError):
    """A value given by a user, a workflow or the CLI is out of range or malformed."""


class UnsafePathError(UIRError, ValueError):
    """A name tried to leave the folders it may be resolved in."""


class BankError(UIRError, ValueError):
    """A LoRA bank (manifest or LoRA file) is missing, corrupt or made for another backbone."""


class BackboneError(UIRError, ValueError):
    """A backbone's weights are missing, corrupt or of an unexpected architecture."""


class MissingExtraError(UIRError, ImportError):
    """A feature beyond inference needs a package that ComfyUI's install of the pack leaves out."""


class RestoreInterrupted(UIRError):
    """The caller's cancellation hook asked the restore to stop."""


TEMPERATURE_RANGE = (1e-4, 100.0)
"""The softmax temperatures the router accepts, inclusive (the Degradation Estimator node's range)."""


def check_range(field: str, value: float, low: float, high: float) -> float:
    """Return ``value`` if ``low <= value <= high``, else raise an InputError naming the field."""
    if isinstance(value, bool) or not isinstance(value, Real):  # text such as "0.5" is refused, not parsed
        raise InputError(f"{field} must be a number in [{low}, {high}], got {value!r}")
    number = float(value)
    if not (low <= number <= high):  # also rejects NaN
        raise InputError(f"{field} must be in [{low}, {high}], got {value!r}")
    return number


def check_int(field: str, value: object, low: int, high: int) -> int:
    """Return ``value`` as an int if it is a whole number in ``[low, high]``, else an InputError naming the field."""
    whole = isinstance(value, Integral) or isinstance(value, Real) and float(value).is_integer()  # not NaN/Inf
    if isinstance(value, bool) or not whole:
        raise InputError(f"{field} must be a whole number in [{low}, {high}], got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise InputError(f"{field} must be in [{low}, {high}], got {value!r}")
    return number


_ASCII_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_ASCII_WHOLE = re.compile(r"[+-]?[0-9]+")


def parse_number(field: str, text: str, *, whole: bool = False) -> float | int:
    """Read plain ASCII decimal text as a number; refuse what float()/int() also take ('1_0', '٣', 'nan')."""
    stripped = text.strip() if isinstance(text, str) else text
    pattern = _ASCII_WHOLE if whole else _ASCII_NUMBER
    if not isinstance(stripped, str) or not pattern.fullmatch(stripped):
        kind = "a whole number" if whole else "a finite number"
        raise InputError(f"{field} must be {kind} written with the digits 0-9 (like {'3' if whole else '0.5'}), "
                         f"got {text!r}")
    return int(stripped) if whole else float(stripped)
