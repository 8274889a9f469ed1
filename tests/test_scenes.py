"""The scene pool's committed list, its loader and the build script's parsing; no Debian image is needed."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uir_lora.errors import InputError
from uir_lora.lab.scenes import DEFAULT_LIST, SPLITS, downscale_factor, load_scenes, read_scene_list, scene_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def build_script():
    spec = importlib.util.spec_from_file_location("build_scene_pool", ROOT / "tools" / "build_scene_pool.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_committed_list_records_every_file_with_licence_and_split(build_script):
    records = read_scene_list(DEFAULT_LIST)
    assert len(records) >= 20
    assert len({r["name"] for r in records}) == len(records)
    for record in records:
        assert record["package"] in build_script.PACKAGES
        assert re.fullmatch(r"[0-9a-f]{64}", record["sha256"])
        assert record["licence"] not in ("", "UNKNOWN") and record["split"] in SPLITS
        assert min(record["width"], record["height"]) >= 512
        assert record["name"] not in build_script.NOT_PHOTOGRAPHS
    check = [r for r in records if r["split"] == "CHECK"]
    assert 0.2 <= len(check) / len(records) <= 0.4
    for package in {r["package"] for r in records}:  # stratified: every sizeable package gives CHECK scenes
        own = [r for r in records if r["package"] == package]
        assert len(own) < 3 or any(r["split"] == "CHECK" for r in own)


def test_the_split_is_a_deterministic_function_of_the_files(build_script):
    records = [{k: v for k, v in r.items() if k != "split"} for r in read_scene_list(DEFAULT_LIST)]
    again = build_script.assign_splits(list(reversed(records)))
    assert {r["name"]: r["split"] for r in again} == {r["name"]: r["split"] for r in read_scene_list(DEFAULT_LIST)}


def test_a_missing_pool_says_how_to_build_it(tmp_path):
    with pytest.raises(InputError, match=r"tools/build_scene_pool\.py"):
        load_scenes("CHECK", pool=tmp_path)


def test_a_missing_list_says_how_to_rebuild_it(tmp_path):
    with pytest.raises(InputError, match=r"build_scene_pool\.py --refresh-list"):
        read_scene_list(tmp_path / "scenes.json")


def test_unknown_split_is_refused():
    with pytest.raises(InputError, match="TRAIN"):
        scene_records("VALIDATION")


def test_scenes_load_as_downscaled_rgb_uint8(tmp_path):
    """A stand-in pool of one file, laid out as the build script lays it out."""
    record = {"name": "plasma-workspace-wallpapers/Fake", "package": "plasma-workspace-wallpapers",
              "path": "usr/share/wallpapers/Fake/contents/images/2400x1600.jpg", "sha256": "0" * 64,
              "licence": "GPL-2+", "split": "CHECK", "width": 2400, "height": 1600}
    (tmp_path / "scenes.json").write_text(json.dumps({"scenes": [record]}))
    target = tmp_path / "pool" / "plasma-workspace-wallpapers" / "Fake.jpg"
    target.parent.mkdir(parents=True)
    Image.fromarray(np.full((1600, 2400, 3), 120, np.uint8)).save(target)
    [(name, image)] = load_scenes("CHECK", pool=tmp_path / "pool", list_path=tmp_path / "scenes.json")
    assert name == record["name"] and image.dtype == np.uint8 and image.shape == (800, 1200, 3)
    assert load_scenes("TRAIN", pool=tmp_path / "pool", list_path=tmp_path / "scenes.json") == []


@pytest.mark.parametrize(("size", "factor"), [((1920, 1080), 2), ((2560, 1600), 2), ((4272, 2848), 3),
                                               ((6028, 3391), 4)])
def test_downscale_keeps_the_short_side_at_most_960(size, factor):
    assert downscale_factor(*size) == factor and min(size) / factor <= 960


def test_dep5_licences_follow_the_last_matching_paragraph_and_skip_packaging(build_script):
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: someone\nLicense: GPL-2+\n\n"
            "Files: 16.04/lake_by_A.jpg\nCopyright: A\nLicense: CC-BY-4.0\n\n"
            "Files: debian/*\n README.md\nCopyright: B\nLicense: Expat\n")
    lake = build_script.Candidate("p", "usr/share/backgrounds/lake_by_A.jpg", "p/lake_by_A.jpg", Path("x"))
    other = build_script.Candidate("p", "usr/share/backgrounds/other.jpg", "p/other.jpg", Path("x"))
    assert build_script.licence_of(lake, text) == "CC-BY-4.0"
    assert build_script.licence_of(other, text) == "GPL-2+"


def test_free_form_copyright_files_are_matched_by_file_name(build_script):
    text = ("Image Authors:\n - Road.jpg:\n   Copyright 2012 G\n   Licensed under Creative Commons "
            "Attribution-ShareAlike 3.0 License.\n")
    road = build_script.Candidate("g", "usr/share/backgrounds/gnome/Road.jpg", "g/Road.jpg", Path("x"))
    assert build_script.licence_of(road, text) == "Creative Commons Attribution-ShareAlike 3.0"


def test_the_photo_test_tells_a_photo_from_flat_art(build_script):
    rng = np.random.default_rng(0)
    photo = Image.fromarray((rng.random((256, 256, 3)) * 255).astype(np.uint8))
    flat = Image.fromarray(np.kron(np.eye(2), np.ones((128, 128)))[..., None].repeat(3, -1).astype(np.uint8) * 200)
    assert build_script.photo_like(photo) and not build_script.photo_like(flat)
