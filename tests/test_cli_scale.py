"""``uir-lora restore`` on other devices, dtypes, backbones and batched tiles, and over several processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uir_lora.backbones import placement
from uir_lora.backbones.registry import load_backbone, parse_backbone_spec
from uir_lora.errors import BackboneError, InputError
from uir_lora.images import save_image
from uir_lora.lab.cli import main
from uir_lora.pipeline import compose, load_bank
from uir_lora.sampler.restore import SamplerOptions, restore_batch

ROOT = Path(__file__).resolve().parents[1]


def _photos(folder: Path, count: int, size: tuple[int, int] = (40, 56)) -> list[Path]:
    generator = torch.Generator().manual_seed(7)
    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(torch.rand(1, 3, *size, generator=generator), folder / f"photo_{i}.png") for i in range(count)]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# -- device and dtype ------------------------------------------------------------------------------

@pytest.mark.parametrize(("device", "message"), [
    ("cuda", "no CUDA GPU"), ("cuda:3", "no CUDA GPU"), ("mps", "MPS is not available"), ("tpu", "cpu, cuda"),
])
def test_an_unavailable_device_is_refused_with_the_fix(monkeypatch, device, message):
    monkeypatch.setattr(placement, "_cuda_count", lambda: 0)
    monkeypatch.setattr(placement, "_mps_available", lambda: False)
    with pytest.raises(InputError, match=message):
        placement.resolve_device(device)
    assert placement.resolve_device("auto") == torch.device("cpu")


def test_cuda_indices_are_checked_against_the_gpus_there_are(monkeypatch):
    monkeypatch.setattr(placement, "_cuda_count", lambda: 2)
    assert placement.resolve_device("cuda") == torch.device("cuda", 0)
    assert placement.resolve_device("CUDA:1") == torch.device("cuda", 1)
    assert placement.resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(InputError, match="2 CUDA GPU"):
        placement.resolve_device("cuda:2")


def test_float16_is_refused_on_the_cpu_only():
    with pytest.raises(InputError, match="float16 is a GPU format"):
        placement.resolve_dtype("float16", torch.device("cpu"))
    assert placement.resolve_dtype("float16", torch.device("cuda", 0)) == torch.float16
    assert placement.resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InputError, match="float32, float16, bfloat16"):
        placement.resolve_dtype("half", torch.device("cpu"))


def test_cli_reports_a_bad_device_or_dtype_without_a_traceback(tmp_path, capsys):
    (photo,) = _photos(tmp_path / "in", 1)
    assert main(["restore", str(photo), "-o", str(tmp_path / "a.png"), "--device", "cuda:9"]) == 2
    assert main(["restore", str(photo), "-o", str(tmp_path / "b.png"), "--dtype", "float16", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "uir-lora: error: device 'cuda:9'" in err and "float16 is a GPU format" in err
    assert "Traceback" not in err and not list(tmp_path.glob("*.png"))


def test_bfloat16_restores_on_the_cpu_close_to_float32(tmp_path, capsys):
    (photo,) = _photos(tmp_path / "in", 1)
    for dtype in ("float32", "bfloat16"):
        assert main(["restore", str(photo), "-o", str(tmp_path / f"{dtype}.png"), "--dtype", dtype,
                     "--device", "cpu", "--weights", "noise=1"]) == 0
    assert load_backbone("embedded-ffdnet", dtype=torch.bfloat16).dtype == torch.bfloat16
    full, half = _pixels(tmp_path / "float32.png").astype(int), _pixels(tmp_path / "bfloat16.png").astype(int)
    assert not np.array_equal(full, half)  # it did run in bfloat16
    assert np.abs(full - half).mean() < 2.0 and np.abs(full - half).max() <= 16


# -- backbone --------------------------------------------------------------------------------------

def test_backbone_specs_name_a_family_and_an_existing_path(tmp_path):
    assert parse_backbone_spec("embedded") == ("embedded-ffdnet", None)
    assert parse_backbone_spec("embedded-ffdnet") == ("embedded-ffdnet", None)
    assert parse_backbone_spec(str(tmp_path)) == ("sd-turbo", tmp_path)
    assert parse_backbone_spec(f"sd-turbo={tmp_path}") == ("sd-turbo", tmp_path)
    with pytest.raises(BackboneError, match="does not exist"):
        parse_backbone_spec(str(tmp_path / "missing"))
    with pytest.raises(BackboneError, match="unknown backbone family 'sdxl'"):
        parse_backbone_spec(f"sdxl={tmp_path}")


def test_cli_restores_with_an_sd_turbo_family_backbone_and_its_bank(tmp_path, capsys):
    from uir_lora.lab.testing import sd_turbo_tiny as tiny
    from uir_lora.lab.testing.banks import make_random_bank

    unet, vae, text = tiny.tiny_models(seed=0)
    folder = tiny.write_diffusers_folder(tmp_path / "tiny-turbo", unet, vae, text)
    backbone = load_backbone("sd-turbo", folder)
    make_random_bank(tmp_path / "banks", backbone, bank_name="tiny-turbo")
    (photo,) = _photos(tmp_path / "in", 1, size=(32, 32))
    out = tmp_path / "out.png"
    args = ["restore", str(photo), "-o", str(out), "--backbone", str(folder), "--device", "cpu",
            "--bank-dir", str(tmp_path / "banks"), "--weights", "noise=0.5"]
    assert main([*args, "--bank", "tiny-turbo"]) == 0 and out.is_file()
    # the shipped bank belongs to the embedded backbone: refused, with a message, nothing written
    assert main([*args[:3], str(tmp_path / "other.png"), *args[4:]]) == 2
    assert "made for the 'embedded-ffdnet' backbone, not 'sd-turbo'" in capsys.readouterr().err


# -- batched tiles ---------------------------------------------------------------------------------

def test_batched_tiles_give_the_one_at_a_time_result(embedded_backbone):
    image = torch.rand(1, 3, 150, 230, generator=torch.Generator().manual_seed(3))
    composition = compose(load_bank(), None, {"noise": 0.8}, "manual")
    seen = []
    one = restore_batch(embedded_backbone, image, [composition], SamplerOptions(tile=96))
    many = restore_batch(embedded_backbone, image, [composition], SamplerOptions(tile=96, tile_batch=4),
                         progress=lambda done, total: seen.append((done, total)))
    torch.testing.assert_close(many, one, atol=1e-5, rtol=0)
    assert seen[-1][0] == seen[-1][1] == len(seen)  # progress still counts every tile


def test_out_of_memory_halves_the_tile_batch_first(embedded_backbone, monkeypatch):
    image = torch.rand(1, 3, 150, 230, generator=torch.Generator().manual_seed(3))
    composition = compose(load_bank(), None, {"noise": 0.8}, "manual")
    real_step, batches = embedded_backbone.restore_step, []

    def small_memory(x, *args, **kwargs):
        batches.append(x.shape[0])
        if x.shape[0] > 2:
            raise torch.OutOfMemoryError("tile batch too big for this fake GPU")
        return real_step(x, *args, **kwargs)

    monkeypatch.setattr(embedded_backbone, "restore_step", small_memory)
    out = restore_batch(embedded_backbone, image, [composition], SamplerOptions(tile=96, tile_batch=8))
    monkeypatch.undo()
    assert batches[:3] == [8, 4, 2] and set(batches[3:]) <= {1, 2}  # the tile size is kept
    torch.testing.assert_close(out, restore_batch(embedded_backbone, image, [composition],
                                                  SamplerOptions(tile=96)), atol=1e-5, rtol=0)


# -- resume and several processes ------------------------------------------------------------------

def test_resume_skips_finished_outputs_and_redoes_unreadable_ones(tmp_path, capsys, caplog):
    _photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--weights", "noise=1"]) == 0
    first, second, third = sorted(out.iterdir())
    kept = first.stat().st_mtime_ns
    second.unlink()
    third.write_bytes(third.read_bytes()[:100])  # a file a lost disk write cut short
    capsys.readouterr()
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--weights", "noise=1"]) == 2  # no flag: refused
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--weights", "noise=1", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "2 of 3 outputs already written, 1 to do" in printed and "unreadable" in caplog.text
    assert first.name not in printed
    assert first.stat().st_mtime_ns == kept and _pixels(second).shape == _pixels(third).shape == (40, 56, 3)
    assert main(["restore", str(tmp_path / "in"), "-o", str(out), "--resume", "--overwrite"]) == 2


def _launch(args: list[str], port: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "-m", "uir_lora.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_processes_split_the_files_write_each_once_and_match_one_process(tmp_path):
    """accelerate launch, 2 CPU processes over gloo on 127.0.0.1 (a subprocess: pytest-socket is in-process)."""
    photos = _photos(tmp_path / "in", 5)
    single, shared = tmp_path / "single", tmp_path / "shared"
    assert main(["restore", str(tmp_path / "in"), "-o", str(single), "--device", "cpu"]) == 0
    port = 29500 + os.getpid() % 2000  # two suites at once on one machine should not share a port
    done = _launch(["restore", str(tmp_path / "in"), "-o", str(shared), "--device", "auto"], port)
    assert done.returncode == 0, done.stderr[-3000:]
    written = [line.split(" -> ")[1].split()[0] for line in done.stdout.splitlines() if " -> " in line]
    assert sorted(written) == sorted(str(shared / f"{p.stem}_restored.png") for p in photos)  # each exactly once
    for path in sorted(single.iterdir()):
        assert np.array_equal(_pixels(path), _pixels(shared / path.name)), path.name

    # a crash left two outputs missing: a second launch with --resume does only those
    (shared / "photo_1_restored.png").unlink()
    (shared / "photo_4_restored.png").unlink()
    untouched = {p.name: p.stat().st_mtime_ns for p in shared.iterdir()}
    done = _launch(["restore", str(tmp_path / "in"), "-o", str(shared), "--resume"], port + 1)
    assert done.returncode == 0, done.stderr[-3000:]
    redone = sorted(Path(line.split(" -> ")[1].split()[0]).name for line in done.stdout.splitlines() if " -> " in line)
    assert redone == ["photo_1_restored.png", "photo_4_restored.png"]
    assert all(shared.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in untouched.items())
    for path in sorted(single.iterdir()):
        assert np.array_equal(_pixels(path), _pixels(shared / path.name)), path.name
