"""The third training synthesis of rain, snow and raindrops (uir_lora.lab.precipitation)."""

from __future__ import annotations

import pytest
import torch

from uir_lora.lab.precipitation import KINDS, degrade_precipitation


def _photo(seed: int = 0, shape: tuple[int, int] = (96, 128)) -> torch.Tensor:
    """A smooth gradient with texture, so refraction and streak radiance have something to show."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0.1, 0.9, shape[0]).view(1, 1, -1, 1)
    cols = torch.linspace(0.0, 1.0, shape[1]).view(1, 1, 1, -1)
    base = torch.cat([rows * cols, rows.expand(1, 1, *shape), 1.0 - cols.expand(1, 1, *shape)], dim=1)
    return (base + 0.05 * torch.rand((1, 3, *shape), generator=gen)).clamp(0.0, 1.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(96, 128), (64, 64), (33, 70)])
def test_each_kind_damages_within_range_and_is_reproducible(kind: str, shape: tuple[int, int]) -> None:
    clean = _photo(shape=shape)
    first = degrade_precipitation(clean, kind, torch.Generator().manual_seed(1), [0.7])
    again = degrade_precipitation(clean, kind, torch.Generator().manual_seed(1), [0.7])
    other = degrade_precipitation(clean, kind, torch.Generator().manual_seed(2), [0.7])
    assert first.shape == clean.shape and torch.isfinite(first).all()
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert float((first - clean).abs().mean()) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_more_severe_precipitation_damages_more(kind: str) -> None:
    clean = _photo()

    def damage(severity: float) -> float:
        return sum(float((degrade_precipitation(clean, kind, torch.Generator().manual_seed(seed), [severity])
                          - clean).abs().mean()) for seed in range(6))

    assert damage(0.9) > damage(0.1)


def test_a_rain_streak_takes_the_light_of_the_scene_around_it() -> None:
    """The drops refract the scene around them: over a dark, unlit scene rain stays dim, where the other two
    syntheses draw streaks of a fixed brightness."""
    from uir_lora.degrade import degrade
    from uir_lora.lab.degrade_alt import degrade as degrade_alt

    dark = torch.full((1, 3, 96, 96), 0.08)

    def brightest(synthesis) -> float:
        return max(float(synthesis(torch.Generator().manual_seed(seed)).flatten().quantile(0.99)) for seed in range(6))

    assert brightest(lambda gen: degrade_precipitation(dark, "rain", gen, [0.8])) < 0.3
    assert brightest(lambda gen: degrade(dark, "rain", generator=gen, severity=0.8)) > 0.45
    assert brightest(lambda gen: degrade_alt(dark, "rain", generator=gen, severity=0.8)) > 0.45


def test_a_batch_draws_each_image_its_own_damage_and_unknown_kinds_are_refused() -> None:
    clean = _photo().expand(2, -1, -1, -1).contiguous()
    out = degrade_precipitation(clean, "raindrop", torch.Generator().manual_seed(0))
    assert not torch.equal(out[0], out[1])
    with pytest.raises(ValueError, match="draws .*not 'haze'"):
        degrade_precipitation(clean, "haze", torch.Generator())
