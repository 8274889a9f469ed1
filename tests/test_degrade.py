"""Tests for the degradation synthesis (``uir_lora.degrade``) and its held-out twin (``degrade_alt``)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

import uir_lora.degrade as reference
import uir_lora.lab.degrade_alt as alternative
from uir_lora.degrade import CANONICAL_ORDER, DEGRADATION_INFO, KINDS, SAME_DAMAGE, degrade, same_damage, sample_mixture

torch.set_num_threads(1)

IMPLEMENTATIONS = {"degrade": reference.degrade, "degrade_alt": alternative.degrade}
IMPL_KIND = [(impl, kind) for impl in IMPLEMENTATIONS for kind in KINDS]
IMPL_KIND_IDS = [f"{impl}-{kind}" for impl, kind in IMPL_KIND]
EXPECTED_KINDS = (
    "noise", "poisson_noise", "motion_blur", "defocus_blur", "jpeg", "low_light",
    "haze", "rain", "snow", "low_resolution", "raindrop", "color_cast",
)  # fmt: skip


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured_image(height: int = 64, width: int = 64, seed: int = 7) -> torch.Tensor:
    """Deterministic natural-ish test image: colour gradients, stripes, blocks and fine texture."""
    gen = seeded(seed)
    rows = torch.linspace(0.0, 1.0, height).view(height, 1).expand(height, width)
    cols = torch.linspace(0.0, 1.0, width).view(1, width).expand(height, width)
    stripes = 0.5 + 0.35 * torch.sin(14.0 * cols + 4.0 * rows)
    base = torch.stack((stripes, 0.3 + 0.5 * rows * cols, 0.6 - 0.4 * cols))
    blocks = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=gen), size=(height, width))[0]
    image = 0.6 * base + 0.3 * blocks + 0.1 * torch.rand(3, height, width, generator=gen)
    return image[None].clamp(0.0, 1.0)


def psnr(first: torch.Tensor, second: torch.Tensor) -> float:
    mse = float(((first - second) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


IMAGE = textured_image()


def test_kind_names_are_the_agreed_tuple() -> None:
    assert KINDS == EXPECTED_KINDS
    assert alternative.KINDS == KINDS
    assert sorted(CANONICAL_ORDER) == sorted(KINDS)
    assert set(DEGRADATION_INFO) == set(KINDS) and all(DEGRADATION_INFO.values())


@pytest.mark.parametrize(("impl", "kind"), IMPL_KIND, ids=IMPL_KIND_IDS)
def test_output_contract_and_seeding(impl: str, kind: str) -> None:
    fn = IMPLEMENTATIONS[impl]
    batch = IMAGE.repeat(2, 1, 1, 1)  # identical inputs, so any difference comes from the parameters
    out = fn(batch, kind, generator=seeded(1))
    assert out.shape == batch.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(out, fn(batch, kind, generator=seeded(1))), "same seed must be bit-identical"
    assert not torch.equal(out, fn(batch, kind, generator=seeded(2))), "different seeds must differ"
    assert not torch.allclose(out[0], out[1], atol=1e-3), "batch items need independent parameters"


@pytest.mark.parametrize(("impl", "kind"), IMPL_KIND, ids=IMPL_KIND_IDS)
def test_visible_at_mid_severity_and_monotonic(impl: str, kind: str) -> None:
    fn = IMPLEMENTATIONS[impl]
    mild = fn(IMAGE, kind, generator=seeded(3), severity=0.1)
    middle = fn(IMAGE, kind, generator=seeded(3), severity=0.5)
    strong = fn(IMAGE, kind, generator=seeded(3), severity=0.9)
    assert psnr(IMAGE, middle) < 40.0
    if kind == "low_light":
        assert strong.mean() < mild.mean() < IMAGE.mean()
    elif kind == "haze":
        assert strong.std() < mild.std() < IMAGE.std(), "haze must wash out contrast"
    else:
        assert psnr(IMAGE, strong) < psnr(IMAGE, mild)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_mixture_uses_canonical_order(impl: str) -> None:
    fn = IMPLEMENTATIONS[impl]
    forward = fn(IMAGE, ["jpeg", "noise", "haze"], generator=seeded(5))
    backward = fn(IMAGE, ["haze", "noise", "jpeg"], generator=seeded(5))
    assert torch.equal(forward, backward)
    # And the mixture really is haze -> noise -> jpeg, not just some fixed order.
    manual_gen = seeded(5)
    manual = IMAGE
    for name in ("haze", "noise", "jpeg"):
        manual = fn(manual, name, generator=manual_gen)
    assert torch.equal(forward, manual)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bad_arguments_raise(impl: str) -> None:
    fn = IMPLEMENTATIONS[impl]
    with pytest.raises(ValueError, match="fog") as info:
        fn(IMAGE, ["noise", "fog"], generator=seeded(0))
    assert "low_resolution" in str(info.value), "the message must list the valid kinds"
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"severity.*\[0, 1\]"):
            fn(IMAGE, "noise", generator=seeded(0), severity=bad)


@pytest.mark.parametrize(("impl", "kind"), IMPL_KIND, ids=IMPL_KIND_IDS)
def test_odd_size_and_unbatched_input(impl: str, kind: str) -> None:
    fn = IMPLEMENTATIONS[impl]
    odd = textured_image(height=37, width=53)
    out = fn(odd, kind, generator=seeded(4), severity=0.7)
    assert out.shape == odd.shape and torch.isfinite(out).all()
    single = fn(odd[0], kind, generator=seeded(4), severity=0.7)
    assert single.shape == odd[0].shape
    assert torch.equal(single, out[0]), "[3,H,W] must behave like a batch of one"


@pytest.mark.parametrize("severity", [0.2, 0.8])
def test_gaussian_noise_sigma_matches_severity(severity: float) -> None:
    grey = torch.full((1, 3, 64, 64), 0.5)
    expected = (5.0 + 45.0 * severity) / 255.0
    for seed in range(4):  # covers the i.i.d., channel- and spatially-correlated variants
        measured = float((degrade(grey, "noise", generator=seeded(seed), severity=severity) - grey).std())
        assert measured == pytest.approx(expected, rel=0.12), f"seed {seed}"


def test_dtype_and_unseeded_calls() -> None:
    out = degrade(IMAGE.double(), "color_cast", generator=seeded(0))
    assert out.dtype == torch.float64
    torch.manual_seed(123)
    first = degrade(IMAGE, "noise")
    torch.manual_seed(123)
    assert torch.equal(first, degrade(IMAGE, "noise")), "un-seeded calls follow torch.manual_seed"


def test_sample_mixture_is_valid_and_seeded() -> None:
    clashing = ({"noise", "poisson_noise"}, {"motion_blur", "defocus_blur"}, {"rain", "snow"})
    sizes = set()
    for seed in range(40):
        mixture = sample_mixture(seeded(seed), max_kinds=3)
        assert mixture == sample_mixture(seeded(seed), max_kinds=3)
        assert 1 <= len(mixture) <= 3 and len(set(mixture)) == len(mixture)
        assert mixture == [name for name in CANONICAL_ORDER if name in mixture]
        assert not any(pair <= set(mixture) for pair in clashing)
        sizes.add(len(mixture))
    assert sizes == {1, 2, 3}
    with pytest.raises(ValueError, match="max_kinds"):
        sample_mixture(seeded(0), max_kinds=0)


def test_alternative_shares_only_kind_names() -> None:
    package = Path(alternative.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            module = getattr(node, "module", None) or ""
            if isinstance(node, ast.ImportFrom) and module.startswith("uir_lora.degrade"):
                assert node.module == "uir_lora.degrade.kinds", f"{source.name} imports {node.module}"
                assert [alias.name for alias in node.names] == ["KINDS"], source.name
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("uir_lora.degrade") for alias in node.names)


def _developed_alt(ramp: torch.Tensor, severity: float, seed: int) -> torch.Tensor:
    import numpy as np

    from uir_lora.lab.degrade_alt.scene import _developed

    picture = ramp[0].permute(1, 2, 0).double().numpy()
    return torch.from_numpy(_developed(picture, severity, np.random.default_rng(seed))).permute(2, 0, 1)[None]


@pytest.mark.parametrize("implementation", ["degrade", "degrade_alt"])
def test_developed_underexposure_is_dim_and_flat(implementation: str) -> None:
    """A camera-developed dark photo: darker, highlights far from white, and flatter than a pure exposure cut
    (which scales every display value alike and so keeps the ratio of white to mid-grey)."""
    from uir_lora.degrade.light import developed_underexposure

    ramp = torch.tensor([0.05, 0.2, 0.5, 1.0]).view(1, 1, 1, 4).repeat(1, 3, 16, 1)
    ratios = []
    for seed in range(6):
        levels = []
        for severity in (0.2, 0.5, 0.9):
            if implementation == "degrade":
                out = developed_underexposure(ramp, severity, seeded(seed))
            else:
                out = _developed_alt(ramp, severity, seed)
            column = out.float().clamp(0, 1).mean(dim=(0, 1, 2))
            assert column[3] < 0.85, f"developed highlights must stay well below white, got {column[3]:.3f}"
            ratios.append(float(column[3] / column[2]))
            levels.append(float(column[1:].mean()))
        assert levels[0] > levels[1] > levels[2], f"darker with severity, got {levels}"
    assert sum(ratios) / len(ratios) < 1.9, f"highlights must be compressed on average, ratios {ratios}"


def test_same_damage_counts_a_group_as_one_kind():
    for group in SAME_DAMAGE:
        for named in group:
            assert all(same_damage(named, kind) and same_damage(kind, named) for kind in group)
    assert same_damage("jpeg", "jpeg")
    assert not same_damage("noise", "jpeg") and not same_damage("haze", "poisson_noise")
