"""Every hostile input the pack must survive, one test or parametrize id per case.

Each case asserts a clear error (naming the bad value and the fix) or graceful handling, and that
nothing was loaded, changed or written: files intact, the backbone in its base state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from uir_lora import pipeline
from uir_lora.backbones.embedded import EmbeddedFFDNetBackbone
from uir_lora.backbones.registry import load_backbone
from uir_lora.bank.store import open_bank, read_lora_file
from uir_lora.compose.composer import check_weights, composed
from uir_lora.errors import BackboneError, BankError, InputError, RestoreInterrupted, UnsafePathError
from uir_lora.images import array_to_tensor, load_image, save_image
from uir_lora.lab import cli
from uir_lora.lab.testing.banks import make_random_bank
from uir_lora.pipeline import apply_strength, compose, estimate, estimate_spatial, load_bank, parse_weights, restore
from uir_lora.sampler.restore import SamplerOptions, restore_batch


# -- helpers --------------------------------------------------------------------------------------
def backbone_state(backbone) -> dict:
    """Everything a failed call must leave unchanged: base weights, adapters, peft configs, flags."""
    return {
        "weights": {k: v.clone() for k, v in backbone.base_state_dict().items()},
        "adapters": backbone.adapter_names(),
        "configs": sorted(getattr(backbone.adapter_root, "peft_config", {})),
        "disabled": all(not layer.lora_A or layer.disable_adapters for layer in backbone.lora_layers()),
    }


def assert_base_state(backbone, before: dict) -> None:
    after = backbone_state(backbone)
    assert after["adapters"] == before["adapters"] and after["configs"] == before["configs"]
    assert after["disabled"], "an adapter was left active"
    assert all(torch.equal(before["weights"][k], after["weights"][k]) for k in before["weights"])


@pytest.fixture()
def no_pickle(monkeypatch):
    """Fail the test if anything tries to unpickle."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture(scope="module")
def pristine_bank(tmp_path_factory, embedded_backbone, encoder_dim) -> Path:
    """conftest's random bank, built once per module; tests get a copy they may damage."""
    return make_random_bank(tmp_path_factory.mktemp("pristine"), embedded_backbone, dim=encoder_dim,
                            conditioning={"sigma": 25 / 255})


@pytest.fixture()
def random_bank(pristine_bank, tmp_path):
    shutil.copytree(pristine_bank, tmp_path / "tiny")
    return open_bank(tmp_path / "tiny")


@pytest.fixture()
def manual(random_bank):
    return compose(random_bank, None, {"noise": 1.0}, "manual")


def write_manifest(bank_dir: Path, mutate) -> None:
    data = json.loads((bank_dir / "manifest.json").read_text())
    mutate(data)
    (bank_dir / "manifest.json").write_text(json.dumps(data))


# -- 1. names: only inside the bank roots -----------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("/etc", "absolute"), ("../../etc", r"\.\."), ("tiny/../../etc", r"\.\."), ("", "non-empty"),
    ("   ", "non-empty"), ("tiny\x00", "absolute"), ("C:\\Windows", "absolute"), ("C:/Windows", "absolute"),
    ("C:tiny", "absolute"), ("\\\\server\\share", "absolute"), ("..\\..\\etc", r"\.\."),
    ("tiny\\..\\..\\etc", r"\.\."), (None, "non-empty"), (5, "non-empty"),
], ids=["absolute", "dotdot", "inner-dotdot", "empty", "blank", "nul-byte", "drive-backslash", "drive-slash",
        "drive-relative", "unc", "backslash-dotdot", "inner-backslash-dotdot", "none", "number"])
def test_bank_name_refused(random_bank, tmp_path, tree_digest, name, message):
    before = tree_digest(tmp_path)
    with pytest.raises(UnsafePathError, match=message):
        load_bank(name, [tmp_path])
    assert tree_digest(tmp_path) == before


def test_bank_symlink_escape(random_bank, tmp_path, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    os.replace(random_bank.root, outside / "tiny")  # a valid bank, but outside the root
    (tmp_path / "evil").symlink_to(outside / "tiny", target_is_directory=True)
    with pytest.raises(UnsafePathError, match="symlink escape"):
        load_bank("evil", [tmp_path])


def test_lora_file_symlink_escape(random_bank, embedded_backbone, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "noise.safetensors"
    os.replace(random_bank.root / "noise.safetensors", outside)
    (random_bank.root / "noise.safetensors").symlink_to(outside)
    before = backbone_state(embedded_backbone)
    with pytest.raises(BankError, match="outside"):
        open_bank(random_bank.root).attach(embedded_backbone)
    assert_base_state(embedded_backbone, before)


def test_missing_bank_lists_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_bank("nope", [tmp_path])


# -- 2. numbers: range-checked, errors name the field -------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("tile", -5), ("tile", 0), ("tile", float("nan")), ("tile", float("inf")), ("tile", 10**12), ("tile", 100.5),
    ("tile", "256"), ("tile", True), ("steps", 0), ("steps", 2), ("seed", -1), ("seed", 1.5), ("seed", 2**64),
    ("seed", float("nan")),
])
def test_sampler_option_refused(embedded_backbone, manual, photo, field, value):
    before = backbone_state(embedded_backbone)
    options = dataclasses.replace(SamplerOptions(), **{field: value})
    with pytest.raises(InputError, match=field):
        pipeline.restore_composed(photo, embedded_backbone, [manual], options=options)
    assert_base_state(embedded_backbone, before)


def test_largest_seed_accepted(embedded_backbone, manual):
    options = SamplerOptions(seed=2**63 - 1)
    out = pipeline.restore_composed(torch.rand(2, 3, 8, 8), embedded_backbone, [manual], options=options)
    assert out.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1, 1.5, "x", None])
def test_strength_refused(photo, value):
    with pytest.raises(InputError, match=r"strength must .*\[0.0, 1.0\]"):
        apply_strength(photo, photo, value)


@pytest.mark.parametrize("field, value", [
    ("top_k", 0), ("top_k", -1), ("top_k", float("nan")), ("top_k", 99), ("top_k", 1.5),
    ("temperature", 0), ("temperature", -1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("temperature", 1e9),
])
def test_router_value_refused(random_bank, photo, field, value):
    with pytest.raises(InputError, match=field):
        estimate(random_bank, photo, **{field: value})


def test_unknown_normalisation_refused(random_bank, photo):
    with pytest.raises(InputError, match="softmax"):
        estimate(random_bank, photo, normalisation="max")


@pytest.mark.parametrize("weights, message", [
    ({"noise": float("nan")}, "finite"), ({"noise": float("inf")}, "finite"), ({"noise": 5.0}, r"\[-4.0, 4.0\]"),
    ({"noise": -5.0}, r"\[-4.0, 4.0\]"), ({"noise": "0.5"}, "finite"), ({"noise": True}, "finite"),
    ({"smoke": 0.5}, "noise, haze, jpeg"), ({"": 0.5}, "unknown LoRA"),
])
def test_weight_refused(random_bank, weights, message):
    with pytest.raises(InputError, match=message):
        check_weights(weights, random_bank)


@pytest.mark.parametrize("text", ["noise=abc", "noise", "noise=1=2", "noise=0.5,jpeg", "noise=0x1"])
def test_weight_text_refused(text):
    with pytest.raises(InputError, match="noise=0.7,jpeg=0.3"):
        parse_weights(text)


@pytest.mark.parametrize("severity", [float("nan"), float("inf"), -0.5, 1.5, "high"])
def test_severity_refused(severity):
    from uir_lora.degrade import KINDS, degrade

    with pytest.raises(ValueError, match="severity"):
        degrade(torch.rand(1, 3, 16, 16), next(iter(KINDS)), generator=torch.Generator(), severity=severity)


# -- 3. files: corrupt LoRAs, pickles, other backbones ---------------------------------------------
def _corrupt(path: Path) -> None:
    path.write_bytes(os.urandom(256))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _huge_header(path: Path) -> None:
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")


def _pickle_inside(path: Path) -> None:
    torch.save({"x": torch.zeros(2)}, path)  # a zip pickle disguised with the safetensors suffix


def _retensor(change):
    def mutate(path: Path) -> None:
        state = load_file(str(path))
        save_file(change(state), str(path))
    return mutate


LORA_FILE_DAMAGE = {
    "corrupt": (_corrupt, "corrupt or truncated"),
    "truncated": (_truncate, "corrupt or truncated"),
    "empty": (lambda p: p.write_bytes(b""), "empty file"),
    "huge-header": (_huge_header, "corrupt or truncated"),
    "pickle-inside": (_pickle_inside, "corrupt or truncated"),
    "missing": (lambda p: p.unlink(), "LoRA file missing"),
    "nan-tensor": (_retensor(lambda s: {k: v.fill_(float("nan")) for k, v in s.items()}), "not finite"),
    "int-tensor": (_retensor(lambda s: {k: v.to(torch.int32) for k, v in s.items()}), "not finite floating"),
    "no-tensors": (_retensor(lambda s: {}), "holds no tensors"),
    "other-rank": (_retensor(lambda s: {k: torch.zeros(*(4 if d == 2 else d for d in v.shape))
                                        for k, v in s.items()}), "shape"),
    "other-layers": (_retensor(lambda s: {k.replace("model.", "body."): v for k, v in s.items()}), "missing"),
}


@pytest.mark.parametrize("damage", list(LORA_FILE_DAMAGE))
def test_damaged_lora_refused(random_bank, embedded_backbone, no_pickle, tree_digest, damage):
    mutate, message = LORA_FILE_DAMAGE[damage]
    mutate(random_bank.root / "jpeg.safetensors")  # the last LoRA: the two before it get injected first
    files, before = tree_digest(random_bank.root), backbone_state(embedded_backbone)
    with pytest.raises(BankError, match=message) as error:
        open_bank(random_bank.root).attach(embedded_backbone)
    assert "jpeg" in str(error.value)
    assert_base_state(embedded_backbone, before)  # no half-injected adapter left
    assert tree_digest(random_bank.root) == files


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".pkl"])
def test_pickle_lora_never_opened(tmp_path, no_pickle, suffix):
    path = tmp_path / f"lora{suffix}"
    path.write_bytes(b"\x80\x04not really")  # would fail loudly if anything read it
    with pytest.raises(BankError, match="convert it to .safetensors"):
        read_lora_file(path)


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".bin"])
def test_pickle_backbone_never_opened(tmp_path, no_pickle, suffix):
    path = tmp_path / f"ffdnet{suffix}"
    path.write_bytes(b"\x80\x04not really")
    with pytest.raises(BackboneError, match="no pickles"):
        load_backbone("embedded-ffdnet", path)


def test_corrupt_backbone_refused(tmp_path):
    path = tmp_path / "ffdnet.safetensors"
    save_file({"model.0.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(BackboneError, match="not FFDNet colour weights"):
        EmbeddedFFDNetBackbone.from_file(path)
    _corrupt(path)
    with pytest.raises(BackboneError, match="not a readable safetensors"):
        EmbeddedFFDNetBackbone.from_file(path)


def test_unknown_backbone_family():
    with pytest.raises(BackboneError, match="known: embedded-ffdnet"):
        load_backbone("ffdnet-gray")


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_huge_lora_values_refused(random_bank, embedded_backbone, photo, fused):
    _retensor(lambda s: {k: torch.full_like(v, 1e30) for k, v in s.items()})(random_bank.root / "noise.safetensors")
    bank = open_bank(random_bank.root)
    bank.attach(embedded_backbone)  # the file is finite: it loads; the weighted sum is what overflows
    before = backbone_state(embedded_backbone)
    with pytest.raises(InputError, match="not finite"):
        restore_batch(embedded_backbone, photo, [compose(bank, None, {"noise": 1.0}, "manual", fused=fused)])
    assert_base_state(embedded_backbone, before)


def _deep_json(bank_dir: Path) -> None:
    (bank_dir / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


MANIFEST_DAMAGE = {
    "not-json": (lambda d: (d / "manifest.json").write_text("{oops"), "not valid JSON"),
    "not-utf8": (lambda d: (d / "manifest.json").write_bytes(b"\xff\xfe{}"), "not valid JSON"),
    "deep-json": (_deep_json, "not valid JSON"),
    "array": (lambda d: (d / "manifest.json").write_text("[]"), "JSON object"),
    "no-manifest": (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
}
MANIFEST_EDITS = {
    "missing-loras": (lambda m: m.pop("loras"), "missing key 'loras'"),
    "missing-fingerprint": (lambda m: m.pop("backbone_fingerprint"), "missing key 'backbone_fingerprint'"),
    "missing-embedding": (lambda m: m["loras"][0].pop("embedding"), "missing key 'embedding'"),
    "version-2": (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
    "version-text": (lambda m: m.update(format_version="1"), "must be int"),
    "embedding-size": (lambda m: m["loras"][0]["embedding"].pop(), "re-run"),
    "embedding-nan": (lambda m: m["loras"][0]["embedding"].__setitem__(0, float("nan")), "NaN or Inf"),
    "embedding-text": (lambda m: m["loras"][0].update(embedding="0.1,0.2"), "must be list"),
    "duplicate-names": (lambda m: m["loras"].append(dict(m["loras"][0])), "unique"),
    "bad-name": (lambda m: m["loras"][0].update(name="../evil"), "must match"),
    "file-dotdot": (lambda m: m["loras"][0].update(file="../noise.safetensors"), "plain"),
    "file-absolute": (lambda m: m["loras"][0].update(file="/tmp/noise.safetensors"), "plain"),
    "file-subfolder": (lambda m: m["loras"][0].update(file="sub/noise.safetensors"), "plain"),
    "file-backslash": (lambda m: m["loras"][0].update(file="..\\noise.safetensors"), "plain"),
    "file-drive": (lambda m: m["loras"][0].update(file="C:noise.safetensors"), "plain"),
    "file-pickle": (lambda m: m["loras"][0].update(file="noise.ckpt"), "plain"),
    "rank-zero": (lambda m: m["loras"][0].update(rank=0), "rank must be in"),
    "alpha-nan": (lambda m: m["loras"][0].update(alpha=float("nan")), "alpha in"),
    "targets-empty": (lambda m: m["loras"][0].update(target_modules=[]), "target_modules"),
    "conditioning-text": (lambda m: m["loras"][0].update(conditioning={"sigma": "x"}), "conditioning"),
    "provenance-text": (lambda m: m["loras"][0].update(provenance="abc"), "provenance"),
    "validation-number": (lambda m: m["loras"][0].update(validation=3), "validation"),
    "encoder-dim-text": (lambda m: m["encoder"].update(dim="8"), "encoder.dim"),
    "encoder-blocks": (lambda m: m["encoder"].update(blocks=[99]), "encoder.blocks"),
    "encoder-crop": (lambda m: m["encoder"].update(crop=0), "encoder.crop"),
    "encoder-std-zero": (lambda m: m["encoder"]["feature_std"].__setitem__(0, 0.0), "feature_std"),
    "encoder-std-tiny": (lambda m: m["encoder"]["feature_std"].__setitem__(0, 1e-40), "feature_std"),
    "encoder-unknown": (lambda m: m["encoder"].update(layers=3), "unknown or missing"),
    "encoder-highpass": (lambda m: m["encoder"].update(highpass_sigma="x"), "highpass_sigma"),
    "encoder-log-std": (lambda m: m["encoder"].update(log_std="yes"), "log_std"),
    "router-unknown-strength": (lambda m: m["router"].update(unknown_strength=float("nan")), "unknown_strength"),
    "router-temperature": (lambda m: m["router"].update(temperature="hot"), "temperature"),
    "router-top-k": (lambda m: m["router"].update(top_k=2.5), "top_k"),
    "router-threshold": (lambda m: m["router"].update(unknown_threshold="x"), "unknown_threshold"),
    "router-list": (lambda m: m.update(router=[1]), "router"),
    "router-margin": (lambda m: m["router"].update(unknown_margin=7), "unknown_margin"),
    "router-unknown-dim": (lambda m: m["router"].update(unknown_embedding=[0.5, 0.5]), "unknown_embedding"),
    "router-unknown-nan": (lambda m: m["router"].update(unknown_embedding=[float("nan")] * m["encoder"]["dim"]),
                           "unknown_embedding"),
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE) + list(MANIFEST_EDITS))
def test_bad_manifest_refused(random_bank, embedded_backbone, tree_digest, damage):
    if damage in MANIFEST_DAMAGE:
        mutate, message = MANIFEST_DAMAGE[damage]
        mutate(random_bank.root)
    else:
        edit, message = MANIFEST_EDITS[damage]
        write_manifest(random_bank.root, edit)
    files, before = tree_digest(random_bank.root), backbone_state(embedded_backbone)
    with pytest.raises(BankError, match=message):
        load_bank("tiny", [random_bank.root.parent]).attach(embedded_backbone)
    assert tree_digest(random_bank.root) == files
    assert_base_state(embedded_backbone, before)


def test_huge_manifest_refused(random_bank, monkeypatch):
    from uir_lora.bank import manifest

    monkeypatch.setattr(manifest, "MAX_MANIFEST_BYTES", 1000)  # no need to write a file past the real limit
    with pytest.raises(BankError, match="far too large"):
        open_bank(random_bank.root)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(backbone_fingerprint="sha256:" + "0" * 32), "re-train the bank"),
    (lambda m: m.update(backbone_family="sd-turbo"), "made for the 'sd-turbo' backbone"),
    (lambda m: [e.update(target_modules=["nonexistent"]) for e in m["loras"]], "do not fit"),
], ids=["fingerprint", "family", "targets"])
def test_bank_for_other_backbone(random_bank, embedded_backbone, edit, message):
    write_manifest(random_bank.root, edit)
    before = backbone_state(embedded_backbone)
    with pytest.raises(BankError, match=message):
        open_bank(random_bank.root).attach(embedded_backbone)
    assert_base_state(embedded_backbone, before)


def test_empty_bank_cannot_route(random_bank, photo):
    write_manifest(random_bank.root, lambda m: m.update(loras=[]))
    with pytest.raises(BankError, match="no LoRAs to route to"):
        estimate(open_bank(random_bank.root), photo)


def test_bank_for_other_encoder(random_bank, photo, encoder_dim):
    small = 8  # internally consistent manifest, but the encoder gives encoder_dim numbers
    write_manifest(random_bank.root, lambda m: (
        m["encoder"].update(dim=small, feature_mean=[0.0] * small, feature_std=[1.0] * small),
        [e.update(embedding=[1.0] * small) for e in m["loras"]]))
    with pytest.raises(BankError, match=f"{encoder_dim}"):
        estimate(open_bank(random_bank.root), photo)


# -- 4. images ------------------------------------------------------------------------------------
def _png_bomb(path: Path) -> None:
    """A 1x1 PNG whose header claims 30000x30000 pixels (a decompression bomb)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


IMAGE_FILES = {
    "rgba": lambda: Image.new("RGBA", (9, 7), (10, 200, 30, 0)),
    "la": lambda: Image.new("LA", (9, 7), (100, 50)),
    "gray": lambda: Image.new("L", (9, 7), 128),
    "bilevel": lambda: Image.new("1", (9, 7), 1),
    "palette": lambda: Image.new("P", (9, 7), 3),
    "gray16": lambda: Image.fromarray(np.full((7, 9), 40000, np.uint16)),
    "1x1": lambda: Image.new("RGB", (1, 1), (255, 0, 0)),
    "1xN": lambda: Image.new("RGB", (1, 40), (0, 255, 0)),
    "Nx1": lambda: Image.new("RGB", (40, 1), (0, 0, 255)),
    "odd-37x53": lambda: Image.fromarray(np.random.default_rng(0).integers(0, 256, (53, 37, 3), np.uint8)),
}


@pytest.mark.parametrize("kind", list(IMAGE_FILES))
def test_image_modes_restore(kind, tmp_path, embedded_backbone, random_bank):
    image = IMAGE_FILES[kind]()
    image.save(tmp_path / "in.png")
    tensor = load_image(tmp_path / "in.png")
    assert tensor.shape == (1, 3, image.height, image.width) and tensor.dtype == torch.float32
    assert 0 <= tensor.min() and tensor.max() <= 1
    if kind == "gray16":
        assert tensor.mean().item() == pytest.approx(40000 / 65535, abs=1e-4)
    out, comps = restore(tensor, embedded_backbone, random_bank)  # router on, then restore
    assert out.shape == tensor.shape and torch.isfinite(out).all() and comps[0].source == "router"


@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1), (5, 6, 2), (5, 6, 4)], ids=["2d", "1ch", "2ch", "4ch"])
def test_array_layouts(shape):
    assert array_to_tensor(np.full(shape, 200, np.uint8)).shape == (1, 3, 5, 6)


@pytest.mark.parametrize("shape", [(5,), (5, 6, 5), (2, 5, 6, 3)], ids=["1d", "5ch", "4d"])
def test_array_layout_refused(shape):
    with pytest.raises(InputError, match="HxW"):
        array_to_tensor(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_text("not an image"), "not a readable image"),
    (lambda p: p.write_bytes(b""), "not a readable image"),
    (_png_bomb, "not a readable image"),
    (lambda p: None, "image not found"),
], ids=["text", "empty", "bomb", "missing"])
def test_unreadable_image(tmp_path, write, message):
    write(tmp_path / "in.png")
    with pytest.raises(InputError, match=message):
        load_image(tmp_path / "in.png")


def test_truncated_png(tmp_path):
    IMAGE_FILES["odd-37x53"]().save(tmp_path / "in.png")
    _truncate(tmp_path / "in.png")
    with pytest.raises(InputError, match="not a readable image"):
        load_image(tmp_path / "in.png")


def test_nan_inf_pixels(embedded_backbone, manual, photo):
    bad = photo.clone()
    bad[..., :10, :10] = float("nan")
    bad[..., 20:30, :10] = float("inf")
    bad[..., 40:50, :10] = -float("inf")
    out = pipeline.restore_composed(bad, embedded_backbone, [manual])
    assert torch.isfinite(out).all() and out.shape == photo.shape
    assert torch.isfinite(array_to_tensor(np.array([[np.nan, np.inf]], np.float32))).all()


@pytest.mark.parametrize("images", [torch.zeros(0, 3, 8, 8), torch.zeros(1, 3, 0, 8), torch.zeros(3, 8, 8),
                                    torch.zeros(1, 4, 8, 8), np.zeros((1, 3, 8, 8)),
                                    torch.full((1, 3, 8, 8), 200, dtype=torch.uint8)],
                         ids=["empty-batch", "zero-height", "no-batch-dim", "rgba-tensor", "numpy", "uint8"])
def test_bad_image_batch(embedded_backbone, manual, images):
    with pytest.raises(InputError, match=r"\[B,3,H,W\]|empty|float pixels"):
        pipeline.restore_composed(images, embedded_backbone, [manual])


def test_batch_each_own_composition(embedded_backbone, random_bank, photo):
    comps = [compose(random_bank, None, w, "manual") for w in ({"noise": 1.0}, {"haze": 0.5, "jpeg": 0.5}, {})]
    photo = photo[..., :64, :64]
    batch = torch.cat([photo, photo.flip(-1), photo.flip(-2)])
    out = restore_batch(embedded_backbone, batch, comps)
    singles = [restore_batch(embedded_backbone, batch[i : i + 1], [c]) for i, c in enumerate(comps)]
    assert torch.equal(out, torch.cat(singles))
    assert not torch.equal(out[0], restore_batch(embedded_backbone, batch[:1], [comps[2]])[0])
    with pytest.raises(InputError, match="need 1 or 3 compositions"):
        restore_batch(embedded_backbone, batch, comps[:2])


def test_large_image_tiles_bounded(embedded_backbone, manual, monkeypatch):
    """3000x2000 with 256 px tiles: the backbone only ever sees one tile (a cheap step stands in for it)."""
    seen: list[tuple[int, ...]] = []

    def step(image, conditioning, *, steps=1, generator=None):
        seen.append(tuple(image.shape))
        return image * 0.5

    monkeypatch.setattr(embedded_backbone, "restore_step", step)
    image = torch.rand(1, 3, 2000, 3000)
    out = restore_batch(embedded_backbone, image, [manual], SamplerOptions(tile=256))
    assert len(seen) > 100 and max(h * w for *_, h, w in seen) <= 256 * 256
    assert out.shape == image.shape and torch.allclose(out, image * 0.5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("UIR_SLOW") != "1", reason="a whole 3000x2000 restore: UIR_SLOW=1 pytest -m slow")
def test_large_image_real_backbone_memory(tmp_path):
    """Real FFDNet on 3000x2000 with 256 px tiles, in a fresh process: peak RSS stays far below whole-image."""
    import subprocess
    import sys

    script = (
        "import resource, torch; torch.set_num_threads(1)\n"
        "from uir_lora.pipeline import default_backbone, compose\n"
        "from uir_lora.bank.store import open_bank\n"
        "from uir_lora.lab.testing.banks import make_random_bank\n"
        "from uir_lora.sampler.restore import SamplerOptions, restore_batch\n"
        "import sys; from pathlib import Path\n"
        "b = default_backbone(); bank = open_bank(make_random_bank(Path(sys.argv[1]), b))\n"
        "c = compose(bank, None, {'noise': 1.0}, 'manual')\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "out = restore_batch(b, torch.rand(1, 3, 2000, 3000), [c], SamplerOptions(tile=256))\n"
        "assert torch.isfinite(out).all()\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    growth_mb = int(result.stdout.split()[-1])
    # image + padded copy + output + norm: ~300 MB; one whole-image FFDNet activation alone is 576 MB
    assert growth_mb < 600, growth_mb


# -- 5. state: interrupts and errors leave the base state; no leaks between compositions --------
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("error", [RestoreInterrupted("stop"), RuntimeError("boom"), KeyboardInterrupt()],
                         ids=["interrupt", "exception", "keyboard"])
def test_failure_mid_tiled_restore(embedded_backbone, random_bank, photo, fused, error):
    comp = compose(random_bank, None, {"noise": 0.7, "haze": 0.3}, "manual", fused=fused)
    options, photo = SamplerOptions(tile=64), photo[..., :64, :]  # three 64 px tiles
    fresh = restore_batch(embedded_backbone, photo, [comp], options)
    before, calls = backbone_state(embedded_backbone), []

    def check_interrupt() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise error

    with pytest.raises(type(error)):
        restore_batch(embedded_backbone, photo, [comp], options, check_interrupt=check_interrupt)
    assert len(calls) == 3
    assert_base_state(embedded_backbone, before)
    assert torch.equal(restore_batch(embedded_backbone, photo, [comp], options), fresh)


def test_exception_in_composed_block(embedded_backbone, random_bank, photo):
    comp = compose(random_bank, None, {"jpeg": 1.0}, "manual", fused=False)
    random_bank.attach(embedded_backbone)
    before = backbone_state(embedded_backbone)
    with pytest.raises(ZeroDivisionError):
        with composed(embedded_backbone, comp) as backbone:
            backbone.restore_step(photo, {"sigma": 0.1})
            raise ZeroDivisionError
    assert_base_state(embedded_backbone, before)


def test_alternating_compositions_and_seed(embedded_backbone, random_bank, photo):
    photo = photo[..., :64, :64]
    a = compose(random_bank, None, {"noise": 1.0}, "manual")
    b = compose(random_bank, None, {"haze": 0.8, "jpeg": -0.4}, "manual", fused=False)
    (routed,) = restore(photo, embedded_backbone, random_bank)[1]
    first = restore_batch(embedded_backbone, photo, [a], SamplerOptions(seed=7))
    for other in (b, routed, dataclasses.replace(routed, fused=False)):
        restore_batch(embedded_backbone, photo, [other])
        assert torch.equal(restore_batch(embedded_backbone, photo, [a], SamplerOptions(seed=7)), first)


# -- 6. output safety -----------------------------------------------------------------------------
@pytest.fixture()
def cli_case(random_bank, photo, tmp_path):
    source = tmp_path / "in.png"
    save_image(photo, source)
    base = ["restore", str(source), "--bank", "tiny", "--bank-dir", str(random_bank.root.parent),
            "--weights", "noise=1"]
    return source, base


def test_cli_never_overwrites_input(cli_case, capsys):
    source, base = cli_case
    before = source.read_bytes()
    for extra in (["-o", str(source)], ["-o", str(source), "--overwrite"]):
        assert cli.main(base + extra) == 2
        assert "overwrite the input" in capsys.readouterr().err
    assert source.read_bytes() == before


def test_cli_refuses_existing_output(cli_case, capsys):
    source, base = cli_case
    target = source.with_name("out.png")
    target.write_bytes(b"keep me")
    assert cli.main(base + ["-o", str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err and target.read_bytes() == b"keep me"
    assert cli.main(base + ["-o", str(target), "--overwrite"]) == 0
    assert load_image(target).shape == load_image(source).shape


@pytest.mark.parametrize("extra, message", [
    (["--tile", "-5"], "tile"), (["--strength", "nan"], "strength"), (["--weights", "noise=abc"], "noise=0.7"),
    (["--weights", "smoke=1"], "unknown LoRA"), (["--bank", "../../etc"], r"\.\."), (["--bank", "/etc"], "absolute"),
    (["--top-k", "0", "--mode", "override"], "top_k"), (["--temperature", "inf", "--mode", "bias"], "temperature"),
], ids=["tile", "strength", "weights-text", "weights-name", "bank-dotdot", "bank-absolute", "top-k", "temperature"])
def test_cli_bad_values(cli_case, capsys, tree_digest, extra, message):
    source, base = cli_case
    before = tree_digest(source.parent)
    assert cli.main(base + ["-o", str(source.with_name("out.png"))] + extra) == 2
    err = capsys.readouterr().err
    assert "uir-lora: error:" in err and re.search(message, err)
    assert tree_digest(source.parent) == before  # nothing written


@pytest.mark.parametrize("name, error", [("out.png", OSError("disk full")), ("out.jpg", KeyboardInterrupt()),
                                         ("out.tif", OSError("disk full"))], ids=["png", "jpg-ctrl-c", "tif"])
def test_interrupted_save_leaves_nothing(tmp_path, photo, monkeypatch, name, error):
    target = tmp_path / name
    target.write_bytes(b"old")

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise error

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(type(error)):
        save_image(photo, target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [name]


def test_save_onto_a_folder_leaves_nothing(tmp_path, photo):
    (tmp_path / "out.png").mkdir()
    with pytest.raises(OSError):
        save_image(photo, tmp_path / "out.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


# -- 7. no network --------------------------------------------------------------------------------
def test_network_is_blocked():
    from pytest_socket import SocketBlockedError

    with pytest.raises(SocketBlockedError):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


# -- 8. spatial routing values ---------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("window", 10), ("window", float("nan")), ("window", 100.5),
                                          ("top_k", 1.5), ("top_k", 0), ("temperature", -1.0)])
def test_spatial_value_refused(random_bank, photo, field, value):
    with pytest.raises(InputError, match=field):
        estimate_spatial(random_bank, photo, **{field: value})


# -- 9. nodes: workflow values are untrusted (conftest's pack, imported against fakes of ComfyUI) --
# The pack is imported as its own package there, with its own copy of the engine's exception
# classes, so these tests match ValueError (every UIR input error is one) and the message.
@pytest.fixture(scope="module")
def node_env(nodes, comfy_fakes, tmp_path_factory, pristine_bank):
    """The nodes, and a backbone and bank loaded through them once for the module."""
    models_dir = tmp_path_factory.mktemp("models")
    comfy_fakes.use_models_dir(models_dir)
    shutil.copytree(pristine_bank, models_dir / "uir_lora" / "tiny")
    found = nodes
    backbone = found["UIR_BackboneLoader"].execute("embedded-ffdnet (built in)", "cpu", "fp32")[0]
    return found, backbone, found["UIR_LoraBankLoader"].execute(backbone, "tiny")[0], models_dir


@pytest.fixture()
def comfy_image(photo) -> torch.Tensor:
    return photo[..., :64, :64].movedim(1, -1)  # a ComfyUI IMAGE [1,H,W,3]


PATH_ERROR = r"\.\.|absolute|non-empty"


@pytest.mark.parametrize("name", ["../../etc", "/etc", "", "tiny\x00", "C:\\tiny", "ABSOLUTE"])
def test_node_bank_name_refused(node_env, name):
    found, backbone, _, models_dir = node_env
    name = str(models_dir / "uir_lora" / "tiny") if name == "ABSOLUTE" else name  # a real bank, by absolute path
    before = backbone_state(backbone)
    with pytest.raises(ValueError, match=PATH_ERROR):
        found["UIR_LoraBankLoader"].execute(backbone, name)
    assert_base_state(backbone, before)


@pytest.mark.parametrize("choice", ["sd-turbo | checkpoints/../../x.safetensors",
                                    "sd-turbo | checkpoints//etc/x.safetensors", "sd-turbo | elsewhere/x"])
def test_node_backbone_path_refused(node_env, choice):
    loader = node_env[0]["UIR_BackboneLoader"]
    assert re.search(PATH_ERROR + "|not one of", loader.validate_inputs(choice))
    with pytest.raises(ValueError, match=PATH_ERROR + "|not one of"):
        loader.execute(choice, "cpu", "fp32")


@pytest.mark.parametrize("field, value", [("tile", -5), ("tile", 100.5), ("seed", -1), ("seed", 2**64),
                                          ("strength", float("nan")), ("strength", 2.0)])
def test_node_restore_value_refused(node_env, comfy_image, field, value):
    found, backbone, bank, _ = node_env
    (composition,) = found["UIR_LoraComposer"].execute(bank, "manual", "noise=1", True)
    values = {"strength": 1.0, "tile": 512, "seed": 0, field: value}
    before = backbone_state(backbone)
    with pytest.raises(ValueError, match=field):
        found["UIR_Restore"].execute(comfy_image, backbone, composition, values["strength"], values["tile"],
                                     values["seed"], False)
    assert_base_state(backbone, before)


def test_node_restore_nan_image(node_env, comfy_image):
    found, backbone, bank, _ = node_env
    (composition,) = found["UIR_LoraComposer"].execute(bank, "manual", "noise=1", True)
    bad = comfy_image.clone()
    bad[:, :8] = float("nan")
    (out,) = found["UIR_Restore"].execute(bad, backbone, composition, 1.0, 512, 0, False).args
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("field, value", [("top_k", -5), ("top_k", 99), ("top_k", 1.5), ("temperature", -1.0),
                                          ("temperature", float("nan")), ("normalisation", "max")])
def test_node_estimator_value_refused(node_env, comfy_image, field, value):
    values = {"top_k": 0, "temperature": 0.0, "normalisation": "bank default", field: value}
    with pytest.raises(ValueError, match=field if field != "normalisation" else "softmax"):
        node_env[0]["UIR_DegradationEstimator"].execute(comfy_image, node_env[2], **values)


@pytest.mark.parametrize("weights, mode, message", [
    ("noise=abc", "manual", "could not read"), ("noise=nan", "manual", "finite"), ("noise=99", "manual", "4.0"),
    ("../x=1", "manual", "unknown LoRA"), ("noise=1", "evil", "mode must be"),
])
def test_node_composer_value_refused(node_env, weights, mode, message):
    with pytest.raises(ValueError, match=message):
        node_env[0]["UIR_LoraComposer"].execute(node_env[2], mode, weights, True)


@pytest.mark.parametrize("field, value", [("severity", float("nan")), ("severity", -1.0), ("seed", 1.5),
                                          ("seed", -1), ("seed", 2**64), ("kind", "evil")])
def test_node_degrade_value_refused(node_env, comfy_image, field, value):
    values = {"kind": "noise", "second_kind": "none", "severity": 0.5, "seed": 0, field: value}
    with pytest.raises(ValueError, match=field):
        node_env[0]["UIR_SyntheticDegrade"].execute(comfy_image, **values)


@pytest.mark.parametrize("name", ["/etc/passwd", "", "..\\README.md"])
def test_node_example_image_refused(node_env, name):
    with pytest.raises(ValueError, match=PATH_ERROR):
        node_env[0]["UIR_ExampleImage"].execute(name)


def test_numbers_given_as_text_are_refused_with_the_field_name():
    from uir_lora.errors import check_range

    with pytest.raises(InputError, match="strength"):
        check_range("strength", "0.5", 0.0, 1.0)
    assert check_range("strength", 0.5, 0.0, 1.0) == 0.5


def test_restore_refuses_an_output_name_that_is_not_an_image(tmp_path, photo, capsys):
    from uir_lora.images import save_image
    from uir_lora.lab.cli import main

    source = save_image(photo, tmp_path / "in.png")
    assert main(["restore", str(source), "-o", str(tmp_path / "out.txt")]) == 2
    assert "not an image format" in capsys.readouterr().err
    assert not (tmp_path / "out.txt").exists()
