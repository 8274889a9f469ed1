"""The whole view: haze must also show in a small view of the whole image, where blur no longer shows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from uir_lora.bank.manifest import WHOLE_VIEW_SIDE, read_manifest
from uir_lora.degrade import degrade
from uir_lora.errors import BankError
from uir_lora.pipeline import DEFAULT_BANK, load_bank
from uir_lora.router.router import Router, whole_view


@pytest.fixture(scope="module")
def shipped() -> Path:
    return load_bank(DEFAULT_BANK).root


@pytest.fixture(scope="module")
def router(shipped) -> Router:
    return Router.of_folder(shipped)


def test_the_view_keeps_the_aspect_and_never_enlarges():
    wide = torch.rand(2, 3, 300, 600)
    assert whole_view(wide, 128).shape == (2, 3, 128, 256)
    small = torch.rand(1, 3, 100, 90)
    assert whole_view(small, 128) is small


def test_the_shipped_bank_confirms_haze_only(router):
    assert router.manifest.router.whole_view_kinds == ["haze"]
    assert [router.names[i] for i in router.whole_view_index] == ["haze"]
    assert router.whole_view_features(torch.rand(1, 3, 100, 120)) is None  # no larger than the view: no veto


def test_the_view_can_lower_haze_and_never_raise_it_and_leaves_other_kinds(router, photo_256):
    generator = torch.Generator().manual_seed(0)
    images = torch.cat([photo_256, degrade(photo_256, ["defocus_blur"], generator=generator, severity=0.8),
                        degrade(photo_256, ["haze"], generator=generator, severity=0.5)]).clamp(0, 1)
    raw = router.encoder.features(images)
    whole = router.whole_view_features(images)
    alone = router.feature_scores(raw).similarities
    confirmed = router.feature_scores(raw, whole).similarities
    view = router.feature_scores(whole).similarities
    haze = router.names.index("haze")
    others = [i for i in range(len(router.names)) if i != haze]
    assert torch.equal(confirmed[:, others], alone[:, others])
    assert torch.equal(confirmed[:, haze], torch.minimum(alone[:, haze], view[:, haze]))
    # what `route` and the restore use (with the bank's exposure check too, which leaves haze alone)
    assert torch.equal(router.scores(images).similarities,
                       router.feature_scores(raw, whole, router.exposure_factors(images)).similarities)
    assert torch.equal(router.scores(images).similarities[:, haze], confirmed[:, haze])
    assert torch.sigmoid(confirmed[2, haze]) > 0.5, "real haze must survive the view"


def test_a_bank_without_the_view_is_scored_from_the_crops_alone(router, shipped, photo_256, tmp_path):
    folder = tmp_path / "bank"
    shutil.copytree(shipped, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["router"]["whole_view_kinds"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    plain = Router.of_folder(folder)
    assert plain.whole_view_features(photo_256) is None
    assert torch.equal(plain.scores(photo_256).similarities,
                       router.feature_scores(router.encoder.features(photo_256), None,
                                             router.exposure_factors(photo_256)).similarities)


@pytest.mark.parametrize("edit, message", [
    ({"whole_view_side": 8}, r"whole_view_side must be a whole number of px in \[32, 1024\]"),
    ({"whole_view_side": 128.5}, "whole_view_side must be a whole number"),
    ({"whole_view_side": True}, "whole_view_side must be a whole number"),
    ({"whole_view_kinds": "haze"}, "whole_view_kinds must be a list of LoRA names"),
])
def test_a_bad_whole_view_is_refused_with_its_field(shipped, tmp_path, edit, message):
    folder = tmp_path / "bank"
    shutil.copytree(shipped, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["router"].update(edit)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BankError, match=message):
        read_manifest(folder)


def test_the_default_side_is_not_written(shipped):
    manifest = read_manifest(shipped)
    assert manifest.router.whole_view_side == WHOLE_VIEW_SIDE
    written = manifest.to_json()["router"]
    assert "whole_view_side" not in written and written["whole_view_kinds"] == ["haze"]
