"""Packages that only training, evaluation or distributed restore use: imported on demand, with the fix.

requirements.txt holds what inference needs (what a ComfyUI user installs); the rest are pyproject
extras, and a missing one is reported with the ``pip install`` line that adds it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise a MissingExtraError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name and exc.name.partition(".")[0] != top:  # the package is there but one of its own imports failed
            raise
        raise MissingExtraError(f"{purpose} needs the {top!r} package, which the inference install leaves out: "
                                f'pip install "uir-lora[{extra}]" (or: pip install {top})') from None
