"""The independent check set's degradations: a third synthesis, never used for training or tuning.

    from checkset import degrade                       # with benchmarks/ on sys.path
    damaged = degrade(clean_uint8, ("haze", "noise"), "moderate", seed=3)

Kinds carry the bank's names; mixtures are applied in the given (physical) order, each at the same
severity. The output is 8-bit, like any saved photo, and depends only on the inputs and the seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from .synthesis import DEGRADATIONS, SEVERITIES

KINDS: tuple[str, ...] = tuple(DEGRADATIONS)
MIXTURES: tuple[tuple[str, ...], ...] = (
    ("noise", "jpeg"), ("low_light", "noise"), ("haze", "noise"), ("motion_blur", "jpeg"), ("haze", "rain"),
)
"""The mixtures of the engine issue's table, each in the order the damage happens."""


def case_name(kinds: Sequence[str]) -> str:
    return "+".join(kinds)


def degrade(image: np.ndarray, kinds: str | Sequence[str], severity: str, seed: int) -> np.ndarray:
    """Damage an RGB uint8 HxWx3 image with one kind or a mixture; returns RGB uint8 of the same shape."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [k for k in kinds if k not in DEGRADATIONS]
    if unknown or severity not in SEVERITIES:
        raise ValueError(f"unknown kind {unknown} or severity {severity!r}; kinds: {', '.join(KINDS)}; "
                         f"severities: {', '.join(SEVERITIES)}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 HxWx3 array, got {image.dtype} {image.shape}")
    # the case is part of the seed, so two kinds at one seed do not share their random draws; the severity is
    # not, so the three severities differ only in strength
    rng = np.random.default_rng([seed, zlib.crc32(case_name(kinds).encode())])  # same draws at every severity
    level = SEVERITIES.index(severity)
    work = image.astype(np.float32) / 255
    for kind in kinds:
        work = np.clip(DEGRADATIONS[kind](work, rng, level), 0, 1).astype(np.float32)
    return (work * 255 + 0.5).astype(np.uint8)


__all__ = ["KINDS", "MIXTURES", "SEVERITIES", "case_name", "degrade"]
