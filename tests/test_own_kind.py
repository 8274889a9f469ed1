"""A kind of damage of the user's own: pairs checked with clear errors, a damage function checked, and a kind the
project does not ship (scratches and dust, drawn here) trained, added, routed and restored end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from uir_lora import pipeline
from uir_lora.bank.manifest import read_manifest
from uir_lora.bank.store import open_bank
from uir_lora.errors import InputError
from uir_lora.images import save_image
from uir_lora.lab.cli import main
from uir_lora.lab.testing.scratches import scratches_and_dust
from uir_lora.lab.train import pairs as own

SIDE = 72


def smooth_photo(generator: torch.Generator, side: int = SIDE) -> torch.Tensor:
    """A smooth random 'photo' [1,3,side,side] with some texture, so shifts and scratches show."""
    coarse = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=side, mode="bicubic",
                                             align_corners=False)
    return (coarse + 0.05 * torch.rand(1, 3, side, side, generator=generator)).clamp(0, 1)


def write_pairs(root: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    damaged, clean = root / "damaged", root / "clean"
    damaged.mkdir(parents=True)
    clean.mkdir(parents=True)
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        photo = smooth_photo(generator)
        save_image(photo, clean / f"photo{index:02d}.png")
        save_image(scratches_and_dust(photo, generator), damaged / f"photo{index:02d}.png")
    return damaged, clean


def sha256_files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_bad_pairs_get_one_error_naming_each_problem_and_its_fix(tmp_path, capsys):
    damaged, clean = write_pairs(tmp_path, 6)
    (clean / "photo00.png").unlink()                                         # missing partner (clean side)
    save_image(torch.rand(1, 3, SIDE, SIDE), damaged / "extra.png")          # missing partner (damaged side)
    save_image(torch.rand(1, 3, 40, SIDE), clean / "photo01.png")            # size mismatch
    (damaged / "photo02.png").write_text("not a picture")                    # non-image under an image name
    (clean / "notes.txt").write_text("scanned 2019")                         # non-image file
    shifted = own.load_image(clean / "photo03.png")
    save_image(torch.roll(scratches_and_dust(shifted, torch.Generator().manual_seed(3)), (4, -3), (2, 3)),
               damaged / "photo03.png")                                      # misaligned
    save_image(torch.rand(1, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(9)),
               damaged / "photo04.png")                                      # another picture
    with pytest.raises(InputError) as caught:
        own.find_pairs(damaged, clean)
    message = str(caught.value)
    assert "7 problem(s)" in message
    for expected in ("photo00.png: missing partner: no photo00.* in", "extra.png: missing partner",
                     "photo01: the damaged photo is 72x72 px, the clean one 72x40 px",
                     "photo02.png: not a readable image", "notes.txt: not an image (.txt)",
                     "photo03: misaligned", "photo04: the two photos do not show the same picture"):
        assert expected in message, (expected, message)
    assert "photo05" not in message  # the good pair is not blamed
    # through the command: the same listing on stderr, exit status 2, nothing written
    bank = tmp_path / "bank"
    assert main(["train-lora", "--pairs", str(damaged), str(clean), "--name", "scratches", "--bank", str(bank),
                 "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "missing partner" in err and "Traceback" not in err and not bank.exists()


def test_alignment_check_is_quiet_on_aligned_damage_and_can_be_skipped(tmp_path):
    generator = torch.Generator().manual_seed(1)
    photo = smooth_photo(generator, 96)
    assert own.check_pair("ok", scratches_and_dust(photo, generator), photo) is None
    rolled = torch.roll(photo, (3, 2), (2, 3))
    assert "misaligned" in own.check_pair("moved", rolled, photo)
    assert own.check_pair("moved", rolled, photo, alignment=False) is None


def test_split_is_by_name_and_keeps_a_training_pair():
    names = [f"scan{i}" for i in range(20)]
    held = own.held_out(names, 0.2)
    assert len(held) == 4 and held == own.held_out(list(reversed(names)), 0.2)
    assert own.held_out(names[:1], 0.5) == set() and own.held_out(names, 0) == set()


def test_crops_are_the_same_window_of_both_photos():
    generator = torch.Generator().manual_seed(2)
    photo = smooth_photo(generator)
    pair = own.PhotoPair("p", photo * 0.5, photo)
    dataset = own.PairCropDataset([pair], crop=32, length=8, seed=0)
    for index in range(8):
        damaged, clean = dataset[index]
        assert damaged.shape == (3, 32, 32) and torch.allclose(damaged, clean * 0.5)
    assert torch.equal(dataset[3][0], own.PairCropDataset([pair], 32, 8, seed=0)[3][0])
    with pytest.raises(InputError, match="--crop <= 72"):
        own.PairCropDataset([pair], crop=96, length=1, seed=0)


BAD_FUNCTIONS = {
    "def damage(image, generator):\n    return image[..., :-1]\n": "returned shape",
    "def damage(image, generator):\n    return (image * 255).to(torch.uint8)\n": "dtype torch.uint8",
    "def damage(image, generator):\n    return image / 0 * 0\n": "NaN or Inf",
    "def damage(image, generator):\n    return image * 2 + 0.5\n": "outside 0..1",
    "def damage(image, generator):\n    return image.numpy()\n": "returned ndarray",
    "def damage(image, generator):\n    raise RuntimeError('no scanner')\n": "raised RuntimeError: no scanner",
    "damage = 3\n": "has no function 'damage'",
    "import not_a_module_anywhere\n": "importing",
}


@pytest.mark.parametrize("source", list(BAD_FUNCTIONS))
def test_damage_function_output_is_checked(tmp_path, source):
    path = tmp_path / "my_damage.py"
    path.write_text("import torch\n" + source)
    with pytest.raises(InputError, match=BAD_FUNCTIONS[source]):
        function = own.load_damage_function(f"{path}:damage")
        own.apply_damage(function, f"{path}:damage", torch.rand(1, 3, 16, 16), torch.Generator(), "a photo")


def test_damage_spec_must_name_a_function(tmp_path):
    for spec in ("scratches", "module:", f"{tmp_path}/absent.py:damage", "a:not-an-identifier"):
        with pytest.raises(InputError, match="--degrade"):
            own.load_damage_function(spec)


def test_degrade_function_comes_from_the_command_line_only(tmp_path, embedded_backbone):
    """--degrade imports the user's file once, for training; the bank records it but never imports it."""
    marker = tmp_path / "imported.txt"
    script = tmp_path / "my_damage.py"
    script.write_text(f"from pathlib import Path\nwith open({str(marker)!r}, 'a') as f:\n    f.write('x')\n"
                      "from uir_lora.lab.testing.scratches import scratches_and_dust\n\n\n"
                      "def damage(image, generator):\n    return scratches_and_dust(image, generator)\n")
    photos = tmp_path / "clean"
    photos.mkdir()
    generator = torch.Generator().manual_seed(4)
    for index in range(3):
        save_image(smooth_photo(generator), photos / f"p{index}.png")
    bank = tmp_path / "bank"
    assert main(["train-lora", "--degrade", f"{script}:damage", "--clean-photos", str(photos), "--draws", "2",
                 "--name", "dust", "--bank", str(bank), "--steps", "2", "--batch", "2", "--crop", "32",
                 "--rank", "2", "--val-fraction", "0.34", "--no-bank-add"]) == 0
    assert marker.read_text() == "x"
    entry = read_manifest(bank).lora("dust")
    data = entry.provenance["data"]
    assert data["degrade"] == f"{script}:damage" and data["draws"] == 2 and len(data["train_pairs"]) == 4
    assert data["degrade_file_sha256"] == hashlib.sha256(script.read_bytes()).hexdigest()
    assert len(data["held_out_pairs"]) == 1 and entry.validation["images"] == 1
    assert not any(entry.embedding)  # --no-bank-add: left for `uir-lora bank add`
    open_bank(bank).attach(embedded_backbone)
    assert marker.read_text() == "x"  # loading the bank ran none of the user's code


def test_scratch_kind_end_to_end_changes_no_other_file(tmp_path, embedded_backbone, encoder_dim, capsys,
                                                        monkeypatch):
    """Train a few steps on pairs drawn here, add to a copy of a bank, route held-out scratches to it, restore."""
    from uir_lora.lab.router import fit
    from uir_lora.lab.testing.banks import make_random_bank

    references = [smooth_photo(torch.Generator().manual_seed(50 + i), 80) for i in range(2)]
    monkeypatch.setattr(fit, "reference_photos", lambda: references)  # the bank's photos: two small ones here

    source = make_random_bank(tmp_path / "shipped", embedded_backbone, dim=encoder_dim,
                              conditioning={"sigma": 25 / 255})
    bank = tmp_path / "models" / "uir_lora" / "my-bank"
    shutil.copytree(source, bank)
    before_files = sha256_files(bank)
    before_entries = read_manifest(bank).to_json()["loras"]
    damaged, clean = write_pairs(tmp_path / "pairs", 8)
    assert main(["train-lora", "--pairs", str(damaged), str(clean), "--name", "scratches", "--bank", str(bank),
                 "--steps", "3", "--batch", "2", "--crop", "32", "--rank", "2"]) == 0
    out = capsys.readouterr().out
    assert "bank add:" in out and "held-out damaged photos route to 'scratches' first" in out
    assert "16 with their damage carried onto other pictures" in out  # 2 x (6 training photos + 2 references)
    assert "kept apart from 164 examples" in out  # 26 on each of the 6 training photos, 4 on each reference
    after_files = sha256_files(bank)
    assert {n: d for n, d in after_files.items() if n != "manifest.json" and n in before_files} == {
        n: d for n, d in before_files.items() if n != "manifest.json"}
    assert set(after_files) - set(before_files) == {"scratches.safetensors"}
    manifest = read_manifest(bank)
    assert manifest.to_json()["loras"][:3] == before_entries  # every other entry byte for byte
    entry = manifest.lora("scratches")
    assert any(entry.embedding) and entry.provenance["data"]["pairs"] == 8
    assert f"route margin {entry.route_margin:.3f}" in out and 0 <= entry.route_margin <= 2
    held = entry.provenance["held_out_validation"]
    assert held == entry.validation and held["images"] == 2 and {"psnr_in", "psnr_out", "ssim_in"} <= held.keys()
    assert json.dumps(entry.provenance["data"]["held_out_pairs"]) == json.dumps(
        sorted(own.held_out([f"photo{i:02d}" for i in range(8)], 0.2)))
    # route and restore held-out scratches through the same calls the nodes use, the bank found by name
    generator = torch.Generator().manual_seed(77)
    photos = torch.cat([smooth_photo(generator) for _ in range(3)])
    scratched = scratches_and_dust(photos, generator)
    loaded = pipeline.load_bank("my-bank", [bank.parent])
    routes = pipeline.estimate(loaded, scratched)
    assert [r.best[0] for r in routes] == ["scratches"] * 3
    restored, compositions = pipeline.restore(scratched, embedded_backbone, loaded)
    assert restored.shape == scratched.shape and torch.isfinite(restored).all()
    assert all("scratches" in c.weights for c in compositions)


def test_bank_add_keeps_the_other_kinds_examples_with_their_own_loras(tmp_path, embedded_backbone, encoder_dim):
    """Scratched photos look much like clean ones: placed on its examples alone, the new embedding takes clean
    photos too; with clean and built-in examples drawn on the same photos as negatives it leaves them."""
    from uir_lora.lab.router.fit import add_embedding, synthetic_negatives
    from uir_lora.lab.testing.banks import make_random_bank

    generator = torch.Generator().manual_seed(5)
    photos = [smooth_photo(generator, 96) for _ in range(4)]
    examples = [scratches_and_dust(photo, generator) for photo in photos]
    others = torch.cat([smooth_photo(generator, 96) for _ in range(4)])  # clean photos not seen by bank add
    taken = {}
    for use_negatives in (False, True):
        bank = make_random_bank(tmp_path / str(use_negatives), embedded_backbone, ("noise", "clean", "scratches"),
                                dim=encoder_dim)
        negatives = synthetic_negatives(photos, read_manifest(bank).names, per_photo=2) if use_negatives else []
        _, report = add_embedding(bank, "scratches", examples, negatives=negatives)
        assert report["routed_to_new"] == len(examples)
        loaded = open_bank(bank)
        taken[use_negatives] = sum(r.best[0] == "scratches" for r in pipeline.estimate(loaded, others))
        assert report["negatives"] == len(negatives) and report["negatives_taken"] == 0 or not use_negatives
    assert taken == {False: 4, True: 0}, taken


def _along(base: torch.Tensor, direction: torch.Tensor, mean: float, spread: float, count: int,
           generator: torch.Generator) -> torch.Tensor:
    """``count`` standardised features base + t * direction (t ~ N(mean, spread)) plus a little noise all round."""
    t = mean + spread * torch.randn(count, 1, generator=generator)
    noise = 0.1 * torch.randn(count, len(base), generator=generator) / len(base) ** 0.5
    return base + t * direction + noise


def test_route_margin_keeps_examples_of_the_other_kinds_from_the_new_kind(tmp_path, embedded_backbone, encoder_dim):
    """A new kind placed next to an existing one (clean) takes many of its examples; the margin calibrated on
    some of them keeps fresh ones (other draws) with their own LoRA at about the calibrated rate, through the
    router, while examples of the new kind still go to it."""
    from uir_lora.bank.manifest import write_manifest
    from uir_lora.lab.router import fit
    from uir_lora.lab.testing.banks import make_random_bank
    from uir_lora.router.router import Router

    bank = make_random_bank(tmp_path, embedded_backbone, ("noise", "clean", "scratches"), dim=encoder_dim)
    manifest = read_manifest(bank)
    table = torch.nn.functional.normalize(torch.tensor([e.embedding for e in manifest.loras]), dim=-1)
    clean = table[1]
    generator = torch.Generator().manual_seed(123)  # not the bank's seed: its rows must not repeat here
    away = torch.randn(encoder_dim, generator=generator)
    away = torch.nn.functional.normalize(away - (away @ clean) * clean, dim=0)
    table[2] = torch.nn.functional.normalize(clean + away, dim=0)  # 45 degrees from clean
    manifest.loras[2].embedding = table[2].tolist()
    calibration = _along(clean, away, 0.0, 0.35, 2000, generator)
    margin = fit.calibrate_route_margin(fit.route_gaps(calibration, table, 2), false_alarm=0.005)
    assert margin > 0
    fresh = _along(clean, away, 0.0, 0.35, 4000, generator)
    scratched = _along(clean, away, 1.5, 0.1, 400, generator)
    taken = {}
    for stored in (0.0, margin):
        manifest.loras[2].route_margin = stored
        write_manifest(manifest, bank)
        router = Router(read_manifest(bank))
        taken[stored] = float((router.feature_scores(fresh).similarities.argmax(-1) == 2).float().mean())
        kept = float((router.feature_scores(scratched).similarities.argmax(-1) == 2).float().mean())
        assert kept >= 0.9, (stored, kept)
    assert taken[0.0] > 0.1 and taken[margin] <= 0.01, taken


def test_route_margin_is_checked_and_written_only_when_set(random_bank):
    from uir_lora.bank.manifest import parse_manifest, write_manifest
    from uir_lora.errors import BankError

    root = random_bank.root
    text = (root / "manifest.json").read_text()
    assert "route_margin" not in text
    manifest = read_manifest(root)
    assert all(entry.route_margin == 0 for entry in manifest.loras)
    write_manifest(manifest, root)
    assert (root / "manifest.json").read_text() == text  # banks without a margin keep their manifests
    manifest.loras[0].route_margin = 0.125
    write_manifest(manifest, root)
    assert read_manifest(root).loras[0].route_margin == 0.125
    for bad in (-0.1, 3.0, "0.1", True):
        data = json.loads((root / "manifest.json").read_text())
        data["loras"][0]["route_margin"] = bad
        with pytest.raises(BankError, match="route_margin"):
            parse_manifest(data)


def test_carried_damage_adds_a_pairs_difference_to_other_pictures():
    generator = torch.Generator().manual_seed(6)
    clean = smooth_photo(generator, 40) * 0.5
    marks = torch.zeros(1, 3, 40, 40)
    marks[..., 10] = 0.3  # one bright column: its mirror image is column 29
    pair = own.PhotoPair("p", clean + marks, clean)
    grey = torch.full((1, 3, 50, 90), 0.4)
    carried = own.carried_damage([pair], [grey], per_photo=8, seed=1)
    assert len(carried) == 8 and all(x.shape == grey.shape for x in carried)
    for example in carried:
        added = example - grey
        columns = set(torch.nonzero(added[0, 0].abs().amax(0) > 1e-6).flatten().tolist())
        assert columns in ({10, 50}, {29, 69}), columns  # tiled across the wider picture, maybe flipped
        assert torch.allclose(added.amax(), torch.tensor(0.3))
    assert own.carried_damage([], [grey]) == [] and own.carried_damage([pair], [grey], per_photo=0) == []
