"""argparse types shared by every sub-command: paths and numbers refused with a clear message."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError, parse_number


def existing_path(text: str) -> Path:
    path = Path(text)
    try:
        path.stat()
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder") from None
    except OSError as exc:  # e.g. a name over 255 bytes, or a loop of symlinks
        raise argparse.ArgumentTypeError(f"{text[:80]}: {exc.strerror or exc}") from None
    return path


def whole_number(text: str) -> int:
    """argparse type: a whole number in plain ASCII digits (int() would also take '1_0' and '٣')."""
    try:
        return int(parse_number("the value", text, whole=True))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def decimal_number(text: str) -> float:
    """argparse type: a finite decimal number in plain ASCII (float() would also take 'nan', '1_0', '٣')."""
    try:
        return float(parse_number("the value", text))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
