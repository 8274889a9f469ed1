"""16-bit PNGs at full precision, one backbone object per device/dtype, the estimator's temperature range."""

from __future__ import annotations

import struct
import zlib

import comfy_stubs
import numpy as np
import pytest
import torch
from PIL import Image

from uir_lora import pipeline
from uir_lora.backbones.registry import load_backbone
from uir_lora.errors import TEMPERATURE_RANGE, InputError
from uir_lora.images import load_image

COLOUR_TYPES = {"grey": (0, 1), "rgb": (2, 3), "grey+alpha": (4, 2), "rgba": (6, 4)}  # PNG colour type, channels


def png16(samples: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG built by hand (Pillow cannot write 16-bit colour); rows cycle through filters None, Sub, Up,
    so the decoder's bytes-per-pixel (Sub) and previous-row (Up) handling are both exercised."""
    height, width = samples.shape[:2]
    rows = samples.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int32)  # big-endian bytes
    bpp = rows.shape[1] // width
    raw = bytearray()
    for y, row in enumerate(rows):
        kind = y % 3 if y else 1  # the first row has no previous row for Up
        predictor = {0: 0, 1: np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]]), 2: rows[y - 1]}[kind]
        raw += bytes([kind]) + ((row - predictor) % 256).astype(np.uint8).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(
        b"IEND", b"")


@pytest.mark.parametrize("layout", COLOUR_TYPES)
def test_16_bit_png_keeps_full_precision(tmp_path, layout):
    colour_type, channels = COLOUR_TYPES[layout]
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 65536, (6, 9, channels), dtype=np.uint16)
    samples[0, :3, 0] = [30000, 30001, 30100]  # closer than 1/255 apart: lost at 8 bits
    (tmp_path / "deep.png").write_bytes(png16(samples if channels > 1 else samples[..., 0], colour_type))
    image = load_image(tmp_path / "deep.png")
    colour = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, axis=2)
    expected = torch.from_numpy(colour.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    assert image.shape == (1, 3, 6, 9) and image.dtype == torch.float32
    assert (image - expected).abs().max() < 1e-4
    assert len({round(v, 6) for v in image[0, 0, 0, :3].tolist()}) == 3


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_8_bit_files_load_as_before(tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    source = Image.fromarray(rgb)
    source = source.convert(mode) if mode != "P" else source.quantize(16)
    source.save(tmp_path / "flat.png")
    expected = np.asarray(source.convert("RGB"), dtype=np.float32) / 255
    image = load_image(tmp_path / "flat.png")
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1)[None])


def test_truncated_16_bit_png_is_an_input_error(tmp_path):
    data = png16(np.random.default_rng(2).integers(0, 65536, (40, 40, 3), dtype=np.uint16), 2)
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "cut.png")


def test_each_dtype_gets_its_own_backbone(tmp_path, encoder_dim):
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank

    master = load_backbone("embedded-ffdnet")
    full = load_backbone("embedded-ffdnet", device="cpu", dtype=torch.float32)
    half = load_backbone("embedded-ffdnet", device="cpu", dtype=torch.bfloat16)
    assert full is master  # the request matches the loaded weights: no copy
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16
    assert load_backbone("embedded-ffdnet", device=torch.device("cpu"), dtype=torch.bfloat16) is half  # cached
    assert half.fingerprint == full.fingerprint  # the float32 identity, so banks still attach
    before = set(full.adapter_names())
    bank = open_bank(make_random_bank(tmp_path, full, dim=encoder_dim, bank_name="leak"))
    attached = set(bank.attach(half).values())
    assert attached <= set(half.adapter_names()) and not attached & set(full.adapter_names())
    assert set(full.adapter_names()) == before
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16


def test_backbone_copies_are_bounded_least_recently_used_first():
    from uir_lora.backbones import registry

    dtypes = (torch.bfloat16, torch.float16, torch.float64)
    copies = {dtype: load_backbone("embedded-ffdnet", device="cpu", dtype=dtype) for dtype in dtypes}
    cached = next(c for (family, _), c in registry._CACHE.items() if family == "embedded-ffdnet")
    assert len(cached.copies) == registry.MAX_COPIES
    assert [placement[1] for placement in cached.copies] == [torch.float16, torch.float64]  # bfloat16 evicted
    assert load_backbone("embedded-ffdnet", device="cpu", dtype=torch.float16) is copies[torch.float16]
    assert [placement[1] for placement in cached.copies] == [torch.float64, torch.float16]  # used: moved last
    assert copies[torch.bfloat16].dtype == torch.bfloat16  # an evicted copy still works for whoever holds it
    assert load_backbone("embedded-ffdnet").dtype == torch.float32  # the master is never evicted


def test_sd_turbo_copy_keeps_its_parts_together(tmp_path):
    from uir_lora.lab.testing import sd_turbo_tiny as tiny

    folder = tiny.write_diffusers_folder(tmp_path / "tiny-turbo", *tiny.tiny_models(seed=0))
    master = load_backbone("sd-turbo", folder)
    half = load_backbone("sd-turbo", folder, device="cpu", dtype=torch.bfloat16)
    assert half is not master and half.parts.unet is half.unet and half.parts._whole_vae[0] is half.vae
    assert {p.dtype for p in half.vae.parameters()} == {torch.bfloat16}  # the encoder moved with the root
    assert {p.dtype for p in master.parts.parameters()} == {torch.float32}
    with torch.no_grad():
        out = half.restore_step(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)), {})
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    with comfy_stubs.stubbed_pack(tmp_path_factory.mktemp("models")) as pack:
        yield {cls.GET_SCHEMA().node_id: cls for cls in pack.nodes.NODES}


def test_two_backbone_loaders_keep_their_own_dtype(nodes):
    loader = nodes["UIR_BackboneLoader"]
    first = loader.execute("embedded-ffdnet (built in)", "cpu", "fp32")[0]
    second = loader.execute("embedded-ffdnet (built in)", "cpu", "bf16")[0]
    assert first.dtype == torch.float32 and second.dtype == torch.bfloat16


def test_estimator_temperature_matches_the_router(nodes, random_bank, photo):
    estimator = nodes["UIR_DegradationEstimator"]
    widget = next(i for i in estimator.GET_SCHEMA().inputs if i.id == "temperature")
    assert widget.min == 0 and widget.default == 0 and widget.max == TEMPERATURE_RANGE[1]  # 0 = bank default
    low, high = TEMPERATURE_RANGE
    for fine in (0, 0.0, low, high, None):  # None: a linked value, checked when the node runs
        assert estimator.validate_inputs(fine) is True
    for bad in (low / 2, 1e-9, -0.5, high * 1.01, float("nan")):
        message = estimator.validate_inputs(bad)
        assert isinstance(message, str) and "temperature" in message and "bank's default" in message
    # the router accepts exactly what the node lets through
    assert pipeline.estimate(random_bank, photo, 2, low)[0].temperature == low
    with pytest.raises(InputError, match="temperature"):
        pipeline.estimate(random_bank, photo, 2, low / 2)
