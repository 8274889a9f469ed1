"""The night-sky rule: a dark sky with bright points of light is not snow, low light or a colour cast."""

from __future__ import annotations

import pytest
import torch

from uir_lora.bank.manifest import NIGHT_SKY_POINTS, NIGHT_SKY_VOID, read_manifest
from uir_lora.errors import BankError
from uir_lora.lab.evaluate.star_fields import star_field
from uir_lora.router.night_sky import night_sky_factors, point_level, void_share
from uir_lora.router.router import Router

KINDS = ["snow", "low_light", "color_cast", "rain"]


@pytest.fixture(scope="module")
def sky() -> torch.Tensor:
    """A clear black sky (no nebula) that the shipped encoder reads as low light."""
    return star_field(105, side=256, nebula=False)


def factors(images: torch.Tensor) -> torch.Tensor:
    return night_sky_factors(images, NIGHT_SKY_VOID, NIGHT_SKY_POINTS)


def test_a_black_sky_with_stars_is_a_night_sky(sky):
    assert void_share(sky).item() > NIGHT_SKY_VOID[1]
    assert point_level(sky).item() > NIGHT_SKY_POINTS[1]
    assert factors(sky).item() == 1.0


def test_a_sky_behind_a_faint_nebula_is_a_night_sky_too():
    nebula = star_field(113)  # a coloured glow lifts much of the sky above the black level
    black_only = (nebula.amax(dim=1) < 0.1).float().mean().item()
    assert black_only < NIGHT_SKY_VOID[0], "the glow must lift the sky above black for this test to mean anything"
    assert void_share(nebula).item() > NIGHT_SKY_VOID[1]


def test_a_glow_counts_as_sky_only_where_it_is_smooth():
    generator = torch.Generator().manual_seed(0)
    glow = torch.full((1, 3, 128, 128), 0.2)
    textured = glow + 0.2 * torch.rand(1, 1, 128, 128, generator=generator)  # as dim, with texture in every block
    bright = torch.full((1, 3, 128, 128), 0.5)  # smooth, but no longer dim
    assert void_share(torch.cat([glow, textured, bright])).tolist() == [1.0, 0.0, 0.0]


def test_under_exposure_dims_the_points_so_a_dark_photo_is_no_sky(sky, photo_256):
    assert factors(sky * 0.3).item() == 0.0  # as black, but its brightest points dimmed with the rest
    dark = photo_256 * 0.05
    dark[..., 100:102, 100:102] = 1.0  # one bright speck is a few px, under the brightest 0.01 % of 2 x 2 averages
    assert factors(torch.cat([photo_256, dark])).tolist() == [0.0, 0.0]


def test_a_hot_pixel_is_not_a_star():
    black = torch.full((1, 3, 128, 128), 0.02)
    black[..., 40, 40] = 1.0  # one pixel: its 2 x 2 average is a quarter of it
    assert point_level(black).item() < NIGHT_SKY_POINTS[0]
    assert factors(black).item() == 0.0


def test_the_rule_lowers_only_its_kinds_and_says_so(bank_with, sky):
    router = Router.of_folder(bank_with("bank", night_sky_kinds=KINDS))
    plain = Router.of_folder(bank_with("plain", night_sky_kinds=None))
    assert not plain.night_sky_index and plain.night_sky(sky) is None
    read, checked = plain.scores(sky).similarities[0], router.scores(sky).similarities[0]
    low_light = router.names.index("low_light")
    assert torch.sigmoid(read[low_light]) > 0.5, "the encoder must read this sky as low light for the test to mean it"
    assert torch.sigmoid(checked[low_light]) < 1e-5
    others = [i for i, name in enumerate(router.names) if name not in KINDS]
    assert torch.equal(checked[others], read[others])
    result = router.route(sky)[0]
    assert "low_light" not in result.weights
    assert any(note.startswith("low_light doubted") and "night sky, dark and smooth with bright points" in note
               for note in result.notes)
    assert not any("stops under" in note for note in result.notes), "the exposure check took nothing away here"


def test_a_kind_that_both_checks_take_away_gets_both_notes(bank_with, photo_256):
    router = Router.of_folder(bank_with("bank", night_sky_kinds=KINDS))
    dim = photo_256 * 0.05
    dim[..., :32, :32] = 1.0  # a black room with a lit window: its highlights are not under-exposed, and it is as
    # black as a night sky with a bright point
    assert router.night_sky(dim).item() == 1.0 and router.exposure_factors(dim).item() == 0.0
    read = router.feature_scores(router.encoder.features(dim)).similarities[0, router.names.index("low_light")]
    assert read > 0, "the encoder must read the dark room as low light for this test to mean anything"
    notes = [note for note in router.route(dim)[0].notes if note.startswith("low_light doubted")]
    assert len(notes) == 2
    assert any("stops under" in note for note in notes) and any("night sky" in note for note in notes)


def test_the_shipped_bank_leaves_a_clear_night_sky_alone(sky):
    from uir_lora.pipeline import DEFAULT_BANK, load_bank

    router = Router.of_folder(load_bank(DEFAULT_BANK).root)
    assert sorted(router.names[i] for i in router.night_sky_index) == sorted(KINDS)
    assert not set(router.route(sky)[0].weights) & set(KINDS)


@pytest.mark.parametrize("edit, message", [
    ({"night_sky_void": [0.9, 0.8]}, "night_sky_void must be two numbers in"),
    ({"night_sky_points": [0.5, 1.5]}, r"night_sky_points must be two numbers in \[0, 1\]"),
    ({"night_sky_kinds": "snow"}, "night_sky_kinds must be a list of LoRA names"),
])
def test_a_bad_night_sky_rule_is_refused_with_its_field(bank_with, edit, message):
    with pytest.raises(BankError, match=message):
        read_manifest(bank_with("bank", **edit))


def test_the_default_ends_are_not_written_and_others_are(bank_with):
    manifest = read_manifest(bank_with("bank", night_sky_kinds=["snow"]))
    assert tuple(manifest.router.night_sky_void) == NIGHT_SKY_VOID
    assert "night_sky_void" not in manifest.to_json()["router"]
    changed = read_manifest(bank_with("changed", night_sky_points=[0.5, 0.7]))
    assert changed.to_json()["router"]["night_sky_points"] == [0.5, 0.7]
