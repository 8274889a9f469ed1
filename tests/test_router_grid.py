"""Where the router's encoder looks: crops on a grid over the whole image (EncoderSpec.grid_crops)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uir_lora.bank.manifest import EncoderSpec, parse_manifest
from uir_lora.errors import BankError
from uir_lora.router.encoder import DegradationEncoder, crop_boxes, grid_boxes

SIZE = 224


def covered(height: int, width: int, boxes: list[tuple[int, int]], size: int = SIZE) -> float:
    mask = torch.zeros(height, width, dtype=torch.bool)
    for y, x in boxes:
        mask[y : y + size, x : x + size] = True
    return float(mask.float().mean())


@settings(max_examples=60, deadline=None)
@given(st.integers(64, 2000), st.integers(64, 2000), st.integers(1, 5), st.integers(1, 16))
def test_grid_crops_stay_inside_reach_every_edge_and_respect_the_budget(height, width, least, extra):
    most = least + extra
    boxes = grid_boxes(height, width, SIZE, least, most)
    assert 1 <= len(boxes) <= most and len(set(boxes)) == len(boxes)
    for y, x in boxes:
        assert 0 <= y and y + min(SIZE, height) <= height and 0 <= x and x + min(SIZE, width) <= width
    for starts, length in (({y for y, _ in boxes}, height), ({x for _, x in boxes}, width)):
        if len(starts) > 1:  # several rows (columns) span the image from edge to edge
            assert min(starts) == 0 and max(starts) == length - SIZE
        else:  # one row (column): centred
            assert starts == {max(0, length - SIZE) // 2}
    assert grid_boxes(height, width, SIZE, least, most) == boxes  # deterministic


def test_a_tall_photo_is_seen_over_far_more_of_its_area_than_with_corner_crops():
    corners = crop_boxes(1440, 960, SIZE, 4)
    grid = grid_boxes(1440, 960, SIZE, 4, 12)
    assert len(grid) == 12 and len({y for y, _ in grid}) == 4  # 4 rows x 3 columns, like the photo's shape
    assert covered(1440, 960, corners) < 0.15 and covered(1440, 960, grid) > 0.43


def test_a_512_square_keeps_four_crops():
    """At 512x512, where evaluate checks the routing speed goal, the encoder keeps its four crops: more crops
    would cost time that goal counts."""
    boxes = grid_boxes(512, 512, SIZE, 4, 12)
    assert sorted(boxes) == [(0, 0), (0, 288), (288, 0), (288, 288)]
    assert grid_boxes(200, 180, SIZE, 4, 12) == [(0, 0)]


@pytest.mark.parametrize("size", [(300, 460), (900, 1300)])  # 4 crops each; 12 each, over several batches
def test_batched_crops_give_the_mean_of_each_crop_features(size):
    torch.manual_seed(0)
    images = torch.rand(2, 3, *size)
    encoder = DegradationEncoder(EncoderSpec())
    boxes = encoder.boxes(*size)
    assert len(boxes) == (4 if size[0] < 512 else 12)
    one_by_one = torch.stack([encoder.crop_features(images[..., y : y + SIZE, x : x + SIZE]) for y, x in boxes])
    torch.testing.assert_close(encoder.features(images), one_by_one.mean(dim=0), atol=1e-4, rtol=1e-4)


def test_a_manifest_without_grid_crops_keeps_the_corner_crops_and_their_feature_caches(random_bank):
    data = json.loads((random_bank.root / "manifest.json").read_text())
    data["encoder"].pop("grid_crops", None)
    spec = parse_manifest(data).encoder
    assert spec.grid_crops == 0
    encoder = DegradationEncoder(spec)
    assert encoder.boxes(1440, 960) == crop_boxes(1440, 960, SIZE, spec.crops)
    assert "grid_crops" not in encoder.spec_key()
    gridded = DegradationEncoder(EncoderSpec(grid_crops=12))
    assert gridded.spec_key()["grid_crops"] == 12
    assert gridded.spec_key(whole_images=False) == encoder.spec_key(whole_images=False)  # crop-sized: same cache
    data["encoder"]["grid_crops"] = 100
    with pytest.raises(BankError, match="grid_crops"):
        parse_manifest(data)
