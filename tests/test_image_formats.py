"""Image files beyond 8-bit RGB: 16-bit PNGs and deep and float TIFFs keep their tones, alpha is kept apart,
animated files report their frames, EXIF orientation is applied, and special files are refused without blocking."""

from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from uir_lora.errors import InputError
from uir_lora.images import PIXEL_BUDGET_ENV, load_image, read_image, save_image

GRADIENT = np.linspace(0, 1, 6 * 9 * 3, dtype=np.float64).reshape(6, 9, 3)
COLOUR_TYPES = {"grey": (0, 1), "rgb": (2, 3), "grey+alpha": (4, 2), "rgba": (6, 4)}  # PNG colour type, channels


def expected(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32)).permute(2, 0, 1)[None]


def test_16_bit_colour_tiff_keeps_full_precision(tmp_path):
    samples = np.round(GRADIENT * 65535).astype(np.uint16)
    samples[0, :3, 0] = [30000, 30001, 30100]  # closer than 1/255 apart: lost at 8 bits
    tifffile.imwrite(tmp_path / "deep.tif", samples)
    image = load_image(tmp_path / "deep.tif")
    assert (image - expected(samples / 65535)).abs().max() < 1e-6
    assert len({round(v, 7) for v in image[0, 0, 0, :3].tolist()}) == 3


@pytest.mark.parametrize("white", [1.0, 255.0, 65535.0], ids=["unit", "8-bit-range", "16-bit-range"])
def test_float_tiff_scaled_not_clipped(tmp_path, white):
    grey = (GRADIENT[..., 0] * 0.8 * white).astype(np.float32)  # never reaches white: a clip would show
    Image.fromarray(grey, "F").save(tmp_path / "grey.tif")
    image = load_image(tmp_path / "grey.tif")
    assert (image[0, 0] - torch.from_numpy(grey / white)).abs().max() < 1e-5
    assert image.max() < 0.81


def test_float_colour_tiff_is_read(tmp_path):
    tifffile.imwrite(tmp_path / "float.tif", (GRADIENT * 65535).astype(np.float32))  # Pillow cannot open it
    assert (load_image(tmp_path / "float.tif") - expected(GRADIENT)).abs().max() < 1e-5


def test_dark_16_bit_grey_png_is_not_brightened(tmp_path):
    Image.fromarray(np.full((5, 7), 200, np.uint16)).save(tmp_path / "dark.png")
    assert load_image(tmp_path / "dark.png").max().item() == pytest.approx(200 / 65535, abs=1e-7)


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
    wanted = torch.from_numpy(colour.astype(np.float32) / 65535).permute(2, 0, 1)[None]
    assert image.shape == (1, 3, 6, 9) and image.dtype == torch.float32
    assert (image - wanted).abs().max() < 1e-4
    assert len({round(v, 6) for v in image[0, 0, 0, :3].tolist()}) == 3


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_8_bit_files_load_exactly(tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    source = Image.fromarray(rgb)
    source = source.convert(mode) if mode != "P" else source.quantize(16)
    source.save(tmp_path / "flat.png")
    wanted = np.asarray(source.convert("RGB"), dtype=np.float32) / 255
    image = load_image(tmp_path / "flat.png")
    assert torch.equal(image, torch.from_numpy(wanted).permute(2, 0, 1)[None])


def test_truncated_16_bit_png_is_an_input_error(tmp_path):
    data = png16(np.random.default_rng(2).integers(0, 65536, (40, 40, 3), dtype=np.uint16), 2)
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "cut.png")


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_kept_apart_and_written_back(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (7, 9, 4), np.uint8), "RGBA")
    rgba.convert(mode).save(tmp_path / "in.png")
    loaded = read_image(tmp_path / "in.png")
    alpha = np.asarray(rgba)[..., 3]
    assert loaded.image.shape == (1, 3, 7, 9) and loaded.alpha.shape == (1, 1, 7, 9)
    assert torch.equal(loaded.alpha[0, 0], torch.from_numpy(alpha.astype(np.float32) / 255))
    save_image(loaded.image, tmp_path / "out.png", alpha=loaded.alpha)
    written = Image.open(tmp_path / "out.png")
    assert written.mode == "RGBA" and np.array_equal(np.asarray(written)[..., 3], alpha)


def test_palette_transparency_becomes_alpha(tmp_path):
    palette = Image.new("P", (4, 3), 1)
    palette.putpixel((0, 0), 0)
    palette.save(tmp_path / "in.png", transparency=0)
    alpha = read_image(tmp_path / "in.png").alpha
    assert alpha[0, 0, 0, 0] == 0 and alpha.sum() == 11


def test_opaque_image_has_no_alpha(tmp_path):
    Image.new("RGB", (4, 3), (1, 2, 3)).save(tmp_path / "in.png")
    assert read_image(tmp_path / "in.png").alpha is None


def test_animated_gif_reports_its_frames(tmp_path):
    frames = [Image.new("RGB", (8, 6), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=50)
    loaded = read_image(tmp_path / "clip.gif")
    assert loaded.frames == 3
    assert loaded.image[0, 0].mean() > 0.9 and loaded.image[0, 1].mean() < 0.1  # the first frame


@pytest.mark.parametrize("orientation, size", [(1, (3, 5)), (3, (3, 5)), (6, (5, 3)), (8, (5, 3))])
def test_exif_orientation_applied(tmp_path, orientation, size):
    pixels = np.zeros((3, 5, 3), np.uint8)
    pixels[0, 0] = 255  # top-left marker as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif)
    image = load_image(tmp_path / "phone.png")
    assert tuple(image.shape[-2:]) == size
    shown = np.asarray(Image.open(tmp_path / "phone.png").transpose(
        {1: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270,
         8: Image.Transpose.ROTATE_90}[orientation]) if orientation != 1 else Image.open(tmp_path / "phone.png"))
    assert torch.equal(image[0].permute(1, 2, 0), torch.from_numpy(shown.astype(np.float32) / 255))


def test_fifo_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    result: list = []
    reader = threading.Thread(target=lambda: result.append(_error_of(tmp_path / "pipe.png")), daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # unblock the reader, then fail
        with open(tmp_path / "pipe.png", "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert "FIFO" in result[0]


def test_folder_named_like_an_image_refused(tmp_path):
    (tmp_path / "album.png").mkdir()
    assert "is a folder" in _error_of(tmp_path / "album.png")


def _error_of(path) -> str:
    try:
        load_image(path)
    except InputError as exc:
        return str(exc)
    return "no error"


def test_pixel_budget_option_and_variable(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "in.png")
    with pytest.raises(InputError, match=f"1,200 pixels.*--max-pixels.*{PIXEL_BUDGET_ENV}"):
        load_image(tmp_path / "in.png", max_pixels=1000)
    monkeypatch.setenv(PIXEL_BUDGET_ENV, "1000")
    with pytest.raises(InputError, match="over the pixel budget of 1,000"):
        load_image(tmp_path / "in.png")
    assert load_image(tmp_path / "in.png", max_pixels=1200).shape == (1, 3, 30, 40)  # the option wins
    monkeypatch.setenv(PIXEL_BUDGET_ENV, "lots")
    with pytest.raises(InputError, match=PIXEL_BUDGET_ENV):
        load_image(tmp_path / "in.png")
