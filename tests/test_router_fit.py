"""Router fitting: embeddings, unknown threshold, train-router, bank add, the unknown fallback."""

from __future__ import annotations

import json

import pytest
import torch

from uir_lora import pipeline
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.degrade import degrade
from uir_lora.images import save_image
from uir_lora.lab.cli import main
from uir_lora.lab.router import fit
from uir_lora.router.router import RoutingResult


def _blobs(seed: int = 0, per_class: int = 40, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian classes; the centres are returned for reference."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, dim, generator=gen)
    labels = torch.arange(3).repeat_interleave(per_class)
    return centres[labels] + 1.2 * torch.randn(len(labels), dim, generator=gen), labels, centres


def test_fit_beats_centroids_and_keeps_frozen_rows_bit_identical():
    z, labels, _ = _blobs()
    init = fit.centroids(z, labels, 3)
    fitted, temperature = fit.fit_embeddings(z, labels, init, steps=150)
    assert fit.top1_accuracy(z, labels, fitted) >= fit.top1_accuracy(z, labels, init)
    assert 0.005 <= temperature <= 1.0
    partial, _ = fit.fit_embeddings(z, labels, init, trainable=[1], steps=20)
    assert torch.equal(partial[0], init[0]) and torch.equal(partial[2], init[2])
    assert not torch.equal(partial[1], init[1])


def test_fit_does_not_depend_on_the_number_of_cpu_threads():
    """float32 rounding differs with the thread count, and over a whole fit that is enough to move the
    router's held-out top-1, so the fit runs in float64: the same data give the same router on any machine."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 8, (3000,), generator=gen)
    z = torch.randn(8, 256, generator=gen)[labels] + 2.5 * torch.randn(3000, 256, generator=gen)
    init = fit.centroids(z, labels, 8)
    threads = torch.get_num_threads()
    try:
        fits = []
        for count in (1, 2):
            torch.set_num_threads(count)
            fits.append(fit.fit_embeddings(z, labels, init, steps=300, lr=0.01, temperature=0.1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(fits[0][0], fits[1][0]) and fits[0][1] == fits[1][1]
    assert fits[0][0].dtype == torch.float32  # what the manifest stores


def test_unknown_threshold_gives_the_asked_false_alarm_rate():
    z, labels, _ = _blobs(seed=1, per_class=200)
    embeddings = fit.centroids(z, labels, 3)
    threshold = fit.calibrate_unknown(z, embeddings, false_alarm=0.05)
    rate = (fit.similarities(z, embeddings).max(dim=-1).values < threshold).float().mean()
    assert 0.03 <= float(rate) <= 0.06
    far_away = -embeddings.sum(dim=0, keepdim=True)  # points away from every class look unknown
    assert fit.similarities(far_away, embeddings).max() < threshold
    with pytest.raises(ValueError, match="false_alarm"):
        fit.calibrate_unknown(z, embeddings, false_alarm=0.7)


def _examples(photo: torch.Tensor, kind: str, count: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [degrade(photo, kind, generator=gen, severity=0.8) for _ in range(count)]


def test_bank_add_changes_only_its_own_entry(random_bank, photo, tmp_path, capsys):
    root = random_bank.root
    before = json.loads((root / "manifest.json").read_text())
    files = {p.name: p.read_bytes() for p in root.glob("*.safetensors")}
    folder = tmp_path / "examples"
    for i, image in enumerate(_examples(photo, "haze")):
        save_image(image, folder / f"haze_{i}.png")
    assert main(["bank", "add", "--bank", str(root), "--name", "haze", "--images", str(folder),
                 "--no-reference-photos"]) == 0
    assert "from 3 images" in capsys.readouterr().out
    after = json.loads((root / "manifest.json").read_text())
    for old, new in zip(before["loras"], after["loras"]):
        if old["name"] != "haze":
            assert json.dumps(old) == json.dumps(new)  # byte-identical entries
    haze_old = next(e for e in before["loras"] if e["name"] == "haze")
    haze_new = next(e for e in after["loras"] if e["name"] == "haze")
    assert haze_new["embedding"] != haze_old["embedding"]
    assert {k: v for k, v in before.items() if k != "loras"} == {k: v for k, v in after.items() if k != "loras"}
    assert files == {p.name: p.read_bytes() for p in root.glob("*.safetensors")}, "LoRA files must be untouched"
    (routed,) = pipeline.estimate(open_bank(root), _examples(photo, "haze", 1)[0])
    assert routed.best[0] == "haze"


def test_bank_add_teaches_the_residual_test_its_examples(random_bank, photo, tmp_path):
    """A kind added later was not in train-router's subspace: bank add must not leave it 'unknown'."""
    from uir_lora.bank.manifest import decode_matrix, encode_matrix, write_manifest
    from uir_lora.router.router import subspace_residual

    root = random_bank.root
    manifest = read_manifest(root)
    dim = manifest.encoder.dim
    basis = torch.linalg.qr(torch.randn(dim, 4, generator=torch.Generator().manual_seed(0)))[0].T.contiguous()
    manifest.router.unknown_subspace, manifest.router.unknown_residual = encode_matrix(basis), 0.5
    write_manifest(manifest, root)
    examples = _examples(photo, "haze")
    router = pipeline.router_for(open_bank(root))
    z = (torch.cat([router.encoder.features(image) for image in examples]) - router.mean) / router.std
    assert (subspace_residual(z, basis) > 0.5).all()  # before bank add: every example looks unknown
    _, report = fit.add_embedding(root, "haze", examples)
    grown = decode_matrix(read_manifest(root).router.unknown_subspace, dim, "test")
    assert report["subspace_rank"] == len(grown) == 4 + len(examples)
    torch.testing.assert_close(grown[:4], basis)  # the fitted directions stay
    torch.testing.assert_close(grown @ grown.T, torch.eye(len(grown)), atol=1e-4, rtol=0)
    assert (subspace_residual(z, grown) < 1e-3).all()
    (routed,) = pipeline.estimate(open_bank(root), examples[0])
    assert not routed.unknown or "residual" not in routed.unknown_reason


def test_bank_add_names_the_fix_for_a_missing_lora(random_bank, photo, tmp_path, capsys):
    save_image(photo, tmp_path / "x.png")
    code = main(["bank", "add", "--bank", str(random_bank.root), "--name", "snow", "--images", str(tmp_path / "x.png")])
    assert code == 2 and "uir-lora train-lora" in capsys.readouterr().err


def test_train_router_fits_the_whole_bank_and_leaves_lora_files(random_bank, photo, tmp_path, monkeypatch):
    """A tiny run: three 'photos' (flips of one), one crop each; checks the manifest it writes."""
    from uir_lora.lab.router import data

    paths = []
    big = torch.nn.functional.interpolate(photo, size=(240, 320), mode="bilinear")
    for i, image in enumerate((big, big.flip(-1), big.flip(-2))):
        paths.append(save_image(image, tmp_path / f"p{i}.png"))
    monkeypatch.setattr(data, "photo_split", lambda: (paths[:2], paths[2:]))
    monkeypatch.setattr(data, "PHOTO_WIDTHS", (320,))
    root = random_bank.root
    files = {p.name: p.read_bytes() for p in root.glob("*.safetensors")}
    config = fit.RouterFitConfig(per_photo=1, per_render=0, val_per_photo=1, mixtures=2, outliers=2, steps=20,
                                 photo_draws=1)
    fit.train_router(root, config, cache_dir=tmp_path / "cache", log=lambda _: None)
    manifest = read_manifest(root)
    # 2 training photos x 3 classes: one crop and one whole-photo draw each
    assert manifest.router.unknown_threshold is not None and manifest.router.calibration["train_examples"] == 12
    assert manifest.router.unknown_residual is not None and manifest.router.calibration["subspace_rank"] > 0
    assert manifest.router.calibration["mixture_examples"] == 2 and manifest.router.calibration["outlier_examples"] == 2
    assert manifest.router.unknown_margin is not None
    assert abs(torch.tensor(manifest.router.unknown_embedding).norm() - 1) < 1e-4
    assert manifest.encoder.dim == len(manifest.encoder.feature_std) == len(manifest.loras[0].embedding)
    assert all(abs(torch.tensor(e.embedding).norm() - 1) < 1e-4 for e in manifest.loras)
    assert files == {p.name: p.read_bytes() for p in root.glob("*.safetensors")}
    assert list((tmp_path / "cache").glob("*.safetensors")), "features are cached"


def test_unknown_routing_scales_the_composition_and_says_so(random_bank):
    routing = RoutingResult(similarities={"noise": 0.1, "haze": 0.05, "jpeg": -0.2},
                            weights={"noise": 0.8, "haze": 0.2}, top_k=2, temperature=0.05,
                            normalisation="softmax", unknown_threshold=0.3)
    assert routing.unknown and "unknown" in routing.table()
    composition = pipeline.compose(random_bank, routing)
    strength = random_bank.manifest.router.unknown_strength
    assert composition.weights == pytest.approx({"noise": 0.8 * strength, "haze": 0.2 * strength})
    assert any("unknown degradation" in note for note in composition.notes)
    known = RoutingResult(similarities=routing.similarities, weights=routing.weights, top_k=2, temperature=0.05,
                          normalisation="softmax", unknown_threshold=0.0)
    assert pipeline.compose(random_bank, known).weights == pytest.approx(routing.weights)


def test_soft_targets_learn_a_blend_of_two_classes():
    """Mixture examples with 1/2 : 1/2 targets put both classes on top with comparable weight."""
    z, labels, centres = _blobs(seed=3, per_class=60)
    gen = torch.Generator().manual_seed(4)
    mixed = (centres[0] + centres[1]) / 2 + 0.6 * torch.randn(60, z.shape[1], generator=gen)
    targets = torch.cat([torch.nn.functional.one_hot(labels, 3).float(), torch.tensor([[0.5, 0.5, 0.0]]).repeat(60, 1)])
    init = fit.centroids(z, labels, 3)
    table, temperature = fit.fit_embeddings(torch.cat([z, mixed]), targets, init, steps=200)
    weights = torch.softmax(fit.similarities(mixed, table) / temperature, dim=-1).mean(dim=0)
    assert weights[2] < 0.1 and 0.25 < weights[0] < 0.75 and 0.25 < weights[1] < 0.75
    only_singles, hard_t = fit.fit_embeddings(z, labels, init, steps=200)
    hard = torch.softmax(fit.similarities(mixed, only_singles) / hard_t, dim=-1)
    blended = torch.softmax(fit.similarities(mixed, table) / temperature, dim=-1)
    assert (blended.max(dim=-1).values.mean() < hard.max(dim=-1).values.mean())


def test_the_unknown_embedding_flags_an_outlier_and_says_why():
    sims = {"noise": 0.40, "haze": 0.10}
    known = RoutingResult(similarities=sims, weights={"noise": 1.0}, top_k=1, temperature=0.05,
                          normalisation="softmax", unknown_threshold=0.0, unknown_similarity=0.30,
                          unknown_margin=0.05)
    assert not known.unknown
    outlier = RoutingResult(similarities=sims, weights={"noise": 1.0}, top_k=1, temperature=0.05,
                            normalisation="softmax", unknown_threshold=0.0, unknown_similarity=0.50,
                            unknown_margin=0.05)
    assert outlier.unknown and "closer to the unknown class" in outlier.table()


def test_estimate_command_prints_unknown(random_bank, photo, tmp_path, capsys):
    manifest = read_manifest(random_bank.root)
    manifest.router.unknown_threshold = 1.0  # nothing can reach a cosine of 1: always unknown
    write_manifest(manifest, random_bank.root)
    save_image(photo, tmp_path / "in.png")
    assert main(["estimate", str(tmp_path / "in.png"), "--bank", random_bank.root.name,
                 "--bank-dir", str(random_bank.root.parent)]) == 0
    assert "unknown degradation" in capsys.readouterr().out


def test_manifest_rejects_a_bad_unknown_strength(random_bank):
    data = json.loads((random_bank.root / "manifest.json").read_text())
    data["router"]["unknown_strength"] = 1.5
    (random_bank.root / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown_strength"):
        read_manifest(random_bank.root)


def test_a_new_kind_is_added_with_train_lora_then_bank_add(random_bank, photo, tmp_path, capsys):
    """The two commands on the tiny embedded model: train-lora writes the LoRA, bank add its embedding."""
    gen = torch.Generator().manual_seed(0)
    crops = (torch.nn.functional.interpolate(torch.rand(6, 3, 6, 6, generator=gen), size=40, mode="bilinear")
             * 255).round().to(torch.uint8)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    torch.save({"crops": crops, "info": {"crops": len(crops), "test": True}}, data_dir / "train_crops_s0.pt")
    torch.save(crops[:2, :, :32, :32].float() / 255, data_dir / "validation.pt")
    root = random_bank.root
    before = {e["name"]: json.dumps(e) for e in json.loads((root / "manifest.json").read_text())["loras"]}
    assert main(["train-lora", "--degradation", "low_light", "--bank", str(root), "--steps", "2", "--batch", "2",
                 "--crop", "32", "--rank", "2", "--data-dir", str(data_dir)]) == 0
    folder = tmp_path / "low_light"
    for i, image in enumerate(_examples(photo, "low_light")):
        save_image(image, folder / f"{i}.png")
    assert main(["bank", "add", "--bank", str(root), "--name", "low_light", "--images", str(folder),
                 "--no-reference-photos"]) == 0
    after = {e["name"]: e for e in json.loads((root / "manifest.json").read_text())["loras"]}
    assert {n: json.dumps(after[n]) for n in before} == before
    assert any(after["low_light"]["embedding"]) and (root / "low_light.safetensors").is_file()
    (routed,) = pipeline.estimate(open_bank(root), _examples(photo, "low_light", 1)[0])
    assert routed.best[0] == "low_light"


def test_unknown_kinds_and_confusion_picture(photo, tmp_path):
    import numpy as np
    from PIL import Image

    from uir_lora.lab.router import evaluate

    gen = torch.Generator().manual_seed(0)
    for kind in evaluate.UNKNOWN_KINDS:
        out = evaluate.unknown_degrade(photo, kind, generator=gen)
        assert out.shape == photo.shape and 0 <= out.min() and out.max() <= 1
        assert (out - photo).abs().mean() > 0.01, kind
    with pytest.raises(ValueError, match="mosaic"):
        evaluate.unknown_degrade(photo, "fog", generator=gen)
    labels, predicted = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 2])
    matrix = evaluate.confusion(labels, predicted, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    path = evaluate.confusion_png(matrix, ["a", "b", "c"], "test", tmp_path / "c.png")
    picture = np.asarray(Image.open(path))
    assert picture.shape[2] == 3 and (picture < 250).any()


def test_large_photo_scale_needs_the_implementation_that_sizes_drops_by_the_frame(tmp_path):
    from uir_lora.lab.router import evaluate

    with pytest.raises(ValueError, match="frame_side needs uir_lora.degrade"):
        evaluate.whole_photos(tmp_path, "degrade_alt", frame_side=evaluate.LARGE_FRAME)


def test_mixture_targets_follow_which_lora_restores_the_mixture_better(random_bank, photo):
    noisy = degrade(photo, ["noise", "jpeg"], generator=torch.Generator().manual_seed(0), severity=0.8)
    pairs = [("noise", "jpeg"), ("jpeg", "noise")]
    clean, degraded = torch.cat([photo, photo]), torch.cat([noisy, noisy])
    soft = fit.restoration_shares(random_bank.root, scale_db=1.0)(clean, degraded, pairs)
    assert soft.shape == (2, 2) and torch.allclose(soft.sum(dim=-1), torch.ones(2, dtype=soft.dtype))
    torch.testing.assert_close(soft[0], soft[1].flip(0))  # the same image: the order of the pair does not matter
    sharp = fit.restoration_shares(random_bank.root, scale_db=1e-3)(clean, degraded, pairs)
    assert set(sharp.round().flatten().tolist()) <= {0.0, 1.0}  # a tiny scale picks the better LoRA outright
    assert torch.equal(sharp.argmax(dim=-1), soft.argmax(dim=-1))


def test_whole_photo_scores_per_photo_on_the_other_scenes(random_bank, photo, monkeypatch, tmp_path):
    from uir_lora.lab.router import evaluate

    # Two "photos": the astronaut crop as it is and mirrored, standing in for the held-out scene photos.
    scenes = [("a", photo), ("b", photo.flip(-1))]
    monkeypatch.setattr("uir_lora.lab.evaluate.datasets.scene_photos", lambda: scenes)
    names, photos, key = evaluate.held_out_photos(scenes=True)
    assert names == ["a", "b"] and key == {"photos": ["a", "b"]} and photos[1] is scenes[1][1]
    result = evaluate.whole_photos(random_bank.root, "degrade", draws=2, cache_dir=tmp_path, scenes=True)
    kinds = len(random_bank.manifest.names)
    assert result["images"] == kinds * 2 * 2 and set(result["per_photo"]) == {"a", "b"}
    assert sum(result["per_photo"].values()) / 2 == pytest.approx(result["top1"])
    assert sum(map(sum, result["confusion"])) == result["images"]
    # Photo "a" comes first, so it gets the same draws alone: its score must be that run's top-1.
    monkeypatch.setattr("uir_lora.lab.evaluate.datasets.scene_photos", lambda: scenes[:1])
    alone = evaluate.whole_photos(random_bank.root, "degrade", draws=2, cache_dir=tmp_path / "alone", scenes=True)
    assert result["per_photo"]["a"] == pytest.approx(alone["top1"])
