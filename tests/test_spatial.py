"""Per-region routing: weight maps, per-tile composition, CLI --spatial / --map."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uir_lora.bank.store import open_bank
from uir_lora.compose.composer import Composition
from uir_lora.global_stage import GlobalAdapter, apply_global, thumbnail
from uir_lora.lab.testing.banks import random_adapter, reread_bank, with_global_adapter
from uir_lora.pipeline import DEFAULT_BANK, compose, estimate_spatial, load_bank, restore, router_for
from uir_lora.router.router import Scores
from uir_lora.router.spatial import estimate_regions, region_map_picture, spread, window_starts
from uir_lora.sampler.restore import SamplerOptions, restore_batch
from uir_lora.sampler.spatial import global_stage_maps, regional_global_stage, restore_regions


def split_image(height: int = 64, width: int = 512) -> torch.Tensor:
    """Dark noisy left half, bright right half."""
    image = torch.full((1, 3, height, width), 0.8)
    noise = torch.randn(1, 3, height, width // 2, generator=torch.Generator().manual_seed(0))
    image[..., : width // 2] = 0.2 + 0.05 * noise
    return image.clamp(0, 1)


@pytest.fixture()
def brightness_router(random_bank, monkeypatch):
    """The bank's router with similarities driven by brightness: dark -> noise, bright -> haze."""
    router = router_for(random_bank)

    def scores(crops: torch.Tensor) -> Scores:
        mean = crops.mean(dim=(1, 2, 3))
        return Scores(torch.stack([1 - mean, mean, torch.zeros_like(mean)], dim=1), None, None)  # noise, haze, jpeg

    monkeypatch.setattr(router, "scores", scores)
    monkeypatch.setattr(router, "scores_and_severities", lambda crops: (scores(crops), None))  # the windows' pass
    assert router.names == ["noise", "haze", "jpeg"]
    return router


def test_maps_follow_the_regions_and_are_smooth(brightness_router):
    regions = estimate_regions(brightness_router, split_image(), window=64, top_k=1, temperature=1.0)
    assert regions.weights.shape == (3, 1, 15)  # 3 LoRAs x 1 row x 15 columns of 64 px windows
    assert ((regions.weights > 0).sum(dim=0) == 1).all()  # top_k=1: one LoRA per window
    maps = regions.full_maps()
    assert maps.shape == (3, 64, 512)
    torch.testing.assert_close(maps.sum(dim=0), torch.ones(64, 512))
    assert maps[0, :, :200].min() > 0.99 and maps[1, :, 312:].min() > 0.99  # noise left, haze right
    assert maps[2].abs().max() == 0
    assert maps.diff(dim=-1).abs().max() < 0.1  # a ramp, not a step at the split


@pytest.mark.parametrize("shift", [0.6, 0.3])
def test_where_the_photo_doubts_a_whole_photo_kind_no_window_reads_more_of_it(brightness_router, monkeypatch, shift):
    """Haze's s_o is brightness - shift: the split image as a whole reads -0.1 (a doubt) with shift 0.6, +0.2 with
    0.3; its bright windows read 0.2 / 0.5 either way."""
    scores = brightness_router.scores

    def shifted(crops: torch.Tensor) -> Scores:
        read = scores(crops)
        return read._replace(similarities=read.similarities - torch.tensor([0.0, shift, 0.0]))

    monkeypatch.setattr(brightness_router, "scores", shifted)
    monkeypatch.setattr(brightness_router, "scores_and_severities", lambda crops: (shifted(crops), None))
    image = split_image()
    free = estimate_regions(brightness_router, image, window=64, top_k=2, temperature=1.0)
    brightness_router.whole_photo_index = [1]
    ruled = estimate_regions(brightness_router, image, window=64, top_k=2, temperature=1.0)
    photo = float(shifted(image).similarities[0, 1])
    assert free.similarities[1].max() > photo + 0.2  # the bright windows read more haze than the whole photo
    torch.testing.assert_close(ruled.similarities[[0, 2]], free.similarities[[0, 2]])  # other kinds untouched
    assert free.notes == ()
    if photo < 0:
        torch.testing.assert_close(ruled.similarities[1], free.similarities[1].clamp(max=photo))
        assert ruled.weights[1].sum() < free.weights[1].sum()
        bright = int((free.similarities[1] >= 0).sum())
        assert ruled.notes == (f"haze left out of {bright} of 15 windows that read it: the whole photo reads it at "
                               f"{float(torch.sigmoid(torch.tensor(photo))):.2f} (the bank's rule: a kind of the whole "
                               f"photo)",)
    else:  # the photo reads it: each window keeps its own reading (a cast on one part of a photo)
        torch.testing.assert_close(ruled.similarities, free.similarities)
        assert ruled.notes == ()



@pytest.mark.parametrize(("dark", "shift", "floored"), [(96, 0.1, True), (96, -0.1, False), (224, 0.1, False)])
def test_where_the_photo_and_most_windows_read_a_photo_wide_kind_every_window_reads_it(brightness_router,
                                                                                      monkeypatch, dark, shift,
                                                                                      floored):
    """Haze's s_o is brightness - 0.6 + shift on an image bright (0.8) but for its left ``dark`` px (0.2): with a dark
    fifth the whole photo reads it (+0.19) or doubts it (-0.01), and 13 or 12 of the 15 windows read it; with a dark
    left 44 % the photo reads it (+0.04) but only 9 windows do (haze on part of the photo)."""
    scores = brightness_router.scores

    def shifted(crops: torch.Tensor) -> Scores:
        read = scores(crops)
        return read._replace(similarities=read.similarities + torch.tensor([0.0, shift - 0.6, 0.0]))

    monkeypatch.setattr(brightness_router, "scores", shifted)
    monkeypatch.setattr(brightness_router, "scores_and_severities", lambda crops: (shifted(crops), None))
    image = torch.full((1, 3, 64, 512), 0.8)
    image[..., :dark] = 0.2
    free = estimate_regions(brightness_router, image, window=64, top_k=2, temperature=1.0)
    brightness_router.photo_wide_index = [1]
    ruled = estimate_regions(brightness_router, image, window=64, top_k=2, temperature=1.0)
    photo = float(shifted(image).similarities[0, 1])
    read = int((free.similarities[1] >= 0).sum())
    assert (photo >= 0, read) == {(96, 0.1): (True, 13), (96, -0.1): (False, 12), (224, 0.1): (True, 9)}[dark, shift]
    torch.testing.assert_close(ruled.similarities[[0, 2]], free.similarities[[0, 2]])  # other kinds untouched
    if floored:
        torch.testing.assert_close(ruled.similarities[1], free.similarities[1].clamp(min=photo))
        assert ruled.weights[1].sum() > free.weights[1].sum()
        assert ruled.notes == (f"haze given to 2 of 15 windows that did not read it: the whole photo reads it at "
                               f"{float(torch.sigmoid(torch.tensor(photo))):.2f} and 87% of the windows do (the "
                               f"bank's rule: a kind that covers the photo)",)
    else:  # the photo doubts it, or too few windows read it: each window keeps its own reading
        torch.testing.assert_close(ruled.similarities, free.similarities)
        assert ruled.notes == ()


@pytest.mark.parametrize(("field", "index", "shipped_kinds"),
                         [("whole_photo_kinds", "whole_photo_index", ["color_cast"]),
                          ("photo_wide_kinds", "photo_wide_index", ["haze"])])
def test_whole_photo_rules_are_lists_of_names_and_left_out_of_the_file_when_empty(random_bank, field, index,
                                                                                 shipped_kinds):
    from uir_lora.bank.manifest import read_manifest, write_manifest
    from uir_lora.errors import BankError

    manifest = read_manifest(random_bank.root)
    assert field not in manifest.to_json()["router"]
    setattr(manifest.router, field, ["haze"])
    write_manifest(manifest, random_bank.root)
    assert getattr(read_manifest(random_bank.root).router, field) == ["haze"]
    assert getattr(router_for(open_bank(random_bank.root)), index) == []  # a cosine router's s_o has no ½
    shipped = router_for(load_bank(DEFAULT_BANK))
    assert [shipped.names[i] for i in getattr(shipped, index)] == shipped_kinds
    data = read_manifest(random_bank.root).to_json()
    data["router"][field] = "haze"
    (random_bank.root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match=f"{field} must be a list of LoRA names"):
        read_manifest(random_bank.root)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(64, 256))
def test_maps_cover_every_pixel_and_sum_to_one(height, width, window):
    ys, xs, stride = window_starts(height, width, window)
    weights = torch.rand(4, len(ys), len(xs))
    maps = spread(weights / weights.sum(dim=0), (height, width), window, stride)
    torch.testing.assert_close(maps.sum(dim=0), torch.ones(maps.shape[1:]))
    assert maps.shape == (4, -(-height // 8), -(-width // 8))


def test_region_averages_tile_weights(brightness_router):
    regions = estimate_regions(brightness_router, split_image(), window=64, top_k=1, temperature=1.0)
    left, middle = regions.region((0, 64, 0, 128)), regions.region((0, 64, 192, 320))
    assert left.weights == pytest.approx({"noise": 1.0})
    assert min(middle.weights["noise"], middle.weights["haze"]) > 0.25  # the split: a blend of both
    assert sum(middle.weights.values()) == pytest.approx(1.0)


def test_uniform_maps_equal_global_composition(random_bank, embedded_backbone, photo):
    """With the same weights everywhere, per-tile composition must give the global result."""
    router = router_for(random_bank)
    (regions,) = estimate_spatial(random_bank, photo, window=64)
    regions.maps = torch.zeros_like(regions.maps)
    regions.maps[0], regions.maps[1] = 0.7, 0.3
    options = SamplerOptions(tile=64)
    fixed = compose(random_bank, None, {"noise": 0.7, "haze": 0.3}, "manual")
    per_tile = restore_regions(embedded_backbone, photo, [regions], lambda r: compose(random_bank, r), options)
    global_ = restore_batch(embedded_backbone, photo, [fixed], options)
    torch.testing.assert_close(per_tile, global_, atol=1e-5, rtol=0)
    assert router.names == regions.names


def test_each_side_restored_with_its_own_composition(random_bank, embedded_backbone, brightness_router):
    image = split_image()
    regions = estimate_regions(brightness_router, image, window=64, top_k=1, temperature=1.0)
    options = SamplerOptions(tile=192)
    spatial = restore_regions(embedded_backbone, image, [regions], lambda r: compose(random_bank, r), options)
    noise = restore_batch(embedded_backbone, image, [compose(random_bank, None, {"noise": 1.0})], options)
    haze = restore_batch(embedded_backbone, image, [compose(random_bank, None, {"haze": 1.0})], options)
    assert (noise - haze).abs().max() > 1e-3  # the two LoRAs really differ, so the test can fail
    torch.testing.assert_close(spatial[..., :150], noise[..., :150], atol=1e-5, rtol=0)
    torch.testing.assert_close(spatial[..., 360:], haze[..., 360:], atol=1e-5, rtol=0)


def test_pipeline_spatial_restore_and_strength(random_bank, embedded_backbone, photo):
    restored, compositions = restore(photo, embedded_backbone, random_bank, spatial=True, window=64)
    assert restored.shape == photo.shape and torch.isfinite(restored).all()
    (summary,) = compositions
    assert isinstance(summary, Composition) and summary.source == "router per region"
    assert sum(summary.weights.values()) == pytest.approx(1.0, abs=0.01)
    unchanged, _ = restore(photo, embedded_backbone, random_bank, spatial=True, window=64, strength=0.0)
    torch.testing.assert_close(unchanged, photo)
    # base backbone restored after per-tile merges: a plain restore equals a fresh one
    again, _ = restore(photo, embedded_backbone, random_bank, manual={"noise": 1.0})
    fresh, _ = restore(photo, embedded_backbone, random_bank, manual={"noise": 1.0})
    torch.testing.assert_close(again, fresh)


def test_map_picture(brightness_router):
    image = split_image()
    regions = estimate_regions(brightness_router, image, window=64, top_k=1, temperature=1.0)
    picture = region_map_picture(image, regions)
    assert picture.dtype == np.uint8 and picture.shape[1] == 512 and picture.shape[0] > 64
    left, right = picture[32, 40].astype(int), picture[32, 480].astype(int)
    assert np.abs(left - right).sum() > 60  # two regions, two colours


def test_cli_spatial_and_map(random_bank, photo, tmp_path, capsys):
    from uir_lora.images import save_image
    from uir_lora.lab.cli import main

    source = save_image(photo, tmp_path / "in.png")
    bank = ["--bank", random_bank.manifest.name, "--bank-dir", str(random_bank.root.parent)]
    assert main(["estimate", str(source), "--map", str(tmp_path / "map.png"), "--window", "64", *bank]) == 0
    assert (tmp_path / "map.png").stat().st_size > 0
    assert "per-region map" in capsys.readouterr().out
    out = tmp_path / "out.png"
    assert main(["restore", str(source), "-o", str(out), "--spatial", "--window", "64", "--strength", "0.5",
                 *bank]) == 0
    assert out.is_file() and "router per region" in capsys.readouterr().out


def test_cli_estimate_map_prints_what_the_rules_took_from_the_windows(random_bank, photo, tmp_path, capsys,
                                                                       monkeypatch):
    from uir_lora.commands import restore as command
    from uir_lora.images import save_image
    from uir_lora.lab.cli import main

    real = command.estimate_spatial

    def noted(*args, **kwargs):
        return [dataclasses.replace(regions, notes=("haze left out of 3 of 9 windows that read it",))
                for regions in real(*args, **kwargs)]

    monkeypatch.setattr(command, "estimate_spatial", noted)
    source = save_image(photo, tmp_path / "in.png")
    bank = ["--bank", random_bank.manifest.name, "--bank-dir", str(random_bank.root.parent)]
    assert main(["estimate", str(source), "--map", str(tmp_path / "map.png"), "--window", "64", *bank]) == 0
    assert "per-region: haze left out of 3 of 9 windows that read it" in capsys.readouterr().out


def test_cli_strength_zero_returns_the_input(random_bank, photo, tmp_path):
    from uir_lora.images import load_image, save_image
    from uir_lora.lab.cli import main

    source = save_image(photo, tmp_path / "in.png")
    bank = ["--bank", random_bank.manifest.name, "--bank-dir", str(random_bank.root.parent)]
    for strength, name in ((0.0, "zero.png"), (1.0, "full.png")):
        assert main(["restore", str(source), "-o", str(tmp_path / name), "--strength", str(strength), *bank]) == 0
    assert torch.equal(load_image(tmp_path / "zero.png"), load_image(source))
    assert not torch.equal(load_image(tmp_path / "full.png"), load_image(source))


@pytest.fixture()
def haze_adapter_bank(random_bank):
    """The random bank with a global adapter for haze (noise and jpeg have none)."""
    with_global_adapter(random_bank.root, "haze", random_adapter(7))
    return open_bank(random_bank.root)


def test_a_global_adapter_acts_only_where_its_kind_is_routed(haze_adapter_bank, brightness_router):
    """The bright right half is routed to haze: its adapter corrects that half, reads its exposure from it, and
    leaves the noisy left half alone (a whole-image adapter at the mean weight would touch both halves)."""
    bank = haze_adapter_bank
    image = split_image()
    regions = estimate_regions(brightness_router, image, window=64, top_k=1, temperature=1.0)
    out = regional_global_stage(image, regions, lambda r: compose(bank, r))
    assert torch.equal(out[..., :150], image[..., :150])
    assert (out[..., 360:] - image[..., 360:]).abs().max() > 1e-3
    darker = image.clone()
    darker[..., :150] *= 0.5  # still routed to noise; the haze adapter must not read it
    regions_darker = estimate_regions(brightness_router, darker, window=64, top_k=1, temperature=1.0)
    torch.testing.assert_close(regions_darker.weights, regions.weights)
    again = regional_global_stage(darker, regions_darker, lambda r: compose(bank, r))
    torch.testing.assert_close(again[..., 360:], out[..., 360:], atol=1e-6, rtol=0)


def test_uniform_maps_give_the_whole_image_stage_at_their_weight(haze_adapter_bank, photo):
    bank = haze_adapter_bank
    (regions,) = estimate_spatial(bank, photo, window=64)
    regions.maps = torch.zeros_like(regions.maps)
    regions.maps[regions.names.index("haze")], regions.maps[regions.names.index("noise")] = 0.6, 0.4
    out = regional_global_stage(photo, regions, lambda r: compose(bank, r))
    adapter = bank.global_adapter("haze")
    with torch.inference_mode():
        whole = apply_global(photo, adapter(thumbnail(photo)))
    torch.testing.assert_close(out, (photo + 0.6 * (whole - photo)).clamp(0, 1), atol=1e-5, rtol=0)


def test_the_per_region_restore_orders_each_tile_as_the_whole_image_restore_does(random_bank, embedded_backbone,
                                                                               photo):
    with_global_adapter(random_bank.root, "haze", random_adapter(7))
    unordered = open_bank(random_bank.root)
    (regions,) = estimate_spatial(unordered, photo, window=64)
    regions.maps = torch.zeros_like(regions.maps)
    regions.maps[regions.names.index("haze")], regions.maps[regions.names.index("noise")] = 0.6, 0.4
    options = SamplerOptions(tile=64)
    # nothing restored first: the global stage per region, then the tiles' passes, as before the order
    per_tile = restore_regions(embedded_backbone, photo, [regions], lambda r: compose(unordered, r), options)
    corrected = regional_global_stage(photo, regions, lambda r: compose(unordered, r))
    assert torch.equal(per_tile, restore_regions(embedded_backbone, corrected, [regions],
                                                 lambda r: compose(unordered, r), options, passes_only=True))
    manifest = json.loads((random_bank.root / "manifest.json").read_text())
    next(entry for entry in manifest["loras"] if entry["name"] == "noise")["restored_before"] = ["haze"]
    (random_bank.root / "manifest.json").write_text(json.dumps(manifest))
    bank = open_bank(random_bank.root)
    # noise before the haze stage, tile by tile: noise's pass, the regional stage on its output, and no pass after
    # it (the haze LoRA sits the composition out), as the whole-image restore orders the same weights
    ordered = restore_regions(embedded_backbone, photo, [regions], lambda r: compose(bank, r), options)
    denoised = restore_batch(embedded_backbone, photo, [compose(bank, None, {"noise": 0.4})], options)
    by_hand = regional_global_stage(denoised, regions, lambda r: compose(bank, r))
    torch.testing.assert_close(ordered, by_hand, atol=1e-5, rtol=0)
    assert (ordered - per_tile).abs().max() > 1e-3


def test_a_regions_dehazing_takes_the_transmission_floor_of_its_maps_weight(random_bank):
    """The per-region stage runs the adapter at weight 1 and blends by the map; its transmission floor must still
    be the one of the map's weight (an unsure haze is stretched less), as in the whole-image stage."""
    adapter = GlobalAdapter(dehaze=True)
    torch.nn.init.constant_(adapter.dehaze_head.bias, 20.0)  # omega at its cap: a dense haze read
    with_global_adapter(random_bank.root, "haze", adapter.eval())
    bank = open_bank(random_bank.root)
    generator = torch.Generator().manual_seed(0)
    scene = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=128, mode="nearest")
    transmission = torch.linspace(0.6, 0.1, 128).view(1, 1, 1, -1)
    hazy = scene * transmission + 0.9 * (1 - transmission)
    (regions,) = estimate_spatial(bank, hazy, window=64)
    regions.maps = torch.zeros_like(regions.maps)
    regions.maps[regions.names.index("haze")], regions.maps[regions.names.index("noise")] = 0.6, 0.4
    out = regional_global_stage(hazy, regions, lambda r: compose(bank, r))
    with torch.inference_mode():
        params = bank.global_adapter("haze")(thumbnail(hazy))
        floor_of = {weight: dataclasses.replace(params, sureness=torch.tensor([[weight]])) for weight in (0.6, 1.0)}
        unsure, sure = ((hazy + 0.6 * (apply_global(hazy, floor_of[w]) - hazy)).clamp(0, 1) for w in (0.6, 1.0))
    torch.testing.assert_close(out, unsure, atol=1e-5, rtol=0)
    assert (out - sure).abs().max() > 1e-2  # at weight 1 the floor is lower: a different image


def test_a_regions_dehazing_takes_the_haze_severity_read_where_its_map_is(random_bank):
    """A sure read of mild haze keeps the high floor in a region as in the whole image: the floor comes down only
    as far as the severity the encoder read where the haze's map lies (weighted by the map)."""
    adapter = GlobalAdapter(dehaze=True)
    torch.nn.init.constant_(adapter.dehaze_head.bias, 20.0)
    with_global_adapter(random_bank.root, "haze", adapter.eval())
    bank = open_bank(random_bank.root)
    scene = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
                                            size=128, mode="nearest")
    transmission = torch.linspace(0.6, 0.1, 128).view(1, 1, 1, -1)
    hazy = scene * transmission + 0.9 * (1 - transmission)
    (regions,) = estimate_spatial(bank, hazy, window=64)
    assert regions.severities == {}  # the random bank's encoder reads no severity: the weight alone decides
    regions.maps = torch.zeros_like(regions.maps)
    regions.maps[regions.names.index("haze")] = 1.0
    with torch.inference_mode():
        params = bank.global_adapter("haze")(thumbnail(hazy))
        expected = {read: apply_global(hazy, dataclasses.replace(params, sureness=torch.tensor([[1.0]]),
                                                                 severity=torch.tensor([[read]])))
                    for read in (0.1, 0.9)}
    grid = regions.weights.shape[1:]
    outputs = {}
    for read in (0.1, 0.9):
        regions.severities = {"haze": torch.full(grid, read)}
        outputs[read] = regional_global_stage(hazy, regions, lambda r: compose(bank, r))
        torch.testing.assert_close(outputs[read], expected[read].clamp(0, 1), atol=1e-5, rtol=0)
    assert (outputs[0.1] - outputs[0.9]).abs().max() > 1e-2  # dense haze: a lower floor, a different image
    # the reading is averaged where the map lies: a dense read outside the map does not count
    regions.severities = {"haze": torch.full(grid, 0.1)}
    regions.severities["haze"][:, -1] = 0.9
    regions.maps[regions.names.index("haze")] = 0.0
    regions.maps[regions.names.index("haze"), :, :4] = 1.0
    weight = regions.full_maps()[regions.names.index("haze")]
    assert regions.severity_where("haze", weight) == pytest.approx(0.1, abs=1e-3)
    assert regions.severity_where("noise", weight) is None


def test_per_window_routing_reads_severities_as_the_whole_image_routing_does(photo):
    """The shipped bank's encoder reads a severity for each kind it was trained on in every window, and a tile's
    routing carries the mean of its windows (what its composition hands the global stage)."""
    from uir_lora import pipeline

    bank = pipeline.load_bank(pipeline.DEFAULT_BANK)
    hazy = 0.5 * photo + 0.45
    (regions,) = estimate_spatial(bank, hazy, window=64)
    grid = regions.weights.shape[1:]
    assert set(regions.severities) == set(bank.manifest.names) - {"clean"}
    assert all(reading.shape == grid and 0 <= reading.min() and reading.max() <= 1
               for reading in regions.severities.values())
    height, width = hazy.shape[-2:]
    whole = regions.region((0, height, 0, width))
    assert whole.severities["haze"] == pytest.approx(float(regions.severities["haze"].mean()), abs=1e-6)
    (one_window,) = estimate_spatial(bank, hazy[..., :64, :64], window=64)  # one window: the image routed whole
    routed = pipeline.estimate(bank, hazy[..., :64, :64])[0]
    assert float(one_window.severities["haze"][0, 0]) == pytest.approx(routed.severities["haze"], abs=1e-5)


def test_a_weak_second_kind_gets_no_global_stage_in_any_region(haze_adapter_bank, photo):
    """The bank's do-no-harm rules hold per window: haze at a presence under the follower floor beside noise
    is left out of the tiles, and out of the global stage too."""
    bank = haze_adapter_bank
    bank.manifest.router.follower_floor = 0.5
    (regions,) = estimate_spatial(bank, photo, window=64)
    regions.normalisation = "sigmoid"
    regions.maps = torch.zeros_like(regions.maps)
    regions.maps[regions.names.index("noise")], regions.maps[regions.names.index("haze")] = 0.9, 0.3
    assert torch.equal(regional_global_stage(photo, regions, lambda r: compose(bank, r)), photo)
    regions.maps[regions.names.index("haze")] = 0.6  # above the floor: applied
    assert not torch.equal(regional_global_stage(photo, regions, lambda r: compose(bank, r)), photo)


def test_the_strength_map_follows_each_windows_own_damage(brightness_router):
    """Do no harm region by region: windows sure of damage restore in full, windows that read none are left
    alone, and a uniform presence gives the whole-image ramp everywhere."""
    regions = estimate_regions(brightness_router, split_image(), window=64, top_k=1, temperature=1.0)
    columns = regions.weights.shape[-1]
    regions.weights = torch.zeros_like(regions.weights)
    regions.weights[0, :, : columns // 2] = 0.9  # noise, sure, on the left
    regions.weights[0, :, columns // 2 :] = 0.1  # below the floor on the right
    strength = regions.strength_map(full=0.5, floor=0.2)
    assert strength.shape == (64, 512)
    assert strength[:, :180].min() > 0.99 and strength[:, 340:].max() < 0.01
    assert strength.diff(dim=-1).abs().max() < 0.1  # a ramp between the regions, not a step
    regions.weights[0] = 0.35
    torch.testing.assert_close(regions.strength_map(full=0.5, floor=0.2), torch.full((64, 512), 0.5))
    torch.testing.assert_close(regions.strength_map(full=None, floor=None), torch.ones(64, 512))


def presence_regions(bank, image: torch.Tensor, weights: dict[str, float]):
    """The per-region routing of ``image`` with uniform presence maps of ``weights`` (a presence router's)."""
    regions = estimate_regions(router_for(bank), image, 64, None, None)
    regions.normalisation = "sigmoid"
    regions.maps = torch.zeros_like(regions.maps)
    for name, weight in weights.items():
        regions.maps[regions.names.index(name)] = weight
    return regions


def sure_haze_after_noise(root, photo: torch.Tensor):
    """A bank that reads the image again after noise's pass, the photo's per-region routing (noise 0.9, haze 0.6
    everywhere), and a second reading that finds haze at 0.95, recording the images it is given."""
    bank = reread_bank(root, 0.5, 0.9)
    seen: list[torch.Tensor] = []

    def read_again(image: torch.Tensor):
        seen.append(image)
        return presence_regions(bank, image, {"noise": 0.2, "haze": 0.95})

    return bank, presence_regions(bank, photo, {"noise": 0.9, "haze": 0.6}), read_again, seen


def test_the_per_region_stage_reads_the_first_pass_output_again_as_the_whole_image_restore_does(random_bank,
                                                                                                  photo):
    bank, regions, read_again, seen = sure_haze_after_noise(random_bank.root, photo)

    def compose_fn(result):
        return compose(bank, result)

    # every window keeps haze at 0.6 after noise's pass: the second reading raises it to 0.95, which reaches the
    # bank's 0.9, so the stage runs at 1 everywhere, as the whole-image restore runs it; read once for all windows
    raised = regional_global_stage(photo, regions, compose_fn, read_again)
    assert len(seen) == 1 and seen[0] is photo
    in_full = regional_global_stage(photo, presence_regions(bank, photo, {"noise": 0.9, "haze": 1.0}), compose_fn)
    torch.testing.assert_close(raised, in_full, atol=1e-6, rtol=0)
    as_read = regional_global_stage(photo, regions, compose_fn)
    assert (raised - as_read).abs().max() > 1e-3
    # haze doubted below the floor, or no kind restored before its stage: nothing to read again
    for weights in ({"noise": 0.9, "haze": 0.3}, {"haze": 0.6, "jpeg": 0.3}):
        doubted = presence_regions(bank, photo, weights)
        assert torch.equal(regional_global_stage(photo, doubted, compose_fn, read_again),
                           regional_global_stage(photo, doubted, compose_fn))
    assert len(seen) == 1


def test_the_per_region_restore_reads_the_output_of_its_first_pass_again(random_bank, embedded_backbone, photo):
    bank, regions, read_again, seen = sure_haze_after_noise(random_bank.root, photo)
    options = SamplerOptions(tile=64)
    restored = restore_regions(embedded_backbone, photo, [regions], lambda r: compose(bank, r), options,
                               read_again=read_again)
    denoised = restore_batch(embedded_backbone, photo, [compose(bank, None, {"noise": 0.9})], options)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], denoised, atol=1e-5, rtol=0)
    full = presence_regions(bank, photo, {"noise": 0.9, "haze": 1.0})
    torch.testing.assert_close(restored, regional_global_stage(denoised, full, lambda r: compose(bank, r)),
                               atol=1e-5, rtol=0)


def test_the_per_region_restore_routes_the_denoised_image_for_its_second_reading(random_bank, own_backbone, photo,
                                                                                 monkeypatch):
    from uir_lora import pipeline

    bank = reread_bank(random_bank.root, 0.5, 0.9)
    readings = [{"noise": 0.9, "haze": 0.6}, {"noise": 0.2, "haze": 0.95}]
    routed = []

    def route_regions(bank_, images, window, top_k, temperature):
        routed.append(images)
        return [presence_regions(bank, images, readings[len(routed) - 1])]

    monkeypatch.setattr(pipeline, "_route_regions", route_regions)
    restored, _ = restore(photo, own_backbone, bank, spatial=True, window=64)
    assert len(routed) == 2 and routed[0] is photo  # the photo, then noise's pass over it
    assert (routed[1] - photo).abs().max() > 1e-3
    assert restored.shape == photo.shape


def test_a_window_takes_its_second_reading_only_inside_the_region_its_kind_covers(random_bank, caplog):
    caplog.set_level(logging.INFO, logger="uir_lora.sampler.spatial")
    bank = reread_bank(random_bank.root, 0.5, 0.9)
    image = torch.rand(1, 3, 64, 320, generator=torch.Generator().manual_seed(0))
    regions = presence_regions(bank, image, {"noise": 0.9})
    regions.maps[regions.names.index("haze"), :, : 192 // 8] = 0.6  # haze on the left 192 px of 320 (maps at 1/8)
    regions.spread_full = lambda values: values  # read each window's weight from the maps the stage is given
    assert (len(regions.maps[0]), regions.window) == (64 // 8, 64)

    def read_again():
        return presence_regions(bank, image, {"noise": 0.2, "haze": 0.95})

    def compose_fn(result):
        return compose(bank, result)

    haze = global_stage_maps(regions, compose_fn, read_again)["haze"][0][0]
    first = global_stage_maps(regions, compose_fn)["haze"][0][0]
    # windows start every 32 px: those from 0 to 96 px lie inside the hazy part with every neighbour keeping haze,
    # and run in full; the window at 128 px keeps 0.6 but borders one half hazy (0.3, under the floor): there the
    # presence is also how much of the window the haze covers, and it keeps its first reading
    torch.testing.assert_close(first[:5], torch.full((5,), 0.6), atol=1e-5, rtol=0)
    torch.testing.assert_close(haze[:4], torch.ones(4))
    torch.testing.assert_close(haze[4:], first[4:])
    assert "haze raised in 4 of 9 windows (0.60 -> 1.00 on average)" in caplog.text  # what the stage ran with
