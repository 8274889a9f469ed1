"""frame_side: a training crop degraded as a window of a larger photo gets that photo's drop sizes."""

from __future__ import annotations

import pytest
import torch

from uir_lora.degrade import degrade
from uir_lora.degrade._common import randint
from uir_lora.degrade.lens import _MAX_DROPS, _drop_field
from uir_lora.lab.train.trainer import PairDataset

FRAME_KINDS = ("raindrop", "haze", "snow")


def _image(side: int, seed: int = 0) -> torch.Tensor:
    small = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(small, size=side, mode="bilinear")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crop_sees_the_photos_drops(seed: int) -> None:
    """A 64 px crop with frame_side=256 shows exactly the drops of the 256 px photo in its window."""
    full = _image(256, seed)
    weight_full, *_ = _drop_field(full, 0.7, torch.Generator().manual_seed(seed))
    # the crop's position is drawn right after the drop parameters
    gen = torch.Generator().manual_seed(seed)
    torch.rand((_MAX_DROPS, 7), generator=gen)
    top, left = randint(gen, 0, 192), randint(gen, 0, 192)
    crop = full[..., top:top + 64, left:left + 64]
    weight_crop, *_ = _drop_field(crop, 0.7, torch.Generator().manual_seed(seed), frame_side=256)
    torch.testing.assert_close(weight_crop, weight_full[top:top + 64, left:left + 64], atol=1e-5, rtol=0)
    weight_small, *_ = _drop_field(crop, 0.7, torch.Generator().manual_seed(seed))  # the crop as a whole photo
    assert not torch.allclose(weight_small, weight_crop, atol=1e-3)


def test_drop_sizes_match_the_photo_on_average() -> None:
    """Drop coverage of crops (frame 256) matches whole 256 px photos; without the frame it is 4x smaller."""
    def coverage(side: int, frame: int | None) -> float:
        return sum(float((_drop_field(_image(side, s), 0.5, torch.Generator().manual_seed(s), frame)[0] > 0.5)
                         .float().mean()) for s in range(24)) / 24

    def drop_edge(side: int, frame: int | None) -> float:
        """Edge pixels per covered pixel: ~2/radius, so 4x larger for 4x smaller drops."""
        total_edge = total_area = 0.0
        for s in range(24):
            mask = (_drop_field(_image(side, s), 0.5, torch.Generator().manual_seed(s), frame)[0] > 0.5).float()
            total_edge += float((mask[1:] != mask[:-1]).sum() + (mask[:, 1:] != mask[:, :-1]).sum())
            total_area += float(mask.sum())
        return total_edge / total_area

    assert abs(coverage(64, 256) - coverage(256, None)) < 0.05
    assert drop_edge(64, None) > 2.5 * drop_edge(256, None)
    assert drop_edge(64, 256) < 1.5 * drop_edge(256, None)


@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_frame_side_is_seeded_and_defaults_to_the_images_own_side(kind: str) -> None:
    crop = _image(64)

    def run(frame: int | None) -> torch.Tensor:
        return degrade(crop, kind, generator=torch.Generator().manual_seed(3), severity=1.0, frame_side=frame)

    assert torch.equal(run(None), run(64))  # the image's own side: the whole photo
    assert torch.equal(run(256), run(256)) and not torch.equal(run(256), run(None))
    out = run(256)
    assert out.shape == crop.shape and 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_other_kinds_ignore_frame_side() -> None:
    crop = _image(64)
    run = lambda frame: degrade(crop, "motion_blur", generator=torch.Generator().manual_seed(3), frame_side=frame)  # noqa: E731
    assert torch.equal(run(None), run(256))


@pytest.mark.parametrize("bad", [32, 0, 1.5, True])
def test_bad_frame_side_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="frame_side"):
        degrade(_image(64), "raindrop", generator=torch.Generator().manual_seed(0), frame_side=bad)


def test_pair_dataset_passes_the_frame() -> None:
    crops = (_image(48).repeat(4, 1, 1, 1) * 255).to(torch.uint8)
    a, b = PairDataset(crops, "raindrop", 32, 4, 0), PairDataset(crops, "raindrop", 32, 4, 0, frame_side=256)
    assert torch.equal(a[1][1], b[1][1]) and not torch.equal(a[1][0], b[1][0])
    with pytest.raises(ValueError, match="--frame-side >= 32"):
        PairDataset(crops, "raindrop", 32, 4, 0, frame_side=16)
