"""The trained degradation-aware encoder: tiny training, loading from a bank, s_o = d·B, calibrated weights,
do-no-harm strength, bank add in closed form, safe loading."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from uir_lora import pipeline
from uir_lora.bank.manifest import TRAINED_POOLED_DIM, TRAINED_POOLED_DIM_BEFORE_EXTREMES, read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.degrade import degrade
from uir_lora.errors import BankError, InputError, UIRError
from uir_lora.lab.router import fit
from uir_lora.lab.testing.banks import make_random_bank
from uir_lora.router.encoder import DegradationEncoder
from uir_lora.router.router import Router, normalise_top_k
from uir_lora.router.trained import (
    ENCODER_FILE,
    FEATURE_DIM,
    POOLED_DIM,
    STATISTICS_DIM,
    TrainedEncoder,
    channel_extremes,
    install_encoder,
    lda_row,
    load_encoder,
)

KINDS = ("noise", "low_light")


def scene(seed: int, size: int = 96) -> np.ndarray:
    """A smooth synthetic scene (bicubic upsampling of a 4x4 colour grid), uint8 HxWx3."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=gen), size=size, mode="bicubic",
                                           align_corners=False)
    return (base.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def as_image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """An encoder trained for 60 steps on 8 synthetic scenes, noise and low light only: small enough for a test."""
    from uir_lora.lab.router.train_encoder import EncoderTrainConfig, train_encoder

    out = tmp_path_factory.mktemp("encoder") / "tiny.safetensors"
    config = EncoderTrainConfig(steps=60, batch=8, crop=64, workers=0, lr=1e-3, log_every=100, clean_share=0.5,
                                mixture_share=0.0)
    record = train_encoder(config, out, log=lambda *_: None, groups=[[scene(s) for s in range(8)]], kinds=KINDS)
    assert record["steps"] == 60 and json.loads(out.with_name(out.name + ".json").read_text())["steps"] == 60
    return out


def file_hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name != "manifest.json"}


@pytest.fixture()
def trained_bank(tmp_path, embedded_backbone, tiny_encoder):
    """A bank of random LoRAs (noise, low_light, clean, haze) with the tiny encoder installed."""
    root = make_random_bank(tmp_path, embedded_backbone, ("noise", "low_light", "clean", "haze"), dim=8,
                            conditioning={"sigma": 25 / 255})
    loras = {name: digest for name, digest in file_hashes(root).items()}
    report = install_encoder(root, tiny_encoder)
    assert report["unset"] == ["haze"] and report["kinds"] == list(KINDS)
    after = file_hashes(root)
    assert {name: after[name] for name in loras} == loras  # the LoRA files are untouched
    return root


def test_tiny_training_tells_a_clean_scene_from_damaged_ones(tiny_encoder):
    net, _ = load_encoder(tiny_encoder)
    clean = as_image(scene(99))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        presence = {name: torch.sigmoid(net(image)[0])[0] for name, image in (
            ("clean", clean), ("noise", degrade(clean, "noise", generator=gen, severity=0.7)),
            ("low_light", degrade(clean, "low_light", generator=gen, severity=0.7)))}
    names = net.class_names()
    assert presence["clean"][names.index("clean")] > 0.5
    assert presence["clean"][: len(KINDS)].max() < 0.5  # low damage presence on an undamaged scene
    for kind in KINDS:
        assert presence[kind][names.index(kind)] > 0.5 and presence[kind][names.index("clean")] < 0.5


def test_training_continues_from_an_encoder_file_and_refuses_other_kinds(tiny_encoder, tmp_path):
    from uir_lora.errors import InputError
    from uir_lora.lab.router.train_encoder import EncoderTrainConfig, train_encoder

    groups = [[scene(s) for s in range(4)]]
    config = EncoderTrainConfig(steps=1, batch=4, crop=64, workers=0, lr=1e-12, lr_min=1e-12, log_every=100,
                                init=str(tiny_encoder))
    out = tmp_path / "continued.safetensors"
    record = train_encoder(config, out, log=lambda *_: None, groups=groups, kinds=KINDS)
    assert record["init_sha256"] == hashlib.sha256(tiny_encoder.read_bytes()).hexdigest()
    start, _ = load_encoder(tiny_encoder)
    continued, _ = load_encoder(out)
    # one step at a vanishing learning rate: the heads are the file's, not fresh ones
    assert torch.allclose(continued.presence.weight, start.presence.weight, atol=1e-6)
    with pytest.raises(InputError, match="kinds"):
        train_encoder(config, tmp_path / "other.safetensors", log=lambda *_: None, groups=groups,
                      kinds=("noise", "haze"))


def test_the_camera_finish_adds_faint_noise_and_keeps_the_labels():
    from uir_lora.lab.router.train_encoder import DamageDataset, EncoderTrainConfig

    groups = [[scene(s) for s in range(4)]]
    plain = DamageDataset(groups, EncoderTrainConfig(crop=64, clean_share=1.0), 16, KINDS)
    finished = DamageDataset(groups, EncoderTrainConfig(crop=64, clean_share=1.0, finish_share=1.0), 16, KINDS)
    changed = 0
    for index in range(16):
        (image, presence, _, _), (other, other_presence, _, _) = plain[index], finished[index]
        assert torch.equal(presence, other_presence) and presence[-1] == 1  # still "clean"
        difference = (other - image).abs()
        changed += bool(difference.max() > 0)
        assert difference.mean() < 4 / 255  # faint: a camera's, not the noise kind's (5/255 and up)
    assert 8 <= changed < 16  # the finish itself lands on 70 % of the examples it is drawn for


@pytest.mark.parametrize(("share", "redrawn", "every_one"), [
    ("wide_share", "motion_blur", False),  # the wide profile is an option of the standard synthesis: half the draws
    ("precipitation_share", "raindrop", True),  # the third synthesis replaces either implementation
    ("camera_share", "motion_blur", True),  # so does the third synthesis of blur
])
def test_a_share_redraws_its_kinds_from_another_model_and_leaves_noise_alone(share, redrawn, every_one):
    from uir_lora.lab.router.train_encoder import DamageDataset, EncoderTrainConfig

    groups = [[scene(s) for s in range(4)]]

    def examples(kind: str, value: float) -> list:
        config = EncoderTrainConfig(crop=64, clean_share=0.0, mixture_share=0.0, **{share: value})
        return [DamageDataset(groups, config, 8, (kind,))[index] for index in range(8)]

    for kind in ("noise", redrawn):
        plain, other = examples(kind, 0.0), examples(kind, 1.0)
        assert all(torch.equal(a[1], b[1]) and a[1][0] == 1 for a, b in zip(plain, other))  # labels unchanged
        differ = [not torch.equal(a[0], b[0]) for a, b in zip(plain, other)]
        # noise keeps its models (the wide one's faint end is the camera finish's; the third draws no noise)
        assert any(differ) == (kind == redrawn)
        if kind == redrawn and every_one:
            assert all(differ)


@pytest.mark.parametrize(("flag", "value"), [("--finish-share", "-0.1"), ("--finish-share", "1.5"),
                                             ("--wide-share", "2"),
                                             ("--precipitation-share", "1.1"), ("--camera-share", "-1"),
                                             ("--short-shake-share", "1.2"), ("--anchor-weight", "-0.5")])
def test_a_bad_share_is_refused_before_any_work(tmp_path, flag, value, capsys):
    from uir_lora.lab.cli import main

    code = main(["encoder", "train", "--out", str(tmp_path / "e.safetensors"), flag, value])
    assert code != 0 and f"{flag} must be in [0, 1]" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_short_shake_share_blurs_motion_examples_faintly_at_the_lowest_severity():
    from uir_lora.lab.router.train_encoder import DamageDataset, EncoderTrainConfig

    def textured(seed: int) -> np.ndarray:  # detail a few px across, so a blur's change grows with its length
        grid = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(seed))
        image = torch.nn.functional.interpolate(grid, size=128, mode="bicubic", align_corners=False).clamp(0, 1)
        return (image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)

    groups = [[textured(s) for s in range(4)]]

    def examples(share: float, clean_share: float = 0.0) -> list:
        config = EncoderTrainConfig(crop=96, clean_share=clean_share, mixture_share=0.0, short_shake_share=share)
        return [DamageDataset(groups, config, 16, ("motion_blur", "noise"))[index] for index in range(16)]

    plain, short, clean = examples(0.0), examples(1.0), examples(0.0, clean_share=1.0)  # the crop is drawn first
    motion = [index for index, (_, presence, _, _) in enumerate(plain) if presence[0] == 1]
    assert len(motion) >= 4 and all(torch.equal(plain[i][1], short[i][1]) for i in range(16))  # the kind's labels
    for index in set(range(16)) - set(motion):  # noise is drawn as before
        assert torch.equal(short[index][0], plain[index][0])

    def change(examples: list) -> float:
        return float(torch.stack([(examples[i][0] - clean[i][0]).abs().mean() for i in motion]).mean())

    assert all(short[i][2][0] == 0.0 and short[i][3][0] == 1 for i in motion)  # the lowest severity, trained on
    assert 0 < change(short) < 0.6 * change(plain)  # shorter than the standard syntheses' shakes


def test_a_frozen_trunk_trains_the_neck_and_heads_only(tiny_encoder, tmp_path):
    from uir_lora.errors import InputError
    from uir_lora.lab.router.train_encoder import EncoderTrainConfig, train_encoder

    groups = [[scene(s) for s in range(4)]]
    config = EncoderTrainConfig(steps=2, batch=4, crop=64, workers=0, lr=1e-2, log_every=100, init=str(tiny_encoder),
                                freeze_trunk=True)
    out = tmp_path / "refit.safetensors"
    train_encoder(config, out, log=lambda *_: None, groups=groups, kinds=KINDS)
    start, refit = (load_encoder(path)[0].state_dict() for path in (tiny_encoder, out))
    changed = {key.split(".")[0] for key in start if not torch.equal(start[key], refit[key])}
    assert changed == {"neck", "presence", "severity"}  # the trunk's weights and batch-norm statistics are kept
    with pytest.raises(InputError, match="--init"):
        train_encoder(EncoderTrainConfig(steps=1, batch=4, crop=64, workers=0, freeze_trunk=True),
                      tmp_path / "fresh.safetensors", log=lambda *_: None, groups=groups, kinds=KINDS)


def test_an_anchored_refit_moves_the_presences_less_than_a_free_one(tiny_encoder, tmp_path):
    from uir_lora.errors import InputError
    from uir_lora.lab.router.train_encoder import EncoderTrainConfig, train_encoder

    groups = [[scene(s) for s in range(4)]]
    images = torch.cat([as_image(scene(s, size=64)) for s in range(10, 16)])

    def refit(weight: float, **options) -> torch.nn.Module:
        # no severity loss and no weight decay: the presence targets alone move the neck and heads
        config = EncoderTrainConfig(steps=4, batch=4, crop=64, workers=0, lr=3e-2, lr_min=3e-2, log_every=100,
                                    weight_decay=0.0, severity_weight=0.0, init=str(tiny_encoder),
                                    anchor_weight=weight, **{"freeze_trunk": True, **options})
        out = tmp_path / f"anchored-{weight}-{len(options.get('anchor_free', []))}.safetensors"
        train_encoder(config, out, log=lambda *_: None, groups=groups, kinds=KINDS)
        return load_encoder(out)[0]

    start = load_encoder(tiny_encoder)[0]

    def drift(net: torch.nn.Module, column: int | None = None) -> float:
        with torch.no_grad():
            change = torch.sigmoid(net(images)[0]) - torch.sigmoid(start(images)[0])
        return float(change.abs().mean() if column is None else change[:, column].abs().mean())

    # at weight 1 the targets are the init's own presences, where the loss has no gradient: nothing moves
    assert drift(refit(1.0)) < 1e-6 < 1e-4 < drift(refit(0.0))
    # a kind left out of the anchor follows its labels (the scenes are clean: its presence is taught towards 0)
    assert drift(refit(1.0, anchor_free=[KINDS[0]]), column=0) > 1e-4
    with pytest.raises(InputError, match="--freeze-trunk"):
        refit(0.5, freeze_trunk=False)
    with pytest.raises(InputError, match="not among the kinds trained"):
        refit(1.0, anchor_free=["smudge"])
    with pytest.raises(InputError, match="give --anchor-weight too"):
        refit(0.0, anchor_free=[KINDS[0]])


@pytest.mark.parametrize(("args", "message"), [
    (["--mixture-share", "-0.1"], "--mixture-share must be in"),
    (["--clean-share", "0.5", "--mixture-share", "0.6"], "beside --clean-share 0.5"),
])
def test_a_mixture_share_that_leaves_no_room_is_refused(tmp_path, args, message, capsys):
    from uir_lora.lab.cli import main

    code = main(["encoder", "train", "--out", str(tmp_path / "e.safetensors"), *args])
    assert code != 0 and message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_mixture_share_sets_how_many_examples_carry_several_kinds():
    from uir_lora.lab.router.train_encoder import DamageDataset, EncoderTrainConfig

    groups = [[scene(s) for s in range(4)]]

    def kinds_per_example(share: float) -> list[int]:
        dataset = DamageDataset(groups, EncoderTrainConfig(crop=64, clean_share=0.0, mixture_share=share), 64, KINDS)
        return [len(dataset.draw_kinds(torch.Generator().manual_seed(index))) for index in range(200)]

    assert set(kinds_per_example(0.0)) == {1}
    several = sum(count >= 2 for count in kinds_per_example(0.9))
    assert 150 <= several <= 195  # about 90 % of 200, the rest single kinds


def test_two_encoders_average_parameter_by_parameter(tiny_encoder, tmp_path):
    from uir_lora.errors import InputError
    from uir_lora.lab.router.train_encoder import EncoderTrainConfig, average_encoders, train_encoder

    groups = [[scene(s) for s in range(4)]]
    other = tmp_path / "other.safetensors"
    train_encoder(EncoderTrainConfig(steps=3, batch=4, crop=64, workers=0, lr=1e-2, log_every=100,
                                     init=str(tiny_encoder)), other, log=lambda *_: None, groups=groups, kinds=KINDS)
    out = tmp_path / "average.safetensors"
    record = average_encoders(tiny_encoder, other, 0.25, out, groups=groups, crop=64)
    first, second, mean = (load_encoder(path)[0] for path in (tiny_encoder, other, out))
    weights = [net.presence.weight for net in (first, second, mean)]
    assert not torch.equal(weights[0], weights[1])
    assert torch.allclose(weights[2], 0.75 * weights[0] + 0.25 * weights[1], atol=1e-6)
    assert record["average"]["weight_of_second"] == 0.25 and set(load_encoder(out)[1]) >= {"lda.clean_mean"}
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        average_encoders(tiny_encoder, other, 1.5, tmp_path / "bad.safetensors", groups=groups, crop=64)
    assert not (tmp_path / "bad.safetensors").exists()


def test_the_encoder_loads_from_the_bank_and_s_o_is_d_dot_b(trained_bank, tiny_encoder):
    manifest = read_manifest(trained_bank)
    assert manifest.encoder.trained and manifest.encoder.file == ENCODER_FILE
    assert manifest.encoder.sha256 == hashlib.sha256((trained_bank / ENCODER_FILE).read_bytes()).hexdigest()
    router = Router(manifest, bank_dir=trained_bank)
    assert isinstance(router.encoder, TrainedEncoder) and router.encoder.dim == FEATURE_DIM + 1
    image = as_image(scene(7, 64))
    d = router.encoder.features(image)
    assert torch.allclose(d[:, -1], torch.ones(1))  # the constant that carries the head's bias
    b = torch.tensor([entry.embedding for entry in manifest.loras])
    similarities = router.similarities(image)
    assert torch.allclose(similarities, d @ b.T, atol=1e-5)
    net, _ = load_encoder(tiny_encoder)
    with torch.no_grad():
        logits = net(image)[0][0]  # one crop: s_o is exactly the presence head's logit (batch norms folded)
    for name in ("noise", "low_light", "clean"):
        column = manifest.names.index(name)
        assert similarities[0, column] == pytest.approx(float(logits[net.class_names().index(name)]), abs=1e-3)


def test_install_keeps_the_banks_presence_policies_and_drops_the_old_examples(tmp_path, embedded_backbone,
                                                                              tiny_encoder):
    root = make_random_bank(tmp_path, embedded_backbone, ("noise", "low_light", "clean"), dim=8,
                            conditioning={"sigma": 25 / 255})
    manifest = read_manifest(root)
    manifest.router.confidence_full, manifest.router.confidence_floor, manifest.router.follower_floor = 0.5, 0.2, 0.5
    manifest.router.masking_kinds, manifest.router.alternatives = ["noise"], [["noise", "low_light"]]
    manifest.router.whole_view_kinds, manifest.router.whole_view_side = ["low_light"], 96
    manifest.router.doubt_temperature = 0.5
    manifest.router.exposure_kinds, manifest.router.exposure_stops = ["low_light"], [0.2, 0.6]
    manifest.router.examples = "router_examples.safetensors"
    (root / manifest.router.examples).write_bytes(b"features of the frozen encoder")
    write_manifest(manifest, root)
    install_encoder(root, tiny_encoder)
    router = read_manifest(root).router
    assert (router.confidence_floor, router.follower_floor) == (0.2, 0.5)
    assert router.masking_kinds == ["noise"] and router.alternatives == [["noise", "low_light"]]
    assert (router.whole_view_kinds, router.whole_view_side, router.doubt_temperature) == (["low_light"], 96, 0.5)
    assert (router.exposure_kinds, router.exposure_stops) == (["low_light"], [0.2, 0.6])
    assert router.examples == "" and not (root / "router_examples.safetensors").exists()
    open_bank(root)  # the bank still loads


def test_weights_are_presence_probabilities(trained_bank):
    bank = open_bank(trained_bank)
    gen = torch.Generator().manual_seed(3)
    images = torch.cat([as_image(scene(s, 80)) for s in (20, 21)])
    images = torch.cat([images, degrade(images, "noise", generator=gen, severity=0.8)])
    for result in pipeline.estimate(bank, images):
        assert result.normalisation == "sigmoid" and len(result.weights) <= result.top_k
        assert all(0.0 <= w <= 1.0 for w in result.weights.values())
        for name, weight in result.weights.items():
            assert weight == pytest.approx(float(torch.sigmoid(torch.tensor(result.similarities[name]))), abs=1e-6)
        assert 0.0 <= result.confidence <= 1.0
    clean, noisy = pipeline.estimate(bank, images)[1], pipeline.estimate(bank, images)[3]
    assert clean.best[0] == "clean" and noisy.best[0] == "noise"


def test_sigmoid_norm_keeps_both_kinds_of_a_mixture():
    logits = torch.tensor([[3.0, 2.0, -4.0]])
    weights = normalise_top_k(logits, 2, 1.0, "sigmoid")
    assert weights[0, 2] == 0 and (weights[0, :2] > 0.85).all()  # not forced to sum to one
    assert normalise_top_k(logits, 2, 1.0, "softmax")[0, :2].sum() == pytest.approx(1.0)


def test_a_doubted_kind_weighs_less_than_its_presence():
    logits = torch.tensor([[1.0, -1.0, -4.0]])
    weights = normalise_top_k(logits, 2, 1.0, "sigmoid", doubt=0.5)
    assert weights[0, 0] == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))))  # above ½: its presence
    assert weights[0, 1] == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0))))  # below ½: sigmoid(s_o / 0.5)
    assert weights[0, 2] == 0
    for normalisation, doubt in (("sigmoid", None), ("softmax", 0.5)):  # off, and only for presences
        assert torch.equal(normalise_top_k(logits, 2, 1.0, normalisation, doubt=doubt),
                           normalise_top_k(logits, 2, 1.0, normalisation))


def _set_biases(root, biases: dict[str, float], confidence_full: float | None = 0.5) -> None:
    """B rows that ignore the image: s_o = bias, so the presence of each LoRA is known exactly."""
    manifest = read_manifest(root)
    for entry in manifest.loras:
        entry.embedding = [0.0] * FEATURE_DIM + [biases[entry.name]]
    manifest.router.confidence_full = confidence_full
    write_manifest(manifest, root)


def test_the_banks_doubt_temperature_lowers_the_doubted_weight_and_not_s_o(trained_bank, photo):
    _set_biases(trained_bank, {"clean": -3.0, "noise": 1.0, "low_light": -1.0, "haze": -5.0})
    manifest = read_manifest(trained_bank)
    manifest.router.doubt_temperature = 0.5
    write_manifest(manifest, trained_bank)
    (routing,) = pipeline.estimate(open_bank(trained_bank), photo)
    assert routing.similarities["low_light"] == pytest.approx(-1.0)
    assert routing.weights["noise"] == pytest.approx(float(torch.sigmoid(torch.tensor(1.0))))
    assert routing.weights["low_light"] == pytest.approx(float(torch.sigmoid(torch.tensor(-2.0))))


@pytest.mark.parametrize("value", [0, 1.5, -0.5, "half", True])
def test_a_bad_doubt_temperature_is_refused(trained_bank, value):
    data = json.loads((trained_bank / "manifest.json").read_text())
    data["router"]["doubt_temperature"] = value
    (trained_bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match=r"router.doubt_temperature must be null or a number in \(0, 1\]"):
        read_manifest(trained_bank)


def test_an_unsure_router_leaves_the_photo_close_to_its_input(trained_bank, embedded_backbone, photo):
    _set_biases(trained_bank, {"clean": 3.0, "noise": -3.0, "low_light": -4.0, "haze": -5.0})
    bank = open_bank(trained_bank)
    (routing,) = pipeline.estimate(bank, photo)
    expected = float(torch.sigmoid(torch.tensor(-3.0))) / 0.5
    assert routing.confidence == pytest.approx(expected, abs=1e-6) and not routing.unknown
    assert any("strength x" in note for note in routing.notes)
    assert "note: unsure of any damage" in routing.table()  # the estimator's table (CLI and node)
    out, (composition,) = pipeline.restore(photo, embedded_backbone, bank, mode="override")
    assert any("strength x" in note for note in composition.notes)
    assert composition.confidence == pytest.approx(expected, abs=1e-6)
    manual, (chosen,) = pipeline.restore(photo, embedded_backbone, bank, manual={"noise": 1.0}, mode="override")
    assert chosen.confidence == 1.0  # weights the user chose are applied as asked
    _set_biases(trained_bank, {"clean": 3.0, "noise": -3.0, "low_light": -4.0, "haze": -5.0}, None)
    full, _ = pipeline.restore(photo, embedded_backbone, open_bank(trained_bank), mode="override")
    assert torch.allclose(out, (photo + expected * (full - photo)).clamp(0, 1), atol=1e-5)
    assert (out - photo).abs().mean() < (full - photo).abs().mean() * 0.2


def test_the_unknown_warning_comes_from_presence(trained_bank, photo):
    _set_biases(trained_bank, {"clean": -2.0, "noise": -1.0, "low_light": -1.5, "haze": -3.0})
    (routing,) = pipeline.estimate(open_bank(trained_bank), photo)
    assert routing.unknown and "no kind is confident" in routing.unknown_reason
    _set_biases(trained_bank, {"clean": -2.0, "noise": 1.0, "low_light": -1.5, "haze": -3.0})
    (routing,) = pipeline.estimate(open_bank(trained_bank), photo)
    assert not routing.unknown and routing.confidence == 1.0 and not routing.notes


def test_bank_add_sets_b_in_closed_form_and_changes_nothing_else(trained_bank):
    before_files = file_hashes(trained_bank)
    before = {e["name"]: json.dumps(e) for e in json.loads((trained_bank / "manifest.json").read_text())["loras"]}
    encoder_before = json.loads((trained_bank / "manifest.json").read_text())["encoder"]
    gen = torch.Generator().manual_seed(5)
    examples = [degrade(as_image(scene(s, 80)), "haze", generator=gen, severity=0.9) for s in range(30, 36)]
    _, report = fit.add_embedding(trained_bank, "haze", examples)
    after = json.loads((trained_bank / "manifest.json").read_text())
    assert file_hashes(trained_bank) == before_files  # LoRA files and the encoder: byte-identical
    assert after["encoder"] == encoder_before
    assert {e["name"]: json.dumps(e) for e in after["loras"] if e["name"] != "haze"} == \
        {name: text for name, text in before.items() if name != "haze"}
    router = Router.of_folder(trained_bank)
    d = torch.cat([router.encoder.features(image) for image in examples])
    expected = lda_row(d[:, :-1], router.encoder.lda["lda.clean_mean"], router.encoder.lda["lda.precision"])
    haze = next(e for e in after["loras"] if e["name"] == "haze")
    assert torch.allclose(torch.tensor(haze["embedding"]), expected, atol=1e-4)
    assert report["routed_to_new"] >= 5 and not report["refined"]
    fresh = degrade(as_image(scene(40, 80)), "haze", generator=gen, severity=0.9)
    (routing,) = pipeline.estimate(open_bank(trained_bank), fresh)
    assert routing.best[0] == "haze"


def test_bank_add_with_negatives_fits_a_presence_row_and_a_route_margin(trained_bank):
    before_files = file_hashes(trained_bank)
    before = {e["name"]: json.dumps(e) for e in json.loads((trained_bank / "manifest.json").read_text())["loras"]}
    gen = torch.Generator().manual_seed(6)
    examples = [degrade(as_image(scene(s, 80)), "haze", generator=gen, severity=0.9) for s in range(30, 36)]
    negatives = [(kind, degrade(as_image(scene(s, 80)), kind, generator=gen, severity=0.6))
                 for s in range(50, 56) for kind in KINDS] + [("clean", as_image(scene(s, 80))) for s in range(56, 62)]
    _, report = fit.add_embedding(trained_bank, "haze", examples, negatives=negatives)
    after = json.loads((trained_bank / "manifest.json").read_text())
    assert file_hashes(trained_bank) == before_files
    assert {e["name"]: json.dumps(e) for e in after["loras"] if e["name"] != "haze"} == \
        {name: text for name, text in before.items() if name != "haze"}
    haze = next(e for e in after["loras"] if e["name"] == "haze")
    # fitted on the pooled statistics under d and the channel peaks, not the closed form on d
    assert haze["embedding_of"] == "pooled" and len(haze["embedding"]) == STATISTICS_DIM + 1
    assert report["refined"] and report["negatives"] == len(negatives) and report["route_margin"] >= 0
    assert report["routed_to_new"] >= 5 and report["negatives_taken"] <= 1
    router = Router.of_folder(trained_bank)
    assert router.unseen_index == [router.names.index("haze")]  # the tiny encoder learned noise and low light only
    raw = torch.cat([router.encoder.features(image, pooled=True) for image in examples])
    row = torch.tensor(haze["embedding"])
    statistics = torch.cat([raw[:, FEATURE_DIM + 1 :], torch.ones(len(raw), 1)], dim=1)
    expected = statistics @ row - haze.get("route_margin", 0.0)
    sims = router.feature_scores(raw).similarities
    assert torch.allclose(sims[:, router.names.index("haze")], expected, atol=1e-4)
    # the router reads the pooled statistics itself: the same scores from the images
    assert torch.allclose(torch.cat([router.similarities(image) for image in examples]), sims, atol=1e-4)
    # clean reads at most the absence of a kind its head never saw
    clean = router.names.index("clean")
    assert (sims[:, clean] <= -sims[:, router.names.index("haze")] + 1e-6).all()
    read = router._feature_scores(raw).similarities[:, clean]
    held = [image for image, (before, after) in enumerate(zip(read, sims[:, clean])) if before >= 0 > after]
    notes = [router.route(examples[image])[0].notes for image in range(len(examples))]
    assert held and [image for image, said in enumerate(notes) if any("held at" in note for note in said)] == held
    with pytest.raises(BankError, match="pooled"):  # features without the statistics cannot score the row
        router.feature_scores(raw[:, : FEATURE_DIM + 1])
    # the closed form (no negatives) places the kind on d again
    fit.add_embedding(trained_bank, "haze", examples)
    again = read_manifest(trained_bank).lora("haze")
    assert again.embedding_of == "d" and len(again.embedding) == FEATURE_DIM + 1 and again.route_margin == 0


def test_a_trained_kind_can_be_placed_on_the_pooled_statistics_with_a_given_margin(trained_bank):
    before = {e["name"]: json.dumps(e) for e in json.loads((trained_bank / "manifest.json").read_text())["loras"]}
    gen = torch.Generator().manual_seed(7)
    examples = [degrade(as_image(scene(s, 80)), "noise", generator=gen, severity=0.2) for s in range(30, 36)]
    negatives = [("low_light", degrade(as_image(scene(s, 80)), "low_light", generator=gen, severity=0.6))
                 for s in range(50, 56)] + [("clean", as_image(scene(s, 80))) for s in range(56, 62)]
    _, report = fit.place_pooled_row(trained_bank, "noise", examples, negatives, route_margin=0.25)
    after = json.loads((trained_bank / "manifest.json").read_text())
    assert {e["name"]: json.dumps(e) for e in after["loras"] if e["name"] != "noise"} == \
        {name: text for name, text in before.items() if name != "noise"}
    noise = next(e for e in after["loras"] if e["name"] == "noise")
    assert noise["embedding_of"] == "pooled" and noise["route_margin"] == 0.25
    assert report["routed_to_new"] >= 4 and report["negatives_taken"] <= 1
    router = Router.of_folder(trained_bank)
    assert router.names.index("noise") not in router.unseen_index  # learned: clean is not held below it
    with pytest.raises(BankError, match="no LoRA 'smudge'"):
        fit.place_pooled_row(trained_bank, "smudge", examples, negatives)
    with pytest.raises(InputError, match="no example images"):
        fit.place_pooled_row(trained_bank, "noise", [], negatives)


def test_bank_add_fits_the_row_on_every_crop(trained_bank, monkeypatch):
    from uir_lora.lab.router import presence

    fitted = []
    real = presence.fit_presence

    def spy(z, targets, *args, **kwargs):
        fitted.append((len(z), float(targets.sum())))
        return real(z, targets, *args, **kwargs)

    monkeypatch.setattr(presence, "fit_presence", spy)
    gen = torch.Generator().manual_seed(8)
    examples = [degrade(as_image(scene(s, 300)), "haze", generator=gen, severity=0.9) for s in range(30, 33)]
    negatives = [(kind, degrade(as_image(scene(s, 160)), kind, generator=gen, severity=0.6))
                 for s in range(50, 53) for kind in KINDS] + [("clean", as_image(scene(s, 160))) for s in range(56, 59)]
    fit.add_embedding(trained_bank, "haze", examples, negatives=negatives)
    encoder = Router.of_folder(trained_bank).encoder
    crops = [len(encoder.boxes(*image.shape[-2:])) for image in examples]
    negative_crops = sum(len(encoder.boxes(*image.shape[-2:])) for _, image in negatives)
    assert min(crops) > 1  # a photo larger than a crop is read in several
    # the first fit sees every crop of every example and of every example of the other kinds
    assert fitted[0] == (sum(crops) + negative_crops, sum(crops))


def test_pooled_features_extend_d_from_the_same_pass(trained_bank):
    router = Router.of_folder(trained_bank)
    image = as_image(scene(70, 160))
    plain, extended = router.encoder.features(image), router.encoder.features(image, pooled=True)
    assert extended.shape == (1, FEATURE_DIM + 1 + STATISTICS_DIM)
    assert STATISTICS_DIM == TRAINED_POOLED_DIM  # the manifest's
    assert torch.allclose(extended[:, : FEATURE_DIM + 1], plain, atol=1e-5)
    net, _ = load_encoder(trained_bank / ENCODER_FILE)
    boxes = router.encoder.boxes(*image.shape[-2:])
    size = router.encoder.spec.crop
    crops = torch.cat([image[..., y : y + size, x : x + size] for y, x in boxes])
    with torch.no_grad():
        statistics = net.pooled(crops, extremes=True)
        assert torch.allclose(statistics[:, :POOLED_DIM], net.pooled(crops), atol=1e-6)  # the neck's input first
        assert torch.allclose(extended[0, FEATURE_DIM + 1 :], statistics.mean(0), atol=1e-3)
    # what the features average: each crop's reading
    reads = router.encoder.crop_reads(image, pooled=True)
    assert reads.shape == (len(boxes), 1, FEATURE_DIM + 1 + STATISTICS_DIM)
    assert torch.allclose(reads.mean(0), extended, atol=1e-6)
    clean = router.names.index("clean")  # haze has no row yet (presence ~0): clean as its own head reads it
    assert torch.allclose(router.feature_scores(plain).similarities[0, clean], (plain @ router.embeddings.T)[0, clean])


def test_a_pooled_row_needs_its_length(trained_bank):
    data = json.loads((trained_bank / "manifest.json").read_text())
    entry = next(e for e in data["loras"] if e["name"] == "haze")
    entry.update(embedding_of="pooled", embedding=[0.0] * FEATURE_DIM + [-20.0])  # a d-sized row
    (trained_bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match="embedding"):
        read_manifest(trained_bank)


def test_a_pooled_row_written_before_the_peaks_scores_as_it_did(trained_bank):
    data = json.loads((trained_bank / "manifest.json").read_text())
    entry = next(e for e in data["loras"] if e["name"] == "haze")
    statistics_row = torch.randn(TRAINED_POOLED_DIM_BEFORE_EXTREMES, generator=torch.Generator().manual_seed(3)) * 0.01
    entry.update(embedding_of="pooled", embedding=[*statistics_row.tolist(), -1.5])
    (trained_bank / "manifest.json").write_text(json.dumps(data))
    router = Router.of_folder(trained_bank)
    image = as_image(scene(71, 160))
    raw = router.encoder.features(image, pooled=True)
    haze = router.names.index("haze")
    expected = raw[0, FEATURE_DIM + 1 : FEATURE_DIM + 1 + POOLED_DIM] @ statistics_row - 1.5
    assert torch.allclose(router.feature_scores(raw).similarities[0, haze], expected, atol=1e-4)
    assert len(read_manifest(trained_bank).lora("haze").embedding) == TRAINED_POOLED_DIM + 1


def test_channel_extremes_see_a_mark_that_the_mean_dilutes():
    flat = torch.rand(1, 3, 10_000, generator=torch.Generator().manual_seed(0))
    marked = flat.clone()
    marked[0, 1, :150] = 8.0  # 1.5 % of one channel's positions: a few bright specks
    marked[0, 2, :150] = -7.0  # and of another: dark ones
    before, after = channel_extremes(flat), channel_extremes(marked)
    assert [peak.shape for peak in after] == [(1, 3)] * 4
    assert all(torch.allclose(a[0, 0], b[0, 0]) for a, b in zip(after, before))  # an unmarked channel as it was
    assert after[0][0, 1] > 3 * before[0][0, 1] and after[1][0, 1] > 3 * before[1][0, 1]  # bright: the top end
    assert after[2][0, 2] > 3 * before[2][0, 2] and after[3][0, 2] > 3 * before[3][0, 2]  # dark: the bottom end
    assert after[2][0, 1] < before[2][0, 1] and after[0][0, 2] < before[0][0, 2]  # each mark at its own end only
    assert after[0][0, 1] >= after[1][0, 1] and after[2][0, 2] >= after[3][0, 2]  # the extreme, then the share


def test_a_pooled_row_needs_the_trained_encoder(random_bank):
    frozen = json.loads((random_bank.root / "manifest.json").read_text())
    frozen["loras"][0]["embedding_of"] = "pooled"
    (random_bank.root / "manifest.json").write_text(json.dumps(frozen))
    with pytest.raises(BankError, match="embedding_of"):
        read_manifest(random_bank.root)
    with pytest.raises(UIRError, match="pooled"):
        DegradationEncoder().features(torch.rand(1, 3, 96, 96), pooled=True)


def test_a_manifest_without_an_encoder_file_loads_the_imagenet_encoder(random_bank):
    data = json.loads((random_bank.root / "manifest.json").read_text())
    for key in ("file", "sha256", "base"):
        data["encoder"].pop(key, None)  # a bank routed by the ImageNet encoder names no encoder file
    (random_bank.root / "manifest.json").write_text(json.dumps(data))
    manifest = read_manifest(random_bank.root)
    assert not manifest.encoder.trained
    router = Router(manifest, bank_dir=random_bank.root)
    assert type(router.encoder) is DegradationEncoder
    assert "file" not in router.encoder.spec_key()  # so such a bank's feature caches stay valid


def test_the_encoder_file_is_read_safely(trained_bank, tmp_path):
    target = trained_bank / ENCODER_FILE
    original = target.read_bytes()
    target.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(BankError, match="sha256"):
        Router.of_folder(trained_bank)
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"stem.0.weight": torch.zeros(1)}, pickled)  # a pickle under a safetensors name
    with pytest.raises(BankError, match="safetensors"):
        load_encoder(pickled)
    target.unlink()
    with pytest.raises(BankError, match="missing"):
        Router.of_folder(trained_bank)
    data = json.loads((trained_bank / "manifest.json").read_text())
    data["encoder"]["sha256"] = ""
    (trained_bank / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BankError, match="sha256"):
        read_manifest(trained_bank)


def test_the_cli_restore_prints_the_routing_notes(trained_bank, photo, tmp_path, capsys):
    from uir_lora.images import save_image
    from uir_lora.lab.cli import main

    _set_biases(trained_bank, {"clean": 3.0, "noise": -3.0, "low_light": -4.0, "haze": -5.0})
    save_image(photo, tmp_path / "in.png")
    assert main(["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--bank", trained_bank.name,
                 "--bank-dir", str(trained_bank.parent)]) == 0
    assert "note: unsure of any damage" in capsys.readouterr().out


def test_the_camera_share_takes_clean_examples_through_the_camera_in_focus_and_keeps_them_clean():
    from uir_lora.lab.router.train_encoder import DamageDataset, EncoderTrainConfig

    groups = [[scene(s) for s in range(4)]]

    def examples(share: float) -> list:
        config = EncoderTrainConfig(crop=64, clean_share=1.0, mixture_share=0.0, camera_share=share)
        return [DamageDataset(groups, config, 8, ("motion_blur",))[index] for index in range(8)]

    plain, taken = examples(0.0), examples(1.0)
    for (image, presence, _, _), (other, other_presence, _, _) in zip(plain, taken):
        assert torch.equal(presence, other_presence) and presence[-1] == 1 and presence[0] == 0  # still "clean"
        assert not torch.equal(image, other)
