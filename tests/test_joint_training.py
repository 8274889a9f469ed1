"""Coarse-to-fine execution and the bank trainer with composition in the loop."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from peft import LoraConfig
from PIL import Image

from uir_lora.backbones.registry import FAMILIES
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.compose.composer import Composition, composed
from uir_lora.degrade import KINDS, compatible
from uir_lora.lab.testing.banks import make_random_bank
from uir_lora.lab.train.joint import (
    JointConfig,
    activate,
    all_pairs,
    blended_conditioning,
    case_output,
    degrade_case,
    draw_case,
    main,
    photo_crops,
    train_bank,
)
from uir_lora.pipeline import load_bank
from uir_lora.router.trained import load_encoder
from uir_lora.sampler.multiscale import multiscale, pyramid_levels


@pytest.mark.parametrize(("side", "coarsest", "levels"), [(64, 64, 0), (127, 64, 0), (128, 64, 1), (512, 64, 3),
                                                          (4000, 64, 5)])
def test_pyramid_levels_keep_the_coarsest_side(side: int, coarsest: int, levels: int) -> None:
    assert pyramid_levels(side, side * 2, coarsest) == levels


@pytest.mark.parametrize("shape", [(1, 3, 96, 128), (2, 3, 75, 101)])
def test_multiscale_of_the_identity_gives_the_image_back(shape: tuple[int, ...]) -> None:
    """The Laplacian pyramid is exact: a backbone that changes nothing changes nothing coarse-to-fine."""
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    out = multiscale(lambda x: x, image, pyramid_levels(*shape[-2:], 16))
    assert out.shape == image.shape
    assert float((out - image).abs().max()) < 1e-5


def test_multiscale_takes_low_frequencies_from_the_coarse_run() -> None:
    """A run that brightens only small images changes the output's mean, not its fine detail."""
    image = torch.rand((1, 3, 128, 128), generator=torch.Generator().manual_seed(1)) * 0.5

    def brighten_coarse(x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 if x.shape[-1] <= 32 else x

    out = multiscale(brighten_coarse, image, 2)
    assert abs(float(out.mean() - image.mean()) - 0.2) < 1e-3
    detail = (out - image) - (out - image).mean()
    assert float(detail.abs().mean()) < 0.02


def test_cases_cover_single_kinds_pairs_and_clean() -> None:
    cfg = JointConfig()
    rng = random.Random(0)
    cases = [draw_case(rng, cfg) for _ in range(2000)]
    assert {c for c in cases if len(c) == 1} >= {(k,) for k in KINDS} | {("clean",)}
    pairs = [c for c in cases if len(c) == 2]
    assert 0.3 < len(pairs) / len(cases) < 0.5
    assert all(compatible(p) for p in pairs) and set(pairs) <= set(all_pairs(KINDS))


def test_photo_crops_are_random_squares_in_range() -> None:
    photos = [np.full((300, 200, 3), 10 * i, np.uint8) for i in range(3)]
    crops = photo_crops(photos, 5, 64, np.random.default_rng(0))
    assert crops.shape == (5, 3, 64, 64) and 0.0 <= float(crops.min()) and float(crops.max()) <= 1.0


def test_photo_crops_of_resized_photos_own_their_memory() -> None:
    # A full-width crop of a resized photo is a view of PIL's read-only buffer; torch warns when it shares one.
    photos = [np.random.default_rng(1).integers(0, 255, (200, 49, 3), dtype=np.uint8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        crops = photo_crops(photos, 8, 48, np.random.default_rng(0))
    assert crops.shape == (8, 3, 48, 48)


def test_training_composition_is_the_inference_composition(tmp_path) -> None:
    """activate() at weight 1 (what the trainer optimises) equals the composer's fused weights of 1."""
    backbone = FAMILIES["embedded-ffdnet"](None)
    bank = open_bank(make_random_bank(tmp_path / "b", backbone, ("noise", "haze"), rank=2, seed=3,
                                      conditioning={"sigma": 0.05}))
    image = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    composition = Composition(bank=bank, weights={"noise": 1.0, "haze": 1.0}, fused=True)
    with composed(backbone, composition), torch.inference_mode():
        expected = backbone.restore_step(image, composition.conditioning(backbone))
    adapters = bank.attach(backbone)
    activate(backbone, [adapters["noise"], adapters["haze"]])
    conditioning = {adapters[n]: bank.manifest.lora(n).conditioning for n in ("noise", "haze")}
    with torch.inference_mode():
        got = backbone.restore_step(image, blended_conditioning(backbone, conditioning, list(conditioning)))
    assert torch.allclose(got, expected, atol=1e-5)


def test_a_measured_lora_is_trained_at_the_level_the_sampler_measures(tmp_path) -> None:
    """A LoRA with ``measured`` sigma: blended_conditioning reads each image's own level, as Composition does."""
    backbone = FAMILIES["embedded-ffdnet"](None)
    folder = make_random_bank(tmp_path / "b", backbone, ("noise", "jpeg"), rank=2, seed=3,
                              conditioning={"sigma": 0.3})
    manifest = read_manifest(folder)
    manifest.lora("noise").measured = ["sigma"]
    write_manifest(manifest, folder)
    bank = open_bank(folder)
    images = torch.stack([torch.full((3, 32, 32), 0.5) + level * torch.randn(3, 32, 32)
                          for level in (0.02, 0.08)])
    conditioning = {name: bank.manifest.lora(name).conditioning for name in ("noise", "jpeg")}
    told = blended_conditioning(backbone, conditioning, ["noise", "jpeg"], images, {"noise": ["sigma"]})["sigma"]
    for image, sigma in zip(images, told):
        measured = Composition(bank=bank, weights={"noise": 1.0}).measure(backbone, image[None])
        composition = Composition(bank=bank, weights={"noise": 1.0, "jpeg": 1.0})
        assert float(sigma) == pytest.approx(composition.conditioning(backbone, measured)["sigma"], rel=1e-5)
    assert float(told[0]) < float(told[1]) < 0.3 * 2**0.5  # each image its own level, under the ceilings' blend
    fixed = blended_conditioning(backbone, conditioning, ["noise", "jpeg"], images)["sigma"]
    assert fixed == pytest.approx(0.3 * 2**0.5)  # without ``measured``: the recorded values


def test_a_case_in_the_banks_order_runs_as_the_sampler_runs_it(tmp_path) -> None:
    """case_output of noise + low light with noise restored first equals the sampler's restore of that composition."""
    import json

    from uir_lora import pipeline
    from uir_lora.lab.testing.banks import random_adapter, with_global_adapter

    backbone = FAMILIES["embedded-ffdnet"](None)
    root = make_random_bank(tmp_path / "b", backbone, ("noise", "low_light"), rank=2, seed=3,
                            conditioning={"sigma": 0.05})
    with_global_adapter(root, "low_light", random_adapter(5))
    manifest = json.loads((root / "manifest.json").read_text())
    next(e for e in manifest["loras"] if e["name"] == "noise")["restored_before"] = ["low_light"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    bank = open_bank(root)
    image = torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(2))
    expected, _ = pipeline.restore(image, FAMILIES["embedded-ffdnet"](None), bank,
                                   manual={"noise": 1.0, "low_light": 1.0})
    adapters = bank.attach(backbone)
    names = [adapters["noise"], adapters["low_light"]]
    conditioning = {adapters[n]: bank.manifest.lora(n).conditioning for n in ("noise", "low_light")}
    stage = {adapters["low_light"]: bank.global_adapter("low_light")}
    with torch.inference_mode():
        got = case_output(backbone, image, names, conditioning, 0, stage, {adapters["noise"]: [adapters["low_light"]]})
        one_pass_first = case_output(backbone, image, names, conditioning, 0, stage)
    assert torch.allclose(got.clamp(0, 1), expected, atol=1e-5)
    assert not torch.allclose(one_pass_first.clamp(0, 1), expected, atol=1e-3)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_case_in_the_banks_order_trains_the_first_kind_through_the_frozen_stage(ordered: bool) -> None:
    from uir_lora.global_stage import GlobalAdapter

    backbone = FAMILIES["embedded-ffdnet"](None)
    photos = [np.asarray(torch.rand(80, 80, 3).mul(255).byte()) for _ in range(2)]
    cfg = JointConfig(steps=2, batch=1, crop=32, rank=2, bf16=False, kinds=("low_light", "noise"),
                      mixture_share=1.0, clean_share=0.0, seed=0)  # every batch is low light + noise
    conditioning = {name: {"sigma": 0.0} for name in (*cfg.kinds, "clean")}
    stage = GlobalAdapter()
    torch.nn.init.normal_(stage.local_head.bias, std=0.2)
    stage_before = {k: v.clone() for k, v in stage.state_dict().items()}
    train_bank(backbone, photos, cfg, conditioning, log=lambda _: None, global_stage={"low_light": stage},
               restored_before={"noise": ["low_light"]} if ordered else None)
    moved = {name for name in (*cfg.kinds, "clean")
             if any(float(t.abs().sum()) > 0 for k, t in backbone.adapter_state(name).items() if "lora_B" in k)}
    # in order the low-light LoRA sits the case out, as in the sampler; the noise LoRA learns through the stage
    assert moved == ({"noise"} if ordered else {"low_light", "noise"})
    assert all(torch.equal(stage.state_dict()[k], v) for k, v in stage_before.items())


def test_train_bank_moves_only_the_active_loras() -> None:
    backbone = FAMILIES["embedded-ffdnet"](None)
    photos = [np.asarray(torch.rand(80, 80, 3).mul(255).byte()) for _ in range(2)]
    cfg = JointConfig(steps=2, batch=1, crop=32, rank=2, bf16=False, kinds=("noise", "jpeg", "haze"),
                      mixture_share=0.0, clean_share=0.0, seed=0)
    conditioning = {name: {"sigma": 0.0} for name in (*cfg.kinds, "clean")}
    stats = train_bank(backbone, photos, cfg, conditioning, log=lambda _: None)
    assert stats["steps"] == 2
    moved = {name for name in (*cfg.kinds, "clean")
             if any(float(t.abs().sum()) > 0 for k, t in backbone.adapter_state(name).items() if "lora_B" in k)}
    rng = random.Random(0)  # the cases the trainer drew (same seed, same config)
    assert moved == {draw_case(rng, cfg)[0] for _ in range(2)}


def test_train_kinds_learn_through_the_frozen_global_stage_and_nothing_else_moves() -> None:
    from uir_lora.global_stage import GlobalAdapter
    from uir_lora.lab.train.joint import through_global_stage

    backbone = FAMILIES["embedded-ffdnet"](None)
    photos = [np.asarray(torch.rand(80, 80, 3).mul(255).byte()) for _ in range(2)]
    cfg = JointConfig(steps=3, batch=1, crop=32, rank=2, bf16=False, kinds=("noise", "jpeg", "haze"),
                      train_kinds=("haze",), mixture_share=0.5, identity_share=0.3, seed=0)
    conditioning = {name: {"sigma": 0.0} for name in (*cfg.kinds, "clean")}
    generator = torch.Generator().manual_seed(0)
    shapes = FAMILIES["embedded-ffdnet"](None)
    shapes.inject_adapter("any", LoraConfig(r=2, lora_alpha=2.0, target_modules=list(shapes.default_lora_targets)))
    init = {name: {k: torch.randn(v.shape, generator=generator) * 0.01  # non-zero: a frozen
                   for k, v in shapes.adapter_state("any").items()}  # LoRA that moved would show
            for name in (*cfg.kinds, "clean")}
    haze_stage = GlobalAdapter()
    torch.nn.init.normal_(haze_stage.local_head.bias, std=0.2)
    image = torch.rand(1, 3, 32, 32)
    assert not torch.allclose(through_global_stage(image, ("haze",), {"haze": haze_stage}), image)
    assert torch.equal(through_global_stage(image, ("noise",), {"haze": haze_stage}), image)
    stage_before = {k: v.clone() for k, v in haze_stage.state_dict().items()}
    train_bank(backbone, photos, cfg, conditioning, init, log=lambda _: None, global_stage={"haze": haze_stage})
    for name in (*cfg.kinds, "clean"):
        same = all(torch.equal(backbone.adapter_state(name)[k], v) for k, v in init[name].items())
        assert same == (name != "haze"), name
    assert all(torch.equal(haze_stage.state_dict()[k], v) for k, v in stage_before.items())


def test_a_mixture_share_of_zero_draws_single_kinds_only() -> None:
    cfg = JointConfig(train_kinds=("motion_blur",), mixture_share=0.0)
    rng = random.Random(0)
    assert {draw_case(rng, cfg) for _ in range(500)} == {("motion_blur",)}


def test_standard_solo_synthesis_damages_one_kind_as_the_single_kind_trainer_does() -> None:
    from uir_lora.degrade import degrade

    clean = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    standard = degrade_case(clean, ("jpeg",), torch.Generator().manual_seed(3), "standard")
    assert torch.equal(standard, degrade(clean, ["jpeg"], generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(standard, degrade_case(clean, ("jpeg",), torch.Generator().manual_seed(3)))
    pair = ("noise", "jpeg")  # mixtures keep the two training implementations
    assert torch.equal(degrade_case(clean, pair, torch.Generator().manual_seed(5), "standard"),
                       degrade_case(clean, pair, torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="solo_synthesis must be one of"):
        degrade_case(clean, ("jpeg",), torch.Generator(), "alt")


def test_a_mixture_share_outside_0_1_is_refused_before_any_work(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bank"), "--mixture-share", "1.5"])
    assert "--mixture-share must be a share in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "bank").exists()


def test_the_joint_trainer_trains_in_float32_unless_asked_for_bf16() -> None:
    from uir_lora.lab.train.joint import build_parser

    def bf16(*flags: str) -> bool:
        return build_parser().parse_args(["--out", "x", *flags]).bf16

    assert not JointConfig().bf16
    assert (bf16(), bf16("--no-bf16"), bf16("--bf16")) == (False, False, True)


def test_the_joint_trainer_minimises_the_loss_it_is_given(monkeypatch) -> None:
    from uir_lora.lab.train import joint

    assert joint.build_parser().parse_args(["--out", "x"]).loss == "l1"
    assert joint.build_parser().parse_args(["--out", "x", "--loss", "mse"]).loss == "mse"
    called = []
    mse = joint.LOSSES["mse"]
    monkeypatch.setitem(joint.LOSSES, "mse", lambda out, target: called.append(out.shape) or mse(out, target))
    backbone = FAMILIES["embedded-ffdnet"](None)
    photos = [np.asarray(torch.rand(80, 80, 3).mul(255).byte()) for _ in range(2)]
    cfg = JointConfig(steps=2, batch=1, crop=32, rank=2, bf16=False, kinds=("noise", "jpeg"), loss="mse", seed=0)
    train_bank(backbone, photos, cfg, {name: {"sigma": 0.0} for name in (*cfg.kinds, "clean")}, log=lambda _: None)
    assert called == [torch.Size([1, 3, 32, 32])] * 2


def test_the_third_synthesis_damages_its_share_of_precipitation_and_nothing_else() -> None:
    from uir_lora.lab.precipitation import degrade_precipitation
    from uir_lora.lab.train.joint import with_third_synthesis

    clean = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    # Off by default: the training stream of earlier runs is unchanged.
    assert torch.equal(degrade_case(clean, ("rain",), torch.Generator().manual_seed(4), "standard"),
                       degrade_case(clean, ("rain",), torch.Generator().manual_seed(4), "standard", 0.0))
    # Kinds it does not draw keep their synthesis whatever the share.
    assert torch.equal(degrade_case(clean, ("haze", "jpeg"), torch.Generator().manual_seed(4), "standard", 1.0),
                       degrade_case(clean, ("haze", "jpeg"), torch.Generator().manual_seed(4), "standard"))
    gen = torch.Generator().manual_seed(6)
    torch.rand((3,), generator=gen)  # the draw of which images take the third synthesis
    expected = with_third_synthesis(clean, ("haze", "rain"), gen, {"rain": degrade_precipitation})
    assert torch.equal(degrade_case(clean, ("haze", "rain"), torch.Generator().manual_seed(6), "standard", 1.0),
                       expected)


def test_the_third_synthesis_of_blur_damages_its_share_of_blur_beside_the_others() -> None:
    from uir_lora.lab.camera_blur import degrade_camera_blur
    from uir_lora.lab.precipitation import degrade_precipitation
    from uir_lora.lab.train.joint import with_third_synthesis

    clean = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    assert torch.equal(degrade_case(clean, ("motion_blur",), torch.Generator().manual_seed(4)),
                       degrade_case(clean, ("motion_blur",), torch.Generator().manual_seed(4), camera_share=0.0))
    assert torch.equal(degrade_case(clean, ("rain",), torch.Generator().manual_seed(4), camera_share=1.0),
                       degrade_case(clean, ("rain",), torch.Generator().manual_seed(4)))
    gen = torch.Generator().manual_seed(6)
    torch.rand((4,), generator=gen)  # which images take the blur's third synthesis
    expected = with_third_synthesis(clean, ("jpeg", "motion_blur"), gen, {"motion_blur": degrade_camera_blur})
    assert torch.equal(degrade_case(clean, ("jpeg", "motion_blur"), torch.Generator().manual_seed(6),
                                    camera_share=1.0), expected)
    # rain beside motion blur, both third syntheses at once: each kind by its own
    gen = torch.Generator().manual_seed(8)
    torch.rand((4,), generator=gen)
    torch.rand((4,), generator=gen)
    expected = with_third_synthesis(clean, ("rain", "motion_blur"), gen,
                                    {"rain": degrade_precipitation, "motion_blur": degrade_camera_blur})
    assert torch.equal(degrade_case(clean, ("rain", "motion_blur"), torch.Generator().manual_seed(8),
                                    precipitation_share=1.0, camera_share=1.0), expected)
    # shares in between: each image by one mix of syntheses, every one of them damaged
    mixed = degrade_case(clean, ("rain", "motion_blur"), torch.Generator().manual_seed(9), precipitation_share=0.5,
                         camera_share=0.5)
    assert mixed.shape == clean.shape and 0 <= float(mixed.min()) and float(mixed.max()) <= 1
    assert all(float((image - original).abs().mean()) > 0.01 for image, original in zip(mixed, clean))


def test_a_precipitation_share_outside_0_1_is_refused_before_any_work(tmp_path, capsys) -> None:
    from uir_lora.lab.train.joint import build_parser

    assert build_parser().parse_args(["--out", "x"]).precipitation_share == 0.0
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bank"), "--precipitation-share", "-0.1"])
    assert "--precipitation-share must be a share in [0, 1], got -0.1" in capsys.readouterr().err
    assert not (tmp_path / "bank").exists()


def test_a_framed_batch_is_damaged_whole_and_cut_to_one_aligned_window_per_image() -> None:
    from uir_lora.lab.train.joint import same_window

    frames = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    shifted = frames + 1.0  # a second tensor whose windows must match the first's
    windows, others = same_window([frames, shifted], 16, np.random.default_rng(0))
    assert windows.shape == others.shape == (4, 3, 16, 16)
    assert torch.equal(others, windows + 1.0)
    tops, lefts = set(), set()
    for index, window in enumerate(windows):
        found = [(top, left) for top in range(25) for left in range(25)
                 if torch.equal(frames[index, :, top:top + 16, left:left + 16], window)]
        assert len(found) == 1
        tops.add(found[0][0])
        lefts.add(found[0][1])
    assert len(tops) > 1 or len(lefts) > 1  # each image its own window


def test_a_framed_trainer_learns_on_crop_sized_windows(monkeypatch) -> None:
    from uir_lora.lab.train import joint

    shapes = []
    mse = joint.LOSSES["mse"]
    monkeypatch.setitem(joint.LOSSES, "mse", lambda out, target: shapes.append((out.shape, target.shape))
                        or mse(out, target))
    damaged_sides = []
    degrade_case = joint.degrade_case
    monkeypatch.setattr(joint, "degrade_case", lambda clean, *args, **kwargs: damaged_sides.append(clean.shape[-1])
                        or degrade_case(clean, *args, **kwargs))
    backbone = FAMILIES["embedded-ffdnet"](None)
    photos = [np.asarray(torch.rand(80, 80, 3).mul(255).byte()) for _ in range(2)]
    cfg = JointConfig(steps=2, batch=2, crop=24, frame_side=48, rank=2, bf16=False, kinds=("raindrop", "noise"),
                      loss="mse", seed=0)
    joint.train_bank(backbone, photos, cfg, {name: {"sigma": 0.0} for name in (*cfg.kinds, "clean")},
                     log=lambda _: None)
    assert damaged_sides and set(damaged_sides) == {48}
    assert shapes == [(torch.Size([2, 3, 24, 24]),) * 2] * 2


def test_a_frame_smaller_than_the_crop_is_refused_before_any_work(tmp_path, capsys) -> None:
    from uir_lora.lab.train.joint import build_parser

    assert build_parser().parse_args(["--out", "x"]).frame_side == 0
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bank"), "--crop", "128", "--frame-side", "96"])
    assert "--frame-side 96 is smaller than --crop 128" in capsys.readouterr().err
    assert not (tmp_path / "bank").exists()


def test_photo_crops_pass_over_photos_smaller_than_the_crop() -> None:
    small = np.full((20, 30, 3), 7, dtype=np.uint8)
    large = np.full((40, 50, 3), 200, dtype=np.uint8)
    crops = photo_crops([small, large, small], 16, 32, np.random.default_rng(0))
    assert crops.shape == (16, 3, 32, 32)
    assert torch.allclose(crops, torch.full_like(crops, 200 / 255))
    with pytest.raises(ValueError, match="no photo is at least 64 px on its shorter side"):
        photo_crops([small, large], 1, 64, np.random.default_rng(0))


def test_the_bank_records_the_pyramid_its_trained_loras_ran_on(tmp_path, capsys) -> None:
    from uir_lora.bank.manifest import LoraEntry
    from uir_lora.lab.train.joint import recorded_coarsest_side

    old = LoraEntry(name="raindrop", file="raindrop.safetensors", rank=2, alpha=2.0, target_modules=["x"],
                    embedding=[0.0], coarsest_side=256)
    pyramid = JointConfig(multiscale_coarsest=64, train_kinds=("noise",))
    assert recorded_coarsest_side("noise", pyramid, None) == 64  # trained through the pyramid: run so
    assert recorded_coarsest_side("raindrop", pyramid, old) == 256  # frozen: its own, whatever this run did
    assert recorded_coarsest_side("raindrop", JointConfig(multiscale_coarsest=0), old) == 0  # retrained flat
    assert recorded_coarsest_side("jpeg", pyramid, None) == 0
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bank"), "--multiscale", "16"])
    assert "--multiscale 16: give 0 (flat) or a coarsest side of at least 32 px" in capsys.readouterr().err
    assert not (tmp_path / "bank").exists()


def test_a_bank_trained_from_a_routed_bank_routes_as_it(tmp_path) -> None:
    # the trainer's bank takes --init's encoder spec and router settings; without the files they name it
    # could not route at all ("router encoder file ... is missing")
    shipped = load_bank().root
    source = read_manifest(shipped)
    assert source.encoder.file, "the shipped bank routes with a trained encoder"
    photos, data = tmp_path / "photos", tmp_path / "data"
    photos.mkdir()
    data.mkdir()
    rng = np.random.default_rng(0)
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(photos / f"{index}.png")
    torch.save(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), data / "validation.pt")
    target = tmp_path / "trained"
    assert main(["--out", str(target), "--init", str(shipped), "--photos", str(photos), "--data-dir", str(data),
                 "--steps", "1", "--batch", "1", "--crop", "64", "--eval-images", "1",
                 "--train-kinds", "jpeg"]) == 0
    written = read_manifest(target)
    net, _ = load_encoder(target / written.encoder.file, written.encoder.sha256)  # refuses a missing or other file
    theirs = load_encoder(shipped / source.encoder.file)[0].state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in net.state_dict().items())


def test_a_framed_case_meets_the_global_stage_on_its_whole_frame_as_the_sampler_runs_it(monkeypatch) -> None:
    from uir_lora.global_stage import GlobalAdapter
    from uir_lora.lab.train import joint

    staged_sides = []
    run_adapters = joint.run_adapters
    monkeypatch.setattr(joint, "run_adapters", lambda images, weighted, *args: (
        weighted and staged_sides.append(images.shape[-1])) or run_adapters(images, weighted, *args))
    backbone = FAMILIES["embedded-ffdnet"](None)
    photos = [np.asarray(torch.rand(80, 80, 3).mul(255).byte()) for _ in range(2)]
    stage = GlobalAdapter()
    torch.nn.init.normal_(stage.local_head.bias, std=0.2)
    cfg = JointConfig(steps=6, batch=1, crop=24, frame_side=48, rank=2, bf16=False, kinds=("haze", "noise"),
                      mixture_share=0.5, clean_share=0.0, seed=3)
    conditioning = {name: {"sigma": 0.0} for name in (*cfg.kinds, "clean")}
    rng = random.Random(cfg.seed)  # the cases the trainer draws (same seed, same config)
    cases = [draw_case(rng, cfg) for _ in range(cfg.steps)]
    assert ("haze",) in cases and ("noise",) in cases and len(set(cases)) == 3
    joint.train_bank(backbone, photos, cfg, conditioning, log=lambda _: None, global_stage={"haze": stage},
                     restored_before={"noise": ["haze"]})
    # haze alone: the stage on the 48 px frame; noise alone has no stage; haze + noise (noise restored before the
    # haze's stage) runs the stage on the 24 px window, after the noise pass
    expected = [48 if case == ("haze",) else 24 for case in cases if "haze" in case]
    assert staged_sides == expected
