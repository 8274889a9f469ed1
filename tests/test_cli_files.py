"""Where the CLI writes: never over an input, one output per input, nothing half-written, odd names
handled, special files and oversized images refused per file while the rest of a folder still runs."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uir_lora.images import PIXEL_BUDGET_ENV, load_image
from uir_lora.lab import cli


def picture(path: Path, seed: int, size: tuple[int, int] = (40, 32), mode: str = "RGB") -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture()
def cli_run(random_bank, capsys):
    """Run ``uir-lora`` in-process with the random bank and manual weights; (exit code, stdout, stderr).

    An exception escaping main() fails the test: the CLI must never end in a traceback.
    """
    bank = ["--bank", "tiny", "--bank-dir", str(random_bank.root.parent)]

    def run(*args: str, weights: bool = True) -> tuple[int, str, str]:
        command, *rest = args
        extra = ["--weights", "noise=1"] if weights and command == "restore" else []
        code = cli.main([command, *rest, *bank, *extra])
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    return run


def test_shared_stems_get_distinct_outputs(cli_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    picture(folder / "a.png", 1)
    picture(folder / "a.jpg", 2)
    picture(folder / "b.png", 3)
    code, _, _ = cli_run("restore", str(folder))
    assert code == 0
    out = tmp_path / "photos_restored"
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg_restored.png", "a_png_restored.png", "b_restored.png"]
    assert not np.array_equal(np.asarray(Image.open(out / "a_jpg_restored.png")),
                              np.asarray(Image.open(out / "a_png_restored.png")))


def test_folder_into_itself_never_touches_an_input(cli_run, tmp_path, tree_digest):
    folder = tmp_path / "photos"
    folder.mkdir()
    picture(folder / "a.png", 1)
    picture(folder / "a_restored.png", 2)  # an input whose name another input's output would take
    before = tree_digest(folder)
    code, _, err = cli_run("restore", str(folder), "-o", str(folder), "--overwrite")
    assert code == 2 and "would overwrite the input" in err
    assert tree_digest(folder) == before


def test_estimate_map_never_over_the_input_nor_unasked(cli_run, tmp_path):
    source = picture(tmp_path / "in.png", 1, size=(96, 80))
    before = source.read_bytes()
    code, _, err = cli_run("estimate", str(source), "--map", str(source), "--overwrite")
    assert code == 2 and "overwrite the input" in err and source.read_bytes() == before
    other = tmp_path / "keep.png"
    other.write_bytes(b"keep me")
    code, _, err = cli_run("estimate", str(source), "--map", str(other))
    assert code == 2 and "--overwrite" in err and other.read_bytes() == b"keep me"
    code, _, _ = cli_run("estimate", str(source), "--map", str(other), "--overwrite")
    assert code == 0 and other.read_bytes() != b"keep me" and Image.open(other).format == "PNG"


def test_output_below_a_file_is_a_clear_error(cli_run, tmp_path, tree_digest):
    source = picture(tmp_path / "in.png", 1)
    (tmp_path / "plain").write_text("a file, not a folder")
    before = tree_digest(tmp_path)
    code, _, err = cli_run("restore", str(source), "-o", str(tmp_path / "plain" / "out.png"))
    assert code == 2 and "is a file" in err and "plain" in err
    assert tree_digest(tmp_path) == before


def test_output_name_ending_in_a_dot_is_refused(cli_run, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    source = picture(work / "in.png", 1)
    code, _, err = cli_run("restore", str(source), "-o", str(work / "out."))
    assert code == 2 and "out.png" in err
    assert sorted(p.name for p in work.iterdir()) == ["in.png"]


def test_restore_dot_names_the_folder_after_itself(cli_run, tmp_path, monkeypatch):
    folder = tmp_path / "holiday"
    folder.mkdir()
    picture(folder / "a.png", 1)
    monkeypatch.chdir(folder)
    code, _, _ = cli_run("restore", ".")
    assert code == 0
    assert (tmp_path / "holiday_restored" / "a_restored.png").is_file()
    assert not (tmp_path / "_restored").exists()


def test_long_input_name_gives_an_output_name_that_fits(cli_run, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    source = picture(work / f"{'p' * 250}.png", 1)
    code, _, _ = cli_run("restore", str(source))
    assert code == 0
    (written,) = [p for p in work.iterdir() if p != source]
    assert written.name.endswith("_restored.png") and len(written.name.encode()) <= 255


def test_special_files_skipped_and_the_rest_restored(cli_run, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    picture(folder / "a.png", 1)
    os.mkfifo(folder / "pipe.png")  # opening it would block forever
    (folder / "album.jpg").mkdir()
    picture(folder / "z.png", 2)
    code, _, err = cli_run("restore", str(folder))
    assert code == 1
    assert "pipe.png" in err and "FIFO" in err and "album.jpg" in err and "folder" in err
    written = sorted(p.name for p in (tmp_path / "photos_restored").iterdir())
    assert written == ["a_restored.png", "z_restored.png"]


def _claims_size(path: Path, width: int, height: int) -> None:
    """Rewrite a small PNG's header to claim another size (a tiny file that would decode to gigabytes)."""
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def test_pixel_budget_refuses_before_decoding(cli_run, tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    huge = picture(folder / "huge.png", 1, size=(8, 8))
    _claims_size(huge, 16000, 16000)  # 256 MP: under Pillow's bomb limit
    picture(folder / "small.png", 2)
    code, _, err = cli_run("restore", str(folder))
    assert code == 1
    assert "huge.png" in err and "--max-pixels" in err and PIXEL_BUDGET_ENV in err
    assert [p.name for p in (tmp_path / "photos_restored").iterdir()] == ["small_restored.png"]
    monkeypatch.setenv(PIXEL_BUDGET_ENV, "1000")  # the variable lowers it as well
    code, _, err = cli_run("restore", str(folder / "small.png"), "-o", str(tmp_path / "s.png"))
    assert code == 1 and "1,280 pixels" in err and "1,000" in err and not (tmp_path / "s.png").exists()


def test_nothing_half_written_when_a_restore_fails(cli_run, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    source = picture(work / "in.png", 1)
    target = work / "out.png"

    def broken(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", broken)
    code, _, err = cli_run("restore", str(source), "-o", str(target))
    assert code == 2 and "No space left" in err
    assert sorted(p.name for p in work.iterdir()) == ["in.png"]


def test_alpha_survives_the_cli(cli_run, tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (32, 40, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    code, out, _ = cli_run("restore", str(tmp_path / "cut.png"))
    assert code == 0 and "alpha kept" in out
    written = Image.open(tmp_path / "cut_restored.png")
    assert written.mode == "RGBA" and np.array_equal(np.asarray(written)[..., 3], rgba[..., 3])
    assert load_image(tmp_path / "cut_restored.png").shape == (1, 3, 32, 40)
