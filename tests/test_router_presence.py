"""Presence heads on the frozen router encoder (lab/router/presence.py) and the logit router they make."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from uir_lora import pipeline
from uir_lora.bank.manifest import UNSET_BIAS, placeholder_embedding, read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.degrade import degrade
from uir_lora.errors import BankError, InputError
from uir_lora.lab.router import fit, presence
from uir_lora.lab.testing.banks import make_random_bank
from uir_lora.router.router import Router
from uir_lora.router.trained import with_constant

CLASSES = ("noise", "haze", "clean")


def _file_hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.safetensors")}


def _scenes(count: int, size: int = 260) -> list[np.ndarray]:
    """Smooth random colour fields with some edges: clean 'photos' a test can make."""
    rng = np.random.default_rng(3)
    out = []
    for _ in range(count):
        coarse = rng.uniform(0, 1, (6, 6, 3))
        image = torch.nn.functional.interpolate(torch.tensor(coarse).permute(2, 0, 1)[None], size=(size, size),
                                                mode="bicubic")[0].permute(1, 2, 0).numpy()
        image[size // 3: size // 2, :] += 0.3  # a bar: edges for the blur and noise statistics
        out.append((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return out


def test_fit_presence_learns_each_kind_and_keeps_both_of_a_mixture():
    gen = torch.Generator().manual_seed(0)
    n, dim = 600, 12
    targets = (torch.rand(n, 2, generator=gen) < 0.35).float()
    z = torch.randn(n, dim, generator=gen) * 0.5
    z[:, 0] += 2.5 * targets[:, 0]
    z[:, 1] += 2.5 * targets[:, 1]
    rows = presence.fit_presence(z, targets, weight_decay=1e-4)
    assert rows.shape == (2, dim + 1)
    both = torch.zeros(1, dim)
    both[0, :2] = 2.5
    p = torch.sigmoid(with_constant(both.double()) @ rows.T)[0]
    assert (p > 0.9).all()  # a mixture keeps both kinds: the weights need not sum to one
    none = torch.sigmoid(with_constant(torch.zeros(1, dim, dtype=torch.float64)) @ rows.T)[0]
    assert (none < 0.1).all()
    strong = presence.fit_presence(z, targets, weight_decay=1.0)
    assert strong[:, :-1].norm() < rows[:, :-1].norm() / 3  # the weight decay regularises


def _logit_bank(root, backbone, encoder_dim, rows: dict[str, list[float]], confidence_full=0.5):
    bank = make_random_bank(root, backbone, names=tuple(rows), dim=encoder_dim, conditioning={"sigma": 25 / 255})
    manifest = read_manifest(bank)
    for entry in manifest.loras:
        entry.embedding = rows[entry.name]
    manifest.router.similarity, manifest.router.normalisation = "logit", "sigmoid"
    manifest.router.temperature, manifest.router.confidence_full = 1.0, confidence_full
    write_manifest(manifest, bank)
    return bank


def test_a_logit_router_gives_presence_probabilities(tmp_path, embedded_backbone, encoder_dim, photo):
    biases = {"noise": 2.0, "haze": 1.0, "clean": -3.0}
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim,
                       {name: [0.0] * encoder_dim + [bias] for name, bias in biases.items()})
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    assert routing.similarities == pytest.approx(biases)  # s_o = [z, 1]·B
    assert routing.weights == pytest.approx({"noise": float(torch.sigmoid(torch.tensor(2.0))),
                                             "haze": float(torch.sigmoid(torch.tensor(1.0)))})
    assert routing.confidence == 1.0 and not routing.unknown


def test_an_unsure_logit_router_scales_the_strength_and_says_so(tmp_path, embedded_backbone, encoder_dim, photo):
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim,
                       {"noise": [0.0] * encoder_dim + [-2.0], "haze": [0.0] * encoder_dim + [-4.0],
                        "clean": [0.0] * encoder_dim + [3.0]})
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    expected = float(torch.sigmoid(torch.tensor(-2.0))) / 0.5
    assert routing.confidence == pytest.approx(expected)
    assert any("unsure of any damage" in note for note in routing.notes)


def test_below_the_confidence_floor_the_image_is_returned_unchanged(tmp_path, embedded_backbone, encoder_dim,
                                                                     photo):
    rows = {"noise": [0.0] * encoder_dim + [-2.0], "clean": [0.0] * encoder_dim + [3.0]}  # noise presence 0.12
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim, rows)
    noise = float(torch.sigmoid(torch.tensor(-2.0)))
    manifest = read_manifest(bank)
    manifest.router.confidence_floor = 0.05  # between the floor and confidence_full: a ramp from 0 to 1
    write_manifest(manifest, bank)
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    assert routing.confidence == pytest.approx((noise - 0.05) / (0.5 - 0.05))
    restored, _ = pipeline.restore(photo, embedded_backbone, open_bank(bank))
    assert not torch.equal(restored, photo), "above the floor the restore changes the image"

    manifest.router.confidence_floor = 0.2
    write_manifest(manifest, bank)
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    assert routing.confidence == 0.0 and any("the image is returned unchanged" in n for n in routing.notes)
    ticks = []
    with pytest.MonkeyPatch.context() as patch:  # no pass is made for an image returned as it came
        patch.setattr("uir_lora.sampler.restore.restore_one", lambda *args: pytest.fail("the backbone ran"))
        unchanged, _ = pipeline.restore(photo, embedded_backbone, open_bank(bank), progress=lambda *t: ticks.append(t))
    assert torch.equal(unchanged, photo) and ticks and ticks[-1][0] == ticks[-1][1], "progress still reaches the end"


def test_per_region_restores_follow_the_strongest_damage_of_any_region(tmp_path, embedded_backbone, encoder_dim,
                                                                         photo):
    rows = {"noise": [0.0] * encoder_dim + [-2.0], "clean": [0.0] * encoder_dim + [3.0]}  # noise 0.12 everywhere
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim, rows)
    noise = float(torch.sigmoid(torch.tensor(-2.0)))
    manifest = read_manifest(bank)
    manifest.router.confidence_floor = 0.05
    write_manifest(manifest, bank)
    plain, _ = pipeline.restore(photo, embedded_backbone, open_bank(bank), spatial=True, window=64)
    manifest.router.confidence_full = None  # no do-no-harm rule: full strength
    manifest.router.confidence_floor = None
    write_manifest(manifest, bank)
    full, (summary,) = pipeline.restore(photo, embedded_backbone, open_bank(bank), spatial=True, window=64)
    assert summary.confidence == 1.0 and not torch.equal(full, photo)
    expected = (noise - 0.05) / (0.5 - 0.05)
    assert torch.allclose(plain, (photo + expected * (full - photo)).clamp(0, 1), atol=1e-5), \
        "the per-region restore is blended towards the input by the ramp's strength"

    manifest.router.confidence_full, manifest.router.confidence_floor = 0.5, 0.2
    write_manifest(manifest, bank)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("uir_lora.sampler.spatial._tile_step", lambda *args: pytest.fail("the backbone ran"))
        unchanged, (summary,) = pipeline.restore(photo, embedded_backbone, open_bank(bank), spatial=True, window=64)
    assert torch.equal(unchanged, photo) and summary.confidence == 0.0
    assert any("unsure of any damage in any region (strongest: noise 0.12): the image is returned unchanged" in note
               for note in summary.notes)
    manual, _ = pipeline.restore(photo, embedded_backbone, open_bank(bank), spatial=True, window=64,
                                 manual={"noise": 1.0}, mode="override")
    assert not torch.equal(manual, photo), "manual weights are never scaled"


def test_a_weak_second_kind_is_left_out_unless_the_first_hides_it(tmp_path, embedded_backbone, encoder_dim, photo):
    biases = {"jpeg": 2.0, "noise": 1.5, "haze": -1.0, "clean": -3.0}
    rows = {name: [0.0] * encoder_dim + [bias] for name, bias in biases.items()}
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim, rows)
    manifest = read_manifest(bank)
    manifest.router.top_k, manifest.router.follower_floor, manifest.router.masking_kinds = 3, 0.5, ["noise"]
    write_manifest(manifest, bank)
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    presence = {name: float(torch.sigmoid(torch.tensor(bias))) for name, bias in biases.items()}
    assert routing.weights == pytest.approx({name: presence[name] for name in ("jpeg", "noise", "haze")}), \
        "the router's answer stays a presence per kind"
    composition = pipeline.compose(open_bank(bank), routing)
    assert composition.weights == pytest.approx({"jpeg": presence["jpeg"], "noise": presence["noise"]})
    assert any(note.startswith("haze (0.27) left out: beside jpeg") for note in composition.notes)
    assert [n for n in pipeline.restore_notes(open_bank(bank), routing) if "left out" in n] and \
        "left out" not in routing.table(), "the estimator's table adds what the restore leaves out"
    assert pipeline.compose(open_bank(bank), routing, {"haze": 0.3}, "override").weights["haze"] == 0.3
    assert "haze" in pipeline.compose(open_bank(bank), routing, {"haze": 0.3}, "manual").weights

    manifest.loras[manifest.names.index("noise")].embedding = [0.0] * encoder_dim + [3.0]  # noise first now
    write_manifest(manifest, bank)
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    composition = pipeline.compose(open_bank(bank), routing)
    assert set(composition.weights) == {"noise", "jpeg", "haze"}, "beside noise, which hides haze, a weak haze stays"
    assert not any("left out" in note for note in composition.notes)


def test_the_follower_and_reread_floors_are_checked_and_written_only_when_set(tmp_path, embedded_backbone,
                                                                              encoder_dim):
    bank = make_random_bank(tmp_path, embedded_backbone, dim=encoder_dim)
    assert not {"follower_floor", "confidence_floor", "reread_floor", "full_stage_from"} & set(
        json.loads((bank / "manifest.json").read_text())["router"])
    for field_name, value, message in (("follower_floor", 1.5, "follower_floor must be null or a number in"),
                                       ("follower_floor", True, "follower_floor must be null or a number in"),
                                       ("reread_floor", 0, "reread_floor must be null or a number in"),
                                       ("reread_floor", "½", "reread_floor must be null or a number in"),
                                       ("full_stage_from", 0.9, "full_stage_from must be null or a number from"),
                                       ("masking_kinds", "noise", "masking_kinds must be a list of LoRA names"),
                                       ("confidence_floor", 0.5, "confidence_floor must be null or a number from"),
                                       ("confidence_floor", -0.1, "confidence_floor must be null or a number from")):
        data = json.loads((bank / "manifest.json").read_text())
        data["router"][field_name] = value
        (bank / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(BankError, match=message):
            read_manifest(bank)
        del data["router"][field_name]
        (bank / "manifest.json").write_text(json.dumps(data))
    manifest = read_manifest(bank)
    manifest.router.follower_floor, manifest.router.masking_kinds, manifest.router.reread_floor = 0.5, ["noise"], 0.5
    write_manifest(manifest, bank)
    assert read_manifest(bank).router.follower_floor == 0.5 and read_manifest(bank).router.masking_kinds == ["noise"]
    assert read_manifest(bank).router.reread_floor == 0.5
    data = json.loads((bank / "manifest.json").read_text())
    for value in (0.4, 1.5, True):  # below the reread floor, above 1, not a number
        data["router"]["full_stage_from"] = value
        (bank / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(BankError, match="full_stage_from must be null or a number from router.reread_floor"):
            read_manifest(bank)
    manifest.router.full_stage_from = 0.6
    write_manifest(manifest, bank)
    assert read_manifest(bank).router.full_stage_from == 0.6


def test_a_logit_manifest_needs_the_bias_in_each_embedding(tmp_path, embedded_backbone, encoder_dim):
    bank = make_random_bank(tmp_path, embedded_backbone, dim=encoder_dim)
    data = json.loads((bank / "manifest.json").read_text())
    data["router"]["similarity"] = "logit"  # embeddings still of the feature's length: one short
    (bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match="embedding"):
        read_manifest(bank)
    data["router"]["similarity"] = "dot"
    (bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match="similarity must be one of"):
        read_manifest(bank)


def test_fit_bank_presence_writes_the_router_and_leaves_lora_files(tmp_path, embedded_backbone, encoder_dim,
                                                                  monkeypatch):
    monkeypatch.setattr(presence, "_views", lambda *args, **kwargs: [_scenes(4)])
    monkeypatch.setenv("UIR_LORA_CACHE", str(tmp_path / "cache"))
    bank = make_random_bank(tmp_path, embedded_backbone, names=("noise", "haze", "clean", "scratches", "poisson_noise"),
                            dim=encoder_dim)
    before = read_manifest(bank)
    before.router.follower_floor, before.router.masking_kinds = 0.5, ["noise"]
    before.router.confidence_full, before.router.confidence_floor = 0.5, 0.2
    write_manifest(before, bank)
    files = _file_hashes(bank)
    config = presence.PresenceData(examples=60, whole_share=0.0, mixture_share=0.2, clean_share=0.3)
    report = presence.fit_bank_presence(bank, config, seeds=[0], weight_decay=1e-3, log=lambda _: None)
    manifest = read_manifest(bank)
    assert manifest.router.similarity == "logit" and manifest.router.normalisation == "sigmoid"
    assert manifest.router.unknown_subspace is None and manifest.router.confidence_full == 0.5
    assert all(len(entry.embedding) == encoder_dim + 1 for entry in manifest.loras)
    scratches = manifest.lora("scratches")  # not a kind the synthesis knows: routes nothing until `bank add`
    assert scratches.embedding[-1] == UNSET_BIAS and not any(scratches.embedding[:-1])
    assert report["unset"] == ["scratches"] and report["held_out"]["examples"] == 6
    assert manifest.router.calibration["examples"] == 60
    assert {name: digest for name, digest in _file_hashes(bank).items() if name != presence.EXAMPLES_FILE} == files
    assert manifest.router.examples == presence.EXAMPLES_FILE, "a sample of the examples is kept for `bank add`"
    assert manifest.router.alternatives == [["noise", "poisson_noise"]], "the two noise heads share one place"
    assert manifest.router.follower_floor == 0.5 and manifest.router.masking_kinds == ["noise"], "a refit keeps them"
    assert manifest.router.confidence_floor == 0.2, "a refit keeps it"
    kept = presence.read_examples(bank, manifest.router.examples, encoder_dim)
    assert kept.shape == (60, encoder_dim) and kept.abs().mean() > 0.1  # standardised features, not zeros
    assert list((tmp_path / "cache").glob("presence-*.safetensors")), "features are cached"
    gen = torch.Generator().manual_seed(1)
    noisy = degrade(torch.from_numpy(_scenes(1)[0]).permute(2, 0, 1)[None].float() / 255, "noise",
                    generator=gen, severity=1.0)
    (routing,) = pipeline.estimate(open_bank(bank), noisy)
    assert routing.best[0] in ("noise", "poisson_noise")  # either head of the same damage
    assert len({"noise", "poisson_noise"} & set(routing.weights)) == 1, "they share one place"


def test_bank_add_places_a_new_kind_against_the_examples_kept_in_the_bank(tmp_path, embedded_backbone,
                                                                          encoder_dim, monkeypatch):
    from uir_lora.lab.testing.scratches import scratches_and_dust

    monkeypatch.setattr(presence, "_views", lambda *args, **kwargs: [_scenes(4)])
    monkeypatch.setenv("UIR_LORA_CACHE", str(tmp_path / "cache"))
    bank = make_random_bank(tmp_path, embedded_backbone, names=("noise", "haze", "clean", "scratches"),
                            dim=encoder_dim)
    config = presence.PresenceData(examples=60, whole_share=0.0, mixture_share=0.2, clean_share=0.3)
    presence.fit_bank_presence(bank, config, seeds=[0], weight_decay=1e-3, log=lambda _: None)
    before = read_manifest(bank)
    gen = torch.Generator().manual_seed(4)
    photos = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 for a in _scenes(6, size=240)]
    examples = [scratches_and_dust(p, gen) for p in photos[:4] for _ in range(2)]
    _, report = fit.add_embedding(bank, "scratches", examples)  # no negatives drawn: the bank's own examples
    after = read_manifest(bank)
    after = read_manifest(bank)
    assert report["negatives"] == 60, "the 60 examples kept by fit_bank_presence"
    assert [e for e in after.loras if e.name != "scratches"] == [e for e in before.loras if e.name != "scratches"]
    router = Router(after)
    new = after.names.index("scratches")
    # presence, not rank: the toy heads are so sure of "clean" that it can outrank a kind they never saw
    held_out = torch.cat([router.scores(scratches_and_dust(p, gen)).similarities for p in photos[4:]])
    clean = torch.cat([router.scores(p).similarities for p in photos])
    assert (held_out[:, new] > 0).all() and (clean[:, new] < 0).all()
    assert all(new in row.topk(after.router.top_k).indices for row in held_out)


def test_a_bank_refuses_router_examples_outside_its_folder_or_of_another_encoder(tmp_path, embedded_backbone,
                                                                                encoder_dim):
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim,
                       {name: [0.0] * encoder_dim + [0.0] for name in CLASSES})
    data = json.loads((bank / "manifest.json").read_text())
    data["router"]["examples"] = "../elsewhere.safetensors"
    (bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match="router.examples"):
        read_manifest(bank)
    presence.write_examples(bank, torch.randn(5, encoder_dim - 1), torch.zeros(5, 3), list(CLASSES))
    with pytest.raises(BankError, match=f"finite features \\[n, {encoder_dim}\\]"):
        presence.read_examples(bank, presence.EXAMPLES_FILE, encoder_dim)
    with pytest.raises(BankError, match="cannot read"):
        presence.read_examples(bank, "missing.safetensors", encoder_dim)
    (bank / "truncated.safetensors").write_bytes((bank / presence.EXAMPLES_FILE).read_bytes()[:100])
    with pytest.raises(BankError, match="cannot read"):
        presence.read_examples(bank, "truncated.safetensors", encoder_dim)
    outside = tmp_path / "outside.safetensors"
    (bank / presence.EXAMPLES_FILE).rename(outside)
    (bank / presence.EXAMPLES_FILE).symlink_to(outside)
    with pytest.raises(BankError, match="outside the bank folder"):
        presence.read_examples(bank, presence.EXAMPLES_FILE, encoder_dim)


def test_fit_bank_presence_needs_a_clean_lora(tmp_path, embedded_backbone, encoder_dim):
    bank = make_random_bank(tmp_path, embedded_backbone, dim=encoder_dim)
    with pytest.raises(BankError, match="'clean' LoRA"):
        presence.fit_bank_presence(bank, presence.PresenceData(examples=20), [0], 1e-3)


def test_bank_add_places_a_presence_row_and_changes_nothing_else(tmp_path, embedded_backbone, encoder_dim, photo):
    gen = torch.Generator().manual_seed(2)
    rows = {name: (torch.randn(encoder_dim + 1, generator=gen) * 0.01).tolist() for name in CLASSES}
    rows["snow"] = [0.0] * encoder_dim + [UNSET_BIAS]
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim, rows)
    before = {e["name"]: json.dumps(e) for e in json.loads((bank / "manifest.json").read_text())["loras"]}
    files = _file_hashes(bank)
    examples = [degrade(photo, "snow", generator=gen, severity=0.9) for _ in range(6)]
    negatives = fit.synthetic_negatives([photo, photo.flip(-1)], list(CLASSES), per_photo=6)
    _, report = fit.add_embedding(bank, "snow", examples, negatives=negatives)
    after = json.loads((bank / "manifest.json").read_text())
    assert {e["name"]: json.dumps(e) for e in after["loras"] if e["name"] != "snow"} == \
        {name: text for name, text in before.items() if name != "snow"}
    assert _file_hashes(bank) == files
    assert report["routed_to_new"] >= 5 and report["negatives"] == 12
    (routing,) = pipeline.estimate(open_bank(bank), degrade(photo, "snow", generator=gen, severity=0.9))
    assert routing.best[0] == "snow"
    with pytest.raises(InputError, match="--clean-images"):
        fit.add_embedding(bank, "snow", examples)


def test_router_similarity_default_keeps_cosine_banks(random_bank):
    assert read_manifest(random_bank.root).router.similarity == "cosine"
    assert not Router(random_bank.manifest).logit


def test_a_new_lora_in_a_logit_bank_gets_a_placeholder_that_routes_nothing(tmp_path, embedded_backbone, encoder_dim,
                                                                          photo):
    rows = {name: [0.0] * encoder_dim + [bias] for name, bias in (("noise", 1.0), ("clean", -1.0))}
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim, rows)
    manifest = read_manifest(bank)
    placeholder = placeholder_embedding(manifest.encoder, manifest.router)
    assert len(placeholder) == encoder_dim + 1 and placeholder[-1] == UNSET_BIAS
    manifest.loras.append(replace(manifest.loras[0], name="scratches", file="noise.safetensors",
                                  embedding=placeholder))
    write_manifest(manifest, bank)
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    assert routing.weights.get("scratches", 0.0) < 1e-6
    assert placeholder_embedding(manifest.encoder, replace(manifest.router, similarity="cosine")) == \
        [0.0] * encoder_dim


def test_bank_add_draws_few_negatives_when_the_bank_keeps_its_examples(tmp_path, embedded_backbone, encoder_dim,
                                                                      photo):
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim,
                       {name: [0.0] * encoder_dim + [0.0] for name in CLASSES})
    asked = []

    def references():
        asked.append(True)
        return [photo]

    drawn = fit.bank_add_negatives(bank, [photo], None, 0, references)
    assert len(drawn) == fit.DRAWN_NEGATIVES + fit.REFERENCE_NEGATIVES and asked  # nothing kept: draw many
    manifest = read_manifest(bank)
    manifest.router.examples = presence.write_examples(bank, torch.randn(8, encoder_dim), torch.zeros(8, 3),
                                                       list(CLASSES))
    write_manifest(manifest, bank)
    asked.clear()
    assert len(fit.bank_add_negatives(bank, [photo], None, 0, references)) == fit.DRAWN_NEGATIVES_KEPT
    assert not asked, "the kept examples stand for the reference photos' negatives"
    assert len(fit.bank_add_negatives(bank, [photo], 7, 0, references)) == 7  # an explicit count is kept


def test_alternatives_share_one_top_k_place_at_their_combined_presence(tmp_path, embedded_backbone, encoder_dim,
                                                                      photo):
    biases = {"noise": 0.0, "poisson_noise": -0.5, "haze": -1.0, "clean": -3.0}
    rows = {name: [0.0] * encoder_dim + [bias] for name, bias in biases.items()}
    bank = _logit_bank(tmp_path, embedded_backbone, encoder_dim, rows)
    (alone,) = pipeline.estimate(open_bank(bank), photo)
    assert set(alone.weights) == {"noise", "poisson_noise"}  # two noise heads take both places
    manifest = read_manifest(bank)
    manifest.router.alternatives = [["noise", "poisson_noise"]]
    write_manifest(manifest, bank)
    (routing,) = pipeline.estimate(open_bank(bank), photo)
    sigmoid = {name: float(torch.sigmoid(torch.tensor(bias))) for name, bias in biases.items()}
    assert routing.weights == pytest.approx({"noise": sigmoid["noise"] + sigmoid["poisson_noise"],
                                             "haze": sigmoid["haze"]})  # the second place goes to haze
    assert routing.similarities == pytest.approx(biases), "each head's own s_o is still reported"
    for normalisation in ("sigmoid", "softmax", "sum"):  # a K as large as the bank still keeps one of the two
        (every,) = pipeline.estimate(open_bank(bank), photo, top_k=4, normalisation=normalisation)
        assert "poisson_noise" not in every.weights and "noise" in every.weights, normalisation
    assert json.loads((bank / "manifest.json").read_text())["router"]["alternatives"] == [["noise", "poisson_noise"]]


def test_merged_alternatives_stay_below_one_and_keep_each_normalisation_consistent():
    from uir_lora.router.router import merge_alternatives, normalise_top_k

    sims = torch.tensor([[3.0, 4.0, -1.0, 0.5]])
    merged = merge_alternatives(sims, [[0, 1]], 1.0, "sigmoid")
    assert merged[0, 0] < -1e30 and 0 < torch.sigmoid(merged[0, 1]) < 1  # the weaker member is out
    assert merged[0, 2:].tolist() == sims[0, 2:].tolist()
    soft = merge_alternatives(sims, [[0, 1]], 0.5, "softmax")
    whole = normalise_top_k(sims, 4, 0.5, "softmax")
    assert normalise_top_k(soft, 3, 0.5, "softmax")[0, 1] == pytest.approx(float(whole[0, :2].sum()))
    plain = merge_alternatives(torch.tensor([[0.2, -0.1, 0.3]]), [[0, 1]], 1.0, "sum")
    assert plain[0, 0] == pytest.approx(0.2)  # negative similarities count as zero, as in the sum normalisation


@pytest.mark.parametrize("groups, message", [
    ([["noise"]], "groups of two or more"),
    ("noise,poisson_noise", "groups of two or more"),
    ([["noise", "Noise!"]], "is not a LoRA name"),
    ([["noise", "haze"], ["haze", "clean"]], "names 'haze' twice"),
])
def test_a_manifest_refuses_malformed_alternatives(tmp_path, embedded_backbone, encoder_dim, groups, message):
    bank = make_random_bank(tmp_path, embedded_backbone, dim=encoder_dim)
    data = json.loads((bank / "manifest.json").read_text())
    data["router"]["alternatives"] = groups
    (bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match=message):
        read_manifest(bank)
