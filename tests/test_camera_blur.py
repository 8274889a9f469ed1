"""The third training synthesis of motion and defocus blur, through a camera's pipeline (uir_lora.lab.camera_blur)."""

from __future__ import annotations

import pytest
import torch

from uir_lora.degrade._common import convolve
from uir_lora.lab.camera_blur import KINDS, camera_sharp, degrade_camera_blur, lens_kernel, shake_kernel


def _photo(seed: int = 0, shape: tuple[int, int] = (96, 128)) -> torch.Tensor:
    """A gradient with edges a few pixels wide, as a photo's (not pixel noise, which a camera's sharpening would
    amplify), below the clip."""
    from uir_lora.degrade._common import gaussian_blur

    gen = torch.Generator().manual_seed(seed)
    rows = torch.linspace(0.1, 0.8, shape[0]).view(1, 1, -1, 1)
    cols = torch.linspace(0.1, 0.8, shape[1]).view(1, 1, 1, -1)
    base = torch.cat([rows * cols, rows.expand(1, 1, *shape), 0.9 - cols.expand(1, 1, *shape)], dim=1)
    texture = gaussian_blur((torch.rand((1, 3, *shape), generator=gen) > 0.5).float(), 1.0)
    return (0.7 * base + 0.25 * texture).clamp(0.0, 0.9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(96, 128), (40, 40)])
def test_each_kind_blurs_within_range_and_is_reproducible(kind: str, shape: tuple[int, int]) -> None:
    clean = _photo(shape=shape)
    first = degrade_camera_blur(clean, kind, torch.Generator().manual_seed(1), [0.7])
    again = degrade_camera_blur(clean, kind, torch.Generator().manual_seed(1), [0.7])
    other = degrade_camera_blur(clean, kind, torch.Generator().manual_seed(2), [0.7])
    assert first.shape == clean.shape and torch.isfinite(first).all()
    assert 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("kind", KINDS)
def test_more_severe_blur_takes_more_detail(kind: str) -> None:
    clean = _photo()

    def damage(severity: float) -> float:
        return sum(float((degrade_camera_blur(clean, kind, torch.Generator().manual_seed(seed), [severity])
                          - clean).abs().mean()) for seed in range(6))

    assert damage(0.9) > 1.5 * damage(0.05)


@pytest.mark.parametrize("length", [3.0, 12.0, 28.0])
def test_a_shake_kernel_is_normalised_and_spans_its_length(length: float) -> None:
    for seed in range(4):
        kernel = shake_kernel(length, torch.Generator().manual_seed(seed))
        assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] % 2 == 1
        assert abs(float(kernel.sum()) - 1.0) < 1e-5 and float(kernel.min()) >= 0.0
        rows, cols = torch.nonzero(kernel > 0, as_tuple=True)
        extent = max(int(rows.max() - rows.min()), int(cols.max() - cols.min()))
        assert length - 1 <= extent <= length + 2


def test_where_the_hand_slows_the_kernel_gathers_more_light() -> None:
    from uir_lora.lab.camera_blur import _splat, _time_samples

    # three equal time steps: two on the spot at 2 px, one across 8 px
    path = torch.tensor([[2.0, 2.0], [2.0, 2.0], [2.0, 2.0], [10.0, 2.0]])
    kernel = _splat(*_time_samples(path), 13)
    assert float(kernel[2, 2]) > 2 / 3  # two thirds of the time at the start (and the move's first step)
    assert float(kernel[2, 4:11].sum()) > 0.2  # the last third spread along the move
    assert float(kernel[2, 2]) > 10 * float(kernel[2, 6]) > 0


def test_a_light_blurred_in_linear_light_smears_brighter_than_a_blur_of_display_values() -> None:
    """A camera blurs light: a lamp's streak stays bright, where a blur of display values (the two other
    syntheses) leaves a grey one."""
    from uir_lora.lab.camera_blur import _through_camera

    dark = torch.full((1, 3, 41, 41), 0.05)
    dark[..., 20, 18:23] = 1.0
    kernel = torch.zeros(9, 9)
    kernel[4, :] = 1 / 9
    display = convolve(dark, kernel)
    camera = [_through_camera(dark, kernel, torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert float(display[0, 1, 20, 10:31].max()) < 0.65
    assert max(float(image[0, 1, 20, 10:31].median()) for image in camera) > 0.65


def test_only_clipped_pixels_get_back_light_past_the_clip() -> None:
    from uir_lora.lab.camera_blur import _extend_highlights

    linear = torch.tensor([0.2, 0.9, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3).contiguous()
    extended = [_extend_highlights(linear, torch.Generator().manual_seed(seed)) for seed in range(8)]
    assert all(torch.equal(image[..., :2], linear[..., :2]) for image in extended)
    assert all(float(image[0, 0, 0, 2]) >= 1.0 for image in extended)
    assert max(float(image[0, 0, 0, 2]) for image in extended) > 2.0


def test_a_lens_kernel_is_a_normalised_disc_of_its_radius() -> None:
    for seed in range(6):
        kernel = lens_kernel(4.0, torch.Generator().manual_seed(seed))
        assert abs(float(kernel.sum()) - 1.0) < 1e-5 and float(kernel.min()) >= 0.0
        assert float(kernel[kernel.shape[0] // 2, 0]) == 0.0  # nothing past the rim


def test_a_photo_through_the_camera_in_focus_keeps_its_detail() -> None:
    from uir_lora.lab.evaluate.metrics import psnr

    clean = _photo()
    taken = camera_sharp(clean, torch.Generator().manual_seed(0))
    blurred = degrade_camera_blur(clean, "motion_blur", torch.Generator().manual_seed(0), [0.5])
    assert float(psnr(taken, clean)) > 30.0 > float(psnr(blurred, clean))


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="draws .*not 'haze'"):
        degrade_camera_blur(_photo(), "haze", torch.Generator())
