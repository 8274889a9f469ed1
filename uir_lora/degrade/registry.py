"""Public entry points: ``degrade`` (single kind or mixture) and ``sample_mixture``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real

import torch

from ._common import frame_scale
from .blur import defocus_blur, motion_blur
from .compression import jpeg
from .kinds import CANONICAL_ORDER, KINDS
from .lens import raindrop
from .light import color_cast, low_light
from .noise import gaussian_noise, poisson_gaussian_noise
from .resolution import low_resolution
from .weather import haze, rain, snow
from .wide import WIDE_KINDS, camera_finish

PROFILES = ("standard", "wide")

# Each function maps one [1,3,H,W] float32 image and a severity in [0, 1] to a degraded image.
KindFunction = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

_APPLY: dict[str, KindFunction] = {
    "noise": gaussian_noise,
    "poisson_noise": poisson_gaussian_noise,
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

# Kinds with parameters relative to the photo's size; they take ``frame_side`` (see degrade()).
_FRAME_AWARE = frozenset({"raindrop", "haze", "snow"})

# Pairs that make little physical sense together (or duplicate one another) in a mixture.
_EXCLUSIVE_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"noise", "poisson_noise"}),
    frozenset({"motion_blur", "defocus_blur"}),
    frozenset({"rain", "snow"}),
    frozenset({"low_light", "haze"}),
)


def compatible(kinds: Sequence[str]) -> bool:
    """False when two of ``kinds`` are alternative models of one thing (two noises, two blurs...)."""
    return not any(len(group & set(kinds)) > 1 for group in _EXCLUSIVE_GROUPS)


def canonical_kinds(kind: str | Sequence[str]) -> list[str]:
    """Validate names, drop duplicates and return them in physical application order."""
    names = [kind] if isinstance(kind, str) else list(kind)
    if not names:
        raise ValueError(f"kind must name at least one degradation; choose from {KINDS}")
    for name in names:
        if name not in _APPLY:
            raise ValueError(f"unknown degradation kind {name!r}; choose from {KINDS}")
    return [name for name in CANONICAL_ORDER if name in names]


def _check_severity(severity: float | None) -> None:
    if severity is None:
        return
    if isinstance(severity, bool) or not isinstance(severity, Real):
        raise ValueError(f"severity must be None or a float in [0, 1], got {severity!r}")
    if not (math.isfinite(severity) and 0.0 <= severity <= 1.0):
        raise ValueError(f"severity must be in [0, 1], got {severity!r}")


def _as_batch(image: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor in [0, 1], got dtype {image.dtype}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
        squeeze = True
    else:
        squeeze = False
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must have shape [B,3,H,W] or [3,H,W], got {tuple(image.shape)}")
    return image, squeeze


def _default_generator() -> torch.Generator:
    # Seeded once from torch's global RNG so torch.manual_seed still makes un-seeded calls repeatable.
    seed = int(torch.randint(0, 2**62, (1,)))
    return torch.Generator().manual_seed(seed)


def _apply_kind(batch: torch.Tensor, name: str, gen: torch.Generator, severity: float | None,
                frame_side: int | None = None, profile: str = "standard") -> torch.Tensor:
    extra = {"frame_side": frame_side} if name in _FRAME_AWARE and frame_side is not None else {}
    apply = WIDE_KINDS.get(name, _APPLY[name]) if profile == "wide" else _APPLY[name]
    outputs = []
    for single in batch.split(1):
        # Always draw, then override, so a fixed severity leaves the rest of the random stream unchanged.
        drawn = float(torch.rand((1,), generator=gen, device=gen.device))
        level = drawn if severity is None else float(severity)
        degraded = apply(single, level, gen, **extra)
        outputs.append(torch.nan_to_num(degraded, nan=0.0).clamp(0.0, 1.0))
    return torch.cat(outputs)


def degrade(
    image: torch.Tensor,
    kind: str | Sequence[str],
    *,
    generator: torch.Generator | None = None,
    severity: float | None = None,
    frame_side: int | None = None,
    profile: str = "standard",
    finish: bool = True,
) -> torch.Tensor:
    """Synthesise one or several degradations on float images in [0, 1].

    ``kind`` may be a name from ``KINDS`` or a sequence (applied in ``CANONICAL_ORDER`` whatever the
    given order). Every image of the batch draws its own parameters from ``generator``.
    ``severity`` None samples the kind's full training range; a value in [0, 1] fixes it (0 mild).
    ``frame_side``: the shorter side of the whole photo that ``image`` is a crop of (None: the image
    is the whole photo). Raindrop, haze and snow size their drops, depth field and flakes relative to
    the photo, so training crops of a 256 px frame get the drops a 256 px photo gets.
    ``profile``: "standard" (the shipped bank's training models) or "wide" (the field's models beside
    them, then a camera finish of faint noise and mild JPEG; see ``wide.py``). An empty ``kind`` with
    the wide profile gives a clean photo with the camera finish only. ``finish=False``: the wide profile without
    its camera finish (for a caller that applies kinds one at a time and finishes once, at the end).
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile == "wide" and not isinstance(kind, str) and len(kind) == 0:
        names = []
    else:
        names = canonical_kinds(kind)
    _check_severity(severity)
    batch, squeeze = _as_batch(image)
    gen = generator if generator is not None else _default_generator()
    frame_scale(batch, frame_side)  # validate before any work
    out = batch.float()
    for name in names:
        out = _apply_kind(out, name, gen, severity, frame_side, profile)
    if profile == "wide" and finish:
        out = torch.cat([camera_finish(single, gen) for single in out.split(1)]).clamp(0.0, 1.0)
    out = out.to(image.dtype)
    return out.squeeze(0) if squeeze else out


def sample_mixture(generator: torch.Generator, max_kinds: int = 2) -> list[str]:
    """Random set of 1..max_kinds compatible kinds, returned in canonical order."""
    if isinstance(max_kinds, bool) or not isinstance(max_kinds, int) or max_kinds < 1:
        raise ValueError(f"max_kinds must be an int >= 1, got {max_kinds!r}")
    wanted = int(torch.randint(1, max_kinds + 1, (1,), generator=generator, device=generator.device))
    picked: list[str] = []
    for index in torch.randperm(len(KINDS), generator=generator, device=generator.device).tolist():
        candidate = KINDS[index]
        clashes = any(candidate in group and group & set(picked) for group in _EXCLUSIVE_GROUPS)
        if not clashes:
            picked.append(candidate)
        if len(picked) == wanted:
            break
    return canonical_kinds(picked)
