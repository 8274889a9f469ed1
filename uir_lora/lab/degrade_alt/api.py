"""Entry point of the alternative (held-out) degradation models.

Each image gets its own numpy ``Generator`` seeded from the caller's torch generator, so the torch
seed still controls everything while the synthesis itself runs on numpy/scipy/PIL/scikit-image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import numpy as np
import torch

from uir_lora.degrade.kinds import KINDS

from .optics import defocus_blur, motion_blur, raindrop
from .scene import color_cast, haze, low_light, rain, snow
from .sensor import gaussian_noise, jpeg, low_resolution, poisson_noise

AltFunction = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

# Same physical order as the reference implementation: atmosphere, lens, sampling, sensor, codec.
_ORDER: tuple[str, ...] = (
    "haze", "low_light", "color_cast", "rain", "snow", "raindrop",
    "motion_blur", "defocus_blur", "low_resolution", "noise", "poisson_noise", "jpeg",
)  # fmt: skip

_MODELS: dict[str, AltFunction] = {
    "noise": gaussian_noise,
    "poisson_noise": poisson_noise,
    "motion_blur": motion_blur,
    "defocus_blur": defocus_blur,
    "jpeg": jpeg,
    "low_light": low_light,
    "haze": haze,
    "rain": rain,
    "snow": snow,
    "low_resolution": low_resolution,
    "raindrop": raindrop,
    "color_cast": color_cast,
}
assert set(_MODELS) == set(KINDS) == set(_ORDER), "alt models must cover exactly the shared KINDS"


def _ordered(kind: str | Sequence[str]) -> list[str]:
    requested = {kind} if isinstance(kind, str) else set(kind)
    if not requested:
        raise ValueError(f"kind is empty; expected names from {KINDS}")
    unknown = sorted(requested - set(_MODELS))
    if unknown:
        raise ValueError(f"unknown degradation kind {unknown[0]!r}; valid kinds are {KINDS}")
    return [name for name in _ORDER if name in requested]


def _validated_severity(severity: float | None) -> float | None:
    if severity is None:
        return None
    valid = isinstance(severity, Real) and not isinstance(severity, bool)
    if not valid or not math.isfinite(severity) or not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must be None or in the range [0, 1], got {severity!r}")
    return float(severity)


def _apply(picture: np.ndarray, name: str, torch_gen: torch.Generator, severity: float | None) -> np.ndarray:
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=torch_gen, device=torch_gen.device))
    rng = np.random.default_rng(seed)
    # Drawn before the override so fixed and random severity share the rest of the stream.
    drawn = float(rng.beta(1.1, 1.1))
    result = _MODELS[name](picture, drawn if severity is None else severity, rng)
    return np.clip(np.nan_to_num(result, nan=0.0), 0.0, 1.0)


def degrade(
    image: torch.Tensor,
    kind: str | Sequence[str],
    *,
    generator: torch.Generator | None = None,
    severity: float | None = None,
) -> torch.Tensor:
    """Same contract as ``uir_lora.degrade.degrade``, implemented with independent models."""
    names = _ordered(kind)
    level = _validated_severity(severity)
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise ValueError("image must be a floating-point torch.Tensor in [0, 1]")
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"image must have shape [B,3,H,W] or [3,H,W], got {tuple(image.shape)}")
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
    batch = image if image.dim() == 4 else image[None]
    results = []
    for item in batch:
        picture = item.detach().to("cpu", torch.float64).permute(1, 2, 0).numpy()
        for name in names:
            picture = _apply(picture, name, generator, level)
        results.append(torch.from_numpy(np.ascontiguousarray(picture)).permute(2, 0, 1))
    out = torch.stack(results).to(device=image.device, dtype=image.dtype)
    return out if image.dim() == 4 else out[0]
