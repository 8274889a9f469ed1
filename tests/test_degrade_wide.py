"""The wide synthesis profile: the field's models beside the standard ones, and the camera finish."""

from __future__ import annotations

import pytest
import torch

from uir_lora.degrade import KINDS, degrade
from uir_lora.degrade.wide import WIDE_KINDS, anisotropic_kernel, sinc_kernel, wide_blur_kernel


def _photo(seed: int = 0, side: int = 64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((1, 3, 8, 8), generator=gen)
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)


@pytest.mark.parametrize("kind", KINDS)
def test_wide_profile_is_seeded_in_range_and_changes_the_image(kind: str) -> None:
    image = _photo()
    first = degrade(image, kind, generator=torch.Generator().manual_seed(3), severity=0.7, profile="wide")
    again = degrade(image, kind, generator=torch.Generator().manual_seed(3), severity=0.7, profile="wide")
    assert torch.equal(first, again)
    assert first.shape == image.shape and 0.0 <= float(first.min()) and float(first.max()) <= 1.0
    assert float((first - image).abs().mean()) > 1e-3


def test_standard_profile_is_the_default() -> None:
    image = _photo(1)
    default = degrade(image, "haze", generator=torch.Generator().manual_seed(9))
    standard = degrade(image, "haze", generator=torch.Generator().manual_seed(9), profile="standard")
    assert torch.equal(default, standard)


@pytest.mark.parametrize("kind", sorted(WIDE_KINDS))
def test_wide_profile_draws_models_the_standard_one_never_does(kind: str) -> None:
    """Over a few seeds, some wide outputs differ from every standard output of the same seed."""
    image = _photo(2)
    differs = [not torch.equal(degrade(image, kind, generator=torch.Generator().manual_seed(s), severity=0.5),
                               degrade(image, kind, generator=torch.Generator().manual_seed(s), severity=0.5,
                                       profile="wide"))
               for s in range(6)]
    assert any(differs)


def test_camera_finish_alone_keeps_clean_photos_close() -> None:
    """An empty kind list with the wide profile: only faint noise and mild JPEG, on most images."""
    image = _photo(4).expand(16, -1, -1, -1).contiguous()
    out = degrade(image, [], generator=torch.Generator().manual_seed(0), profile="wide")
    change = (out - image).abs().mean((1, 2, 3))
    assert float(change.max()) < 0.03
    assert int((change > 0).sum()) >= 6  # most images get a finish


def test_the_wide_profile_without_its_finish_leaves_the_finish_out() -> None:
    image = _photo(4).expand(16, -1, -1, -1).contiguous()
    assert torch.equal(degrade(image, [], generator=torch.Generator().manual_seed(0), profile="wide", finish=False),
                       image)
    finished = degrade(image, "haze", generator=torch.Generator().manual_seed(1), severity=0.5, profile="wide")
    bare = degrade(image, "haze", generator=torch.Generator().manual_seed(1), severity=0.5, profile="wide",
                   finish=False)
    change = (finished - bare).abs().mean((1, 2, 3))
    assert int((change > 0).sum()) >= 6 and float(change.max()) < 0.03  # the same haze; the finish is the difference


def test_unknown_profile_names_the_choices() -> None:
    with pytest.raises(ValueError, match="standard"):
        degrade(_photo(), "noise", profile="fancy")


@pytest.mark.parametrize("shape", ["gaussian", "generalised", "plateau"])
def test_kernels_are_normalised_and_elongated_along_their_angle(shape: str) -> None:
    kernel = anisotropic_kernel(3.0, 1.0, 0.0, shape, beta=1.5)
    assert abs(float(kernel.sum()) - 1.0) < 1e-5 and float(kernel.min()) >= 0.0
    centre = kernel.shape[0] // 2
    assert float(kernel[centre, :].sum()) > float(kernel[:, centre].sum())  # wider along x at angle 0


def test_sinc_and_random_kernels_sum_to_one() -> None:
    assert abs(float(sinc_kernel(1.2, 15).sum()) - 1.0) < 1e-5
    gen = torch.Generator().manual_seed(0)
    for severity in (0.0, 0.5, 1.0):
        kernel = wide_blur_kernel(severity, gen)
        assert kernel.shape[0] % 2 == 1 and abs(float(kernel.sum()) - 1.0) < 1e-4


def test_wide_motion_blur_draws_the_faint_shake_of_a_short_exposure_that_the_standard_profile_never_does() -> None:
    """At the lowest severity, some wide draws stay far closer to the photo than any standard draw (4 px and up)."""
    image = _photo(3, side=96)

    def closest(profile: str) -> float:
        errors = [float((degrade(image, "motion_blur", generator=torch.Generator().manual_seed(s), severity=0.0,
                                 profile=profile, finish=False) - image).abs().mean()) for s in range(12)]
        return min(errors)

    assert closest("wide") < 0.5 * closest("standard")
