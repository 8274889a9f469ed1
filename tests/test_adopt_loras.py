"""tools/adopt_loras.py: only LoRAs that beat the shipped one move; embeddings, order and router stay."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import read_lora_file
from uir_lora.lab.testing.banks import make_random_bank


def _set_psnr(bank: Path, values: dict[str, float], note: str) -> None:
    manifest = read_manifest(bank)
    for entry in manifest.loras:
        entry.validation = {"psnr_out": values[entry.name]}
        entry.provenance = {"steps": 1, "note": note}
    write_manifest(manifest, bank)


def test_adopts_only_improved_loras(tmp_path, embedded_backbone, tool):
    target = make_random_bank(tmp_path / "shipped", embedded_backbone, seed=0)
    source = make_random_bank(tmp_path / "retrained", embedded_backbone, seed=1)
    _set_psnr(target, {"noise": 30.0, "haze": 20.0, "jpeg": 40.0}, "shipped")
    _set_psnr(source, {"noise": 31.0, "haze": 19.0, "jpeg": 40.5}, "retrained")
    before = json.loads((target / "manifest.json").read_text())
    assert tool("adopt_loras").adopt(source, target, ["noise", "haze"]) == ["noise"]
    after = json.loads((target / "manifest.json").read_text())
    assert [e["name"] for e in after["loras"]] == [e["name"] for e in before["loras"]]
    assert after["router"] == before["router"] and after["encoder"] == before["encoder"]
    for old, new in zip(before["loras"], after["loras"]):
        assert new["embedding"] == old["embedding"]
        assert new["provenance"]["note"] == ("retrained" if old["name"] == "noise" else "shipped")
    adopted, kept = read_lora_file(target / "noise.safetensors"), read_lora_file(target / "haze.safetensors")
    assert all(torch.equal(adopted[k], v) for k, v in read_lora_file(source / "noise.safetensors").items())
    assert not all(torch.equal(kept[k], v) for k, v in read_lora_file(source / "haze.safetensors").items())


def test_force_adopts_a_lora_with_its_global_adapter(tmp_path, embedded_backbone, tree_digest, tool):
    from safetensors.torch import save_file

    from uir_lora.global_stage import GlobalAdapter

    target = make_random_bank(tmp_path / "shipped", embedded_backbone, seed=0)
    source = make_random_bank(tmp_path / "retrained", embedded_backbone, seed=1)
    _set_psnr(target, {"noise": 30.0, "haze": 20.0, "jpeg": 40.0}, "shipped")
    manifest = read_manifest(source)
    manifest.lora("haze").global_stage = "haze.global.safetensors"
    save_file({k: v.contiguous() for k, v in GlobalAdapter().state_dict().items()},
              str(source / "haze.global.safetensors"))
    write_manifest(manifest, source)
    untouched = {name: digest for name, digest in tree_digest(target).items()
                 if not name.startswith(("haze", "manifest"))}
    assert tool("adopt_loras").adopt(source, target, ["haze"]) == []  # no validation score: kept without --force
    assert tool("adopt_loras").adopt(source, target, ["haze"], force=True) == ["haze"]
    assert read_manifest(target).lora("haze").global_stage == "haze.global.safetensors"
    assert read_manifest(target).lora("noise").global_stage == ""
    assert (target / "haze.global.safetensors").is_file()
    assert {k: v for k, v in tree_digest(target).items() if k in untouched} == untouched
    assert '"global_stage"' not in json.dumps(json.loads((target / "manifest.json").read_text())["loras"][0])


def test_a_lora_adopted_runs_as_it_was_trained_flat_or_coarse_to_fine(tmp_path, embedded_backbone, tool):
    target = make_random_bank(tmp_path / "shipped", embedded_backbone, seed=0)
    source = make_random_bank(tmp_path / "retrained", embedded_backbone, seed=1)
    manifest = read_manifest(source)
    manifest.lora("noise").coarsest_side = 256  # trained through the pyramid
    write_manifest(manifest, source)
    assert tool("adopt_loras").adopt(source, target, ["noise", "haze"], force=True) == ["noise", "haze"]
    assert read_manifest(target).lora("noise").coarsest_side == 256
    assert "coarsest_side" not in json.loads((target / "manifest.json").read_text())["loras"][1]
    manifest.lora("noise").coarsest_side = 0  # retrained flat
    write_manifest(manifest, source)
    assert tool("adopt_loras").adopt(source, target, ["noise"], force=True) == ["noise"]
    assert read_manifest(target).lora("noise").coarsest_side == 0
    assert "coarsest_side" not in (target / "manifest.json").read_text()


def test_a_lora_adopted_reads_its_measured_conditioning_as_it_was_trained(tmp_path, embedded_backbone, tool):
    target = make_random_bank(tmp_path / "shipped", embedded_backbone, seed=0)
    source = make_random_bank(tmp_path / "retrained", embedded_backbone, seed=1, conditioning={"sigma": 0.2})
    manifest = read_manifest(source)
    manifest.lora("noise").measured = ["sigma"]  # trained on each photo's measured noise level
    write_manifest(manifest, source)
    assert tool("adopt_loras").adopt(source, target, ["noise", "haze"], force=True) == ["noise", "haze"]
    adopted = read_manifest(target)
    assert adopted.lora("noise").measured == ["sigma"]
    assert adopted.lora("noise").conditioning == {"sigma": 0.2}
    assert adopted.lora("haze").measured == []
    manifest.lora("noise").measured = []  # retrained on a fixed level
    write_manifest(manifest, source)
    assert tool("adopt_loras").adopt(source, target, ["noise"], force=True) == ["noise"]
    assert read_manifest(target).lora("noise").measured == []
    assert '"measured"' not in (target / "manifest.json").read_text()
