"""Files the pack writes atomically get the permissions a plainly created file gets, not a temp file's 0600."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.writer import save_lora_file
from uir_lora.images import save_image


@pytest.fixture()
def umask_022():
    before = os.umask(0o022)
    yield 0o644
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_restored_images_are_readable_by_others(tmp_path, umask_022):
    path = save_image(torch.rand(1, 3, 8, 8), tmp_path / "out" / "restored.png")
    assert mode(path) == umask_022


def test_bank_files_are_readable_by_others(tmp_path, umask_022, random_bank):
    lora = save_lora_file({"w": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert mode(lora) == umask_022
    write_manifest(read_manifest(random_bank.root), random_bank.root)
    assert mode(random_bank.root / "manifest.json") == umask_022


def test_a_stricter_umask_is_respected(tmp_path):
    before = os.umask(0o077)
    try:
        path = save_image(torch.rand(1, 3, 8, 8), tmp_path / "private.png")
    finally:
        os.umask(before)
    assert mode(path) == 0o600
