"""The held-out interiors damaged by the training syntheses: cases and images shared by the tools that
compare banks on them (tools/routing_heldout.py, tools/restore_heldout.py). The check set stays apart
(benchmarks/checkset)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import torch

from ...degrade import KINDS, degrade
from ...errors import InputError
from ..degrade_alt import degrade as degrade_alt

PAIRS: tuple[tuple[str, str], ...] = (("noise", "jpeg"), ("low_light", "noise"), ("haze", "noise"),
                                      ("motion_blur", "jpeg"), ("haze", "rain"))
"""The five mixtures of the engine issue, each at severity 0.5."""
SYNTHESES = {"standard": degrade, "degrade_alt": degrade_alt, "wide": functools.partial(degrade, profile="wide")}
"""The training syntheses; "wide" is the standard one's wide profile, with a camera's faint noise and mild JPEG."""
DEFAULT_SYNTHESES = ("standard", "degrade_alt")

Case = tuple[tuple[str, ...], float | None, str]
"""(kinds, severity, synthesis); no kinds: the clean photo."""


def heldout_cases(severities: Sequence[float], syntheses: Sequence[str] = DEFAULT_SYNTHESES) -> list[Case]:
    """The clean photo, every kind at each severity by each of ``syntheses``, and the pairs at 0.5 by each."""
    unknown = [name for name in syntheses if name not in SYNTHESES]
    if unknown or not syntheses:
        raise InputError(f"unknown synthesis {unknown or list(syntheses)}: choose among {sorted(SYNTHESES)}")
    listed: list[Case] = [((), None, "clean")]
    listed += [((kind,), level, name) for kind in KINDS for level in severities for name in syntheses]
    listed += [(pair, 0.5, name) for pair in PAIRS for name in syntheses]
    return listed


def damaged(photo: torch.Tensor, case: Case, seed: int) -> torch.Tensor:
    """``photo`` [3,H,W] with ``case``'s damage (drawn from ``seed``) as [1,3,H,W] in 0..1."""
    kinds, level, synthesis = case
    if not kinds:
        return photo[None]
    generator = torch.Generator().manual_seed(seed)
    return SYNTHESES[synthesis](photo[None], list(kinds), generator=generator, severity=level).float().clamp(0, 1)


def named_banks(specs: Sequence[str]) -> dict[str, Path]:
    """``NAME=BANK_DIR`` arguments as {name: folder}."""
    banks: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep or not name or not folder:
            raise InputError(f"a bank is given as NAME=BANK_DIR, got {spec!r}")
        banks[name] = Path(folder)
    return banks
