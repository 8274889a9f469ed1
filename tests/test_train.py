"""Training: the loss falls, `uir-lora train-lora` writes a LoRA that re-loads and attaches."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig

from uir_lora.backbones.registry import FAMILIES
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank, read_lora_file
from uir_lora.lab.cli import main
from uir_lora.lab.train import data, trainer


@pytest.fixture()
def crops() -> torch.Tensor:
    """Smooth random 'photos' (uint8 [8,3,48,48]) standing in for the cached training crops."""
    gen = torch.Generator().manual_seed(0)
    small = torch.rand(8, 3, 6, 6, generator=gen)
    return (torch.nn.functional.interpolate(small, size=48, mode="bilinear") * 255).round().to(torch.uint8)


@pytest.fixture()
def data_dir(tmp_path, crops):
    """A crop cache and a tiny validation set where the command expects them (no [train] extra needed)."""
    torch.save({"crops": crops, "info": {"crops": len(crops), "test": True}}, tmp_path / "train_crops_s0.pt")
    torch.save(crops[:2, :, :32, :32].float() / 255, tmp_path / "validation.pt")
    return tmp_path


def test_lora_training_lowers_the_loss(crops):
    torch.manual_seed(0)
    backbone = FAMILIES["embedded-ffdnet"](None)
    dataset = trainer.PairDataset(crops, "low_light", crop=32, length=40 * 4, seed=0)
    cfg = trainer.TrainConfig(steps=40, batch=4, lr=2e-3, lr_min=2e-3, log_every=1000)
    before = {k: v.clone() for k, v in backbone.base_state_dict().items()}
    stats = trainer.train_lora(backbone, "ll", LoraConfig(r=4, lora_alpha=4.0, target_modules=["model.0", "model.22"]),
                               dataset, {"sigma": 0.0}, cfg, log=lambda _: None)
    losses = stats["losses"]
    assert stats["steps"] == 40
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    after = backbone.base_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "base weights must stay frozen"


def test_pair_dataset_is_seeded_and_clean_is_identity(crops):
    a = trainer.PairDataset(crops, "noise", 32, 4, seed=3)
    b = trainer.PairDataset(crops, "noise", 32, 4, seed=3)
    assert torch.equal(a[2][0], b[2][0]) and not torch.equal(a[2][0], a[2][1])
    degraded, clean = trainer.PairDataset(crops, trainer.CLEAN, 32, 4, seed=3)[1]
    assert torch.equal(degraded, clean)
    with pytest.raises(ValueError, match="--crop <= 48"):
        trainer.PairDataset(crops, "noise", 64, 4, seed=0)


def test_train_lora_command_writes_a_loadable_entry(tmp_path, data_dir, embedded_backbone, capsys):
    bank_dir = tmp_path / "bank"
    args = ["train-lora", "--degradation", "noise", "--bank", str(bank_dir), "--steps", "3", "--batch", "2",
            "--crop", "32", "--rank", "2", "--data-dir", str(data_dir)]
    assert main(args) == 0
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    entry = manifest["loras"][0]
    assert entry["name"] == "noise" and entry["rank"] == 2 and entry["provenance"]["steps"] == 3
    assert entry["conditioning"]["sigma"] * 255 in trainer.SIGMA_GRID
    assert entry["validation"]["psnr_out"] > 0 and entry["validation"]["images"] == 4
    assert manifest["backbone_fingerprint"] == embedded_backbone.fingerprint
    bank = open_bank(bank_dir)
    backbone = FAMILIES["embedded-ffdnet"](None)
    adapter = bank.attach(backbone)["noise"]
    stored = read_lora_file(bank_dir / "noise.safetensors")
    loaded = backbone.adapter_state(adapter)
    assert stored.keys() == loaded.keys() and all(torch.equal(stored[k], loaded[k]) for k in stored)
    assert main(args) == 2  # the same name again without --replace
    assert "already has a LoRA 'noise'" in capsys.readouterr().err
    written = read_manifest(bank_dir)
    written.loras[0].embedding = [0.5] * len(written.loras[0].embedding)  # as train-router would set it
    write_manifest(written, bank_dir)
    assert main([*args, "--replace", "--seed", "1"]) == 0
    again = read_manifest(bank_dir).lora("noise")
    assert again.embedding == written.loras[0].embedding and again.provenance["seed"] == 1


def test_validation_subset_takes_the_first_photos_and_their_centres():
    images = torch.arange(3 * 3 * 64 * 64, dtype=torch.float32).reshape(3, 3, 64, 64)
    assert torch.equal(data.validation_subset(images), images)
    assert torch.equal(data.validation_subset(images, photos=2, side=64), images[:2])
    assert torch.equal(data.validation_subset(images, photos=1, side=32), images[:1, :, 16:48, 16:48])


def test_train_lora_validates_on_the_asked_subset_and_records_it(tmp_path, data_dir, capsys):
    args = ["train-lora", "--degradation", "noise", "--bank", str(tmp_path / "bank"), "--steps", "1", "--batch", "2",
            "--crop", "32", "--rank", "2", "--data-dir", str(data_dir), "--validation-photos", "1"]
    assert main(args) == 0
    entry = read_manifest(tmp_path / "bank").lora("noise")
    assert entry.validation["images"] == 2 and entry.validation["photos"] == 1  # two seeded versions of one photo
    assert entry.provenance["validation_photos"] == [data.VALIDATION_PHOTOS[0]]
    assert entry.provenance["validation_side"] == 32
    assert main([*args, "--replace", "--validation-side", "8"]) == 2
    assert "--validation-side 0 or >= 32" in capsys.readouterr().err


def test_train_lora_rejects_unknown_kind(tmp_path, capsys):
    assert main(["train-lora", "--degradation", "fog", "--bank", str(tmp_path)]) == 2
    assert "'fog' is unknown" in capsys.readouterr().err


def test_full_finetune_writes_a_backbone(tmp_path, data_dir):
    out = tmp_path / "ff.safetensors"
    assert main(["train-lora", "--degradation", "all", "--full-finetune", "--output", str(out), "--steps", "2",
                 "--batch", "2", "--crop", "32", "--lr", "1e-4", "--data-dir", str(data_dir)]) == 0
    assert FAMILIES["embedded-ffdnet"](out).fingerprint != FAMILIES["embedded-ffdnet"](None).fingerprint


def test_resume_starts_from_the_stored_weights(crops):
    """init_state loads before training: at lr 0 the adapter ends exactly as the given state."""
    config = LoraConfig(r=2, lora_alpha=2.0, target_modules=["model.0", "model.22"])
    first = FAMILIES["embedded-ffdnet"](None)
    dataset = trainer.PairDataset(crops, "haze", crop=32, length=8, seed=0)
    trainer.train_lora(first, "h", config, dataset, {"sigma": 0.0},
                       trainer.TrainConfig(steps=2, batch=4, lr=1e-2, lr_min=1e-2), log=lambda _: None)
    state = first.adapter_state("h")
    second = FAMILIES["embedded-ffdnet"](None)
    trainer.train_lora(second, "h", config, dataset, {"sigma": 0.0},
                       trainer.TrainConfig(steps=1, batch=4, lr=0.0, lr_min=0.0), init_state=state, log=lambda _: None)
    again = second.adapter_state("h")
    assert any(float(v.abs().max()) > 0 for k, v in state.items() if "lora_B" in k)  # trained, not zero-init
    assert all(torch.equal(state[k], again[k]) for k in state)


def test_train_lora_resume_records_both_runs(tmp_path, data_dir, capsys):
    bank_dir = tmp_path / "bank"
    args = ["train-lora", "--degradation", "haze", "--bank", str(bank_dir), "--batch", "2", "--crop", "32",
            "--rank", "2", "--data-dir", str(data_dir)]
    assert main([*args, "--steps", "3"]) == 0
    first = read_manifest(bank_dir).lora("haze")
    before = read_lora_file(bank_dir / "haze.safetensors")
    assert main([*args, "--steps", "2", "--resume", "--rank", "4", "--seed", "1"]) == 0
    entry = read_manifest(bank_dir).lora("haze")
    prov = entry.provenance
    assert prov["steps"] == 5 and prov["run_steps"] == 2 and [r["steps"] for r in prov["runs"]] == [3, 2]
    assert prov["runs"][0]["seed"] == 0 and prov["runs"][1]["seed"] == 1 and prov["runs"][1]["resumed"]
    assert entry.rank == 2 and entry.conditioning == first.conditioning  # the stored LoRA's rank and sigma
    after = read_lora_file(bank_dir / "haze.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert main([*args, "--steps", "1", "--resume", "--name", "fog"]) == 2
    assert "has no LoRA 'fog'" in capsys.readouterr().err
    assert main(["train-lora", "--degradation", "haze", "--bank", str(tmp_path / "none"), "--resume"]) == 2


@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_loss_option_is_the_training_objective(crops, loss):
    backbone = FAMILIES["embedded-ffdnet"](None)
    dataset = trainer.PairDataset(crops, "haze", crop=32, length=4, seed=0)
    stats = trainer.train_lora(backbone, "h", LoraConfig(r=2, lora_alpha=2.0, target_modules=["model.0"]), dataset,
                               {"sigma": 0.0}, trainer.TrainConfig(steps=1, batch=4, lr=0.0, lr_min=0.0, loss=loss),
                               log=lambda _: None)
    degraded, clean = (torch.stack(t) for t in zip(*(dataset[i] for i in range(4))))
    with torch.no_grad():  # B starts at zero: the first step's output is the backbone's
        out = backbone.restore_step(degraded, {"sigma": 0.0})
    expected = torch.nn.functional.mse_loss(out, clean) if loss == "mse" else torch.nn.functional.l1_loss(out, clean)
    assert stats["losses"][0] == pytest.approx(float(expected), rel=1e-4)


def test_identity_examples_pass_through_at_the_asked_fraction(crops):
    dataset = trainer.PairDataset(crops, "haze", 32, 400, seed=0, identity_fraction=0.25)
    flags = [dataset.is_identity(i) for i in range(len(dataset))]
    assert all(sum(flags[i:i + 16]) == 4 for i in range(0, 400, 16))  # every batch of 16, exactly
    items = [dataset[i] for i in range(40)]
    assert all(torch.equal(d, t) == flags[i] for i, (d, t) in enumerate(items))  # identity: target = input
    # half clean crops, half another kind's degradation (the clean crop is not stored: compare with F = 0)
    plain = trainer.PairDataset(crops, "haze", 32, 40, seed=0)
    untouched = [torch.equal(items[i][0], plain[i][1]) for i in range(40) if flags[i]]
    assert 0 < sum(untouched) < len(untouched)
    assert torch.equal(trainer.PairDataset(crops, "haze", 32, 40, seed=0, identity_fraction=0.25)[3][0], items[3][0])
    assert torch.equal(plain[0][0], trainer.PairDataset(crops, "haze", 32, 40, seed=0, identity_fraction=0.0)[0][0])
    with pytest.raises(ValueError, match="one degradation kind"):
        trainer.PairDataset(crops, trainer.CLEAN, 32, 4, seed=0, identity_fraction=0.25)


def test_train_lora_identity_fraction_is_recorded(tmp_path, data_dir, capsys):
    args = ["train-lora", "--degradation", "haze", "--bank", str(tmp_path / "bank"), "--steps", "2", "--batch", "4",
            "--crop", "32", "--rank", "2", "--data-dir", str(data_dir)]
    assert main([*args, "--identity-fraction", "0.25"]) == 0
    assert read_manifest(tmp_path / "bank").lora("haze").provenance["identity_fraction"] == 0.25
    assert main([*args, "--identity-fraction", "1.5", "--replace"]) == 2
    assert "--identity-fraction 1.5" in capsys.readouterr().err


def test_the_default_crop_cache_is_the_repositorys_ignored_data_folder():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert data.DEFAULT_DATA_DIR == root / "data"
    assert "/data/" in (root / ".gitignore").read_text().split()


def test_measured_sigma_trains_and_records_it(tmp_path, data_dir, capsys, monkeypatch):
    """--measured-sigma: each training image's own noise level is FFDNet's sigma (never above the ceiling), the
    entry says so, and a resume must keep it."""
    told: list[torch.Tensor] = []
    original = trainer.RestoreModule.forward

    def spy(self, image):
        told.append(trainer.conditioning_of(self._backbone[0], image, self.conditioning, self.measured)["sigma"])
        return original(self, image)

    monkeypatch.setattr(trainer.RestoreModule, "forward", spy)
    bank_dir = tmp_path / "bank"
    args = ["train-lora", "--degradation", "noise", "--bank", str(bank_dir), "--batch", "2", "--crop", "32",
            "--rank", "2", "--data-dir", str(data_dir)]
    assert main([*args, "--steps", "2", "--measured-sigma"]) == 0
    entry = read_manifest(bank_dir).lora("noise")
    ceiling = trainer.MEASURED_SIGMA_CEILING
    assert entry.measured == ["sigma"] and entry.conditioning == {"sigma": pytest.approx(ceiling)}
    assert len(told) == 2 and all(t.shape == (2,) and bool((t <= ceiling).all()) for t in told)
    assert len({float(v) for t in told for v in t}) == 4  # one level per image, read from it
    assert main([*args, "--steps", "1", "--resume"]) == 2
    assert "trained with measured ['sigma']; pass --measured-sigma to continue it" in capsys.readouterr().err
    assert main([*args, "--steps", "1", "--resume", "--measured-sigma"]) == 0
    assert read_manifest(bank_dir).lora("noise").measured == ["sigma"]


def test_replace_keeps_the_kinds_routing_and_order(tmp_path, data_dir):
    bank_dir = tmp_path / "bank"
    args = ["train-lora", "--degradation", "noise", "--bank", str(bank_dir), "--batch", "2", "--crop", "32",
            "--rank", "2", "--data-dir", str(data_dir), "--steps", "1"]
    assert main(args) == 0
    manifest = read_manifest(bank_dir)
    entry = manifest.lora("noise")
    entry.embedding = [0.5] * len(entry.embedding)
    entry.route_margin, entry.restored_before = 0.25, ["low_light"]
    write_manifest(manifest, bank_dir)
    assert main([*args, "--replace", "--seed", "3"]) == 0
    again = read_manifest(bank_dir).lora("noise")
    assert again.embedding == entry.embedding and again.route_margin == 0.25 and again.restored_before == ["low_light"]
    assert again.provenance["seed"] == 3


def test_followed_by_adds_the_later_kind_to_a_share(crops):
    plain = trainer.PairDataset(crops, "noise", 32, 200, seed=5)
    mixed = trainer.PairDataset(crops, "noise", 32, 200, seed=5, followed_by="jpeg", followed_share=0.35)
    followed = [not torch.equal(mixed[i][0], plain[i][0]) for i in range(200)]
    assert 0.2 < sum(followed) / 200 < 0.5
    index = followed.index(True)
    assert torch.equal(mixed[index][1], plain[index][1])  # the target stays the clean crop
    for bad in ({"followed_by": "noise"}, {"followed_by": "jpeg", "followed_share": 0.0},
                {"followed_by": "nonsense"}):
        with pytest.raises(ValueError, match="followed_by needs"):
            trainer.PairDataset(crops, "noise", 32, 4, seed=0, **{"followed_share": 0.3, **bad})


def test_followed_by_command_checks(tmp_path, data_dir, capsys):
    args = ["train-lora", "--degradation", "noise", "--bank", str(tmp_path / "b"), "--batch", "2", "--crop", "32",
            "--rank", "2", "--data-dir", str(data_dir), "--steps", "1"]
    assert main([*args, "--followed-by", "noise"]) == 2
    assert "--followed-by 'noise' needs another built-in kind" in capsys.readouterr().err
    assert main([*args, "--followed-by", "jpeg", "--followed-share", "0.5"]) == 0
    provenance = read_manifest(tmp_path / "b").lora("noise").provenance
    assert provenance["followed_by"] == "jpeg" and provenance["followed_share"] == 0.5
