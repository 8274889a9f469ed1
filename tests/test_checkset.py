"""The independent check set's synthesis (benchmarks/checkset): deterministic, in range, ordered severities."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from checkset import KINDS, MIXTURES, SEVERITIES, degrade  # noqa: E402


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / max(error, 1e-12)))


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A 160x192 stand-in photo: sky-like gradient on top, textured ground below, edges and colour."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:160, 0:192] / 160.0
    sky = np.stack([0.55 + 0.2 * yy, 0.7 + 0.1 * yy, 0.95 - 0.1 * yy], -1)
    texture = np.kron(rng.random((20, 24)), np.ones((8, 8)))[..., None]
    ground = np.stack([0.35 + 0.3 * xx, 0.45 + 0.2 * np.sin(9 * xx), 0.2 + 0.1 * yy], -1) * (0.6 + 0.4 * texture)
    image = np.where((yy < 0.45)[..., None], sky, ground)
    image[60:100, 40:70] = (0.9, 0.15, 0.1)  # a red house
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def test_the_twelve_kinds_of_the_bank_are_covered():
    assert set(KINDS) == {"noise", "poisson_noise", "motion_blur", "defocus_blur", "jpeg", "low_light", "haze",
                          "rain", "snow", "raindrop", "low_resolution", "color_cast"}
    assert all(set(mixture) <= set(KINDS) for mixture in MIXTURES)


@pytest.mark.parametrize("kinds", [*[(k,) for k in KINDS], *MIXTURES], ids=lambda k: "+".join(k))
def test_deterministic_in_range_and_damaging(scene, kinds):
    first = degrade(scene, kinds, "moderate", seed=3)
    assert first.dtype == np.uint8 and first.shape == scene.shape
    np.testing.assert_array_equal(first, degrade(scene, kinds, "moderate", seed=3))
    assert psnr(first, scene) < 40, "the damage must be visible"
    if kinds != ("jpeg",):  # libjpeg itself is deterministic: only the chroma subsampling draw varies
        assert not np.array_equal(first, degrade(scene, kinds, "moderate", seed=4)), "the seed must matter"


@pytest.mark.parametrize("kind", KINDS)
def test_severities_are_ordered_by_psnr(scene, kind):
    """Averaged over three seeds, each severity step costs PSNR."""
    scores = [np.mean([psnr(degrade(scene, kind, severity, seed), scene) for seed in range(3)])
              for severity in SEVERITIES]
    assert scores[0] > scores[1] > scores[2], dict(zip(SEVERITIES, np.round(scores, 2)))


def test_a_mixture_is_neither_of_its_kinds_alone(scene):
    mixed = degrade(scene, ("haze", "noise"), "moderate", seed=1)
    for kind in ("haze", "noise"):
        assert psnr(mixed, degrade(scene, kind, "moderate", seed=1)) < 35


def test_bad_requests_are_refused(scene):
    with pytest.raises(ValueError, match="unknown kind"):
        degrade(scene, "fog", "moderate", seed=0)
    with pytest.raises(ValueError, match="severity"):
        degrade(scene, "noise", "extreme", seed=0)
    with pytest.raises(ValueError, match="uint8"):
        degrade(scene.astype(np.float32), "noise", "mild", seed=0)
