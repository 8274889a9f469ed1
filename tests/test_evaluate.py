"""The evaluation harness: metrics, classical baselines, the harness and its report (tiny, fast)."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from uir_lora import __version__
from uir_lora.degrade import KINDS, degrade
from uir_lora.errors import InputError
from uir_lora.lab.evaluate import classical, harness, heldout, metrics, publish, report


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    import kornia

    return kornia.filters.gaussian_blur2d(image, (9, 9), (sigma, sigma), border_type="reflect")


def _streaks(image: torch.Tensor) -> torch.Tensor:
    """Thin bright vertical streaks on 4 % of the columns' short segments (rain-like)."""
    mask = torch.zeros_like(image[:, :1])
    gen = torch.Generator().manual_seed(3)
    for _ in range(60):
        y, x = int(torch.randint(0, image.shape[-2] - 8, (1,), generator=gen)), int(
            torch.randint(0, image.shape[-1], (1,), generator=gen))
        mask[..., y : y + 6, x] = 1
    return image * (1 - mask) + 0.95 * mask


def _seeded(kind: str, severity: float = 0.5):
    return lambda image: degrade(image, kind, generator=torch.Generator().manual_seed(0), severity=severity)


# Each method on a degradation that fits its own model (the kernels and streaks it assumes).
SYNTHETIC = {
    "nl_means": _seeded("noise"),
    "richardson_lucy": lambda image: _blur(image, 1.5),
    "wiener": lambda image: _blur(image, 1.5),
    "bilateral": _seeded("jpeg", 0.8),
    "clahe": _seeded("low_light"),
    "gamma": _seeded("low_light"),
    "dark_channel": _seeded("haze"),
    "median": _streaks,
    "unsharp": lambda image: _blur(image, 1.0),
    "gray_world": lambda image: image * torch.tensor([1.25, 1.0, 0.75]).view(1, 3, 1, 1),
}


def test_metrics_rank_identical_mild_and_strong_noise(photo):
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(photo.shape, generator=gen)
    mild, strong = (photo + 10 / 255 * noise).clamp(0, 1), (photo + 40 / 255 * noise).clamp(0, 1)
    same = metrics.measure(photo, photo)
    assert same["ssim"] == pytest.approx(1, abs=1e-4) and same["haarpsi"] == pytest.approx(1, abs=1e-3)
    assert same["feature_distance"] == pytest.approx(0, abs=1e-6)
    m, s = metrics.measure(mild, photo), metrics.measure(strong, photo)
    for name, higher_is_better in metrics.METRICS.items():
        assert (m[name] > s[name]) == higher_is_better, name
    assert 26 < m["psnr"] < 30  # sigma 10/255 -> about 28 dB


def test_metrics_reject_mismatched_shapes(photo):
    with pytest.raises(ValueError, match="one shape"):
        metrics.psnr(photo, photo[..., :10, :10])


def test_every_classical_method_has_a_synthetic_case():
    names = {name for methods in classical.CLASSICAL.values() for name in methods}
    assert names == set(SYNTHETIC)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_classical_method_improves_its_own_case(name, photo):
    function = next(f for methods in classical.CLASSICAL.values() for n, f in methods.items() if n == name)
    degraded = SYNTHETIC[name](photo).clamp(0, 1)
    restored = function(degraded)
    assert restored.shape == photo.shape and torch.isfinite(restored).all()
    assert metrics.psnr(restored, photo) > metrics.psnr(degraded, photo) + 0.2


def test_mixture_chain_undoes_the_last_degradation_first():
    (name,) = classical.classical_methods(("noise", "jpeg"))
    assert name == "bilateral+nl_means"


def test_synthesise_matches_degrade_and_reports_the_noise_sigma(photo):
    case = harness.Case(("haze", "noise"))
    degraded, sigma = harness.synthesise(photo, case, seed=5, severity=0.5)
    expected = degrade(photo, ["haze", "noise"], generator=torch.Generator().manual_seed(5), severity=0.5)
    assert torch.equal(degraded, expected)
    assert sigma is not None and 0.01 < sigma < 0.25
    assert harness.synthesise(photo, harness.Case(("jpeg",)), seed=5)[1] is None


def test_harness_and_report_on_two_tiny_images(tmp_path, photo, random_bank, embedded_backbone):
    images = [("a", photo), ("b", F.interpolate(photo, scale_factor=0.75, mode="area")[..., :64, :96])]
    cases = harness.default_cases(["noise", "jpeg", "haze"])
    assert [c.name for c in cases] == ["noise", "jpeg", "haze", "noise+jpeg", "haze+noise"]
    rows, kept = harness.evaluate(images, embedded_backbone, random_bank, cases=cases,
                                  keep=publish.gallery_keep("a"))
    methods = {(r["case"], r["method"]) for r in rows}
    assert {("noise", "ffdnet_sigma"), ("noise", "oracle"), ("noise+jpeg", "oracle"), ("haze", "dark_channel"),
            ("noise+jpeg", "bilateral+nl_means")} <= methods
    assert ("jpeg", "ffdnet_sigma") not in methods
    assert len(rows) == len({(r["image"], r["case"], r["method"]) for r in rows})
    table = harness.aggregate(rows)
    assert table["noise"]["input"]["psnr_gain"] == 0 and table["noise"]["router"]["n"] == 2
    assert table["noise"]["ffdnet_sigma"]["psnr_gain"] > 3  # the real pretrained FFDNet, told sigma
    meta = {"command": "test", "stamp": "version 0.0.0, commit abc1234", "machine": "cpu", "wall_s": 1.0,
            "size": 96, "seed": 0, "images": [(n, harness.image_digest(i)) for n, i in images], "severity": "random",
            "bank": "tiny", "bank_info": "random", "multitask_info": "not run"}
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nHand-written intro.\n")
    publish.publish(tmp_path, rows, kept, meta)
    publish.publish(tmp_path, rows, kept, meta)  # regenerating replaces, never duplicates
    text = doc.read_text()
    assert "Hand-written intro." in text and text.count("BEGIN GENERATED: quality") == 1
    assert "Generated by `test` at version 0.0.0, commit abc1234 (cpu)" in text
    assert "| noise+jpeg |" in text
    for name in ("bench_gain_psnr", "bench_gain_haarpsi", "bench_gallery"):
        assert (tmp_path / "img" / f"{name}.png").stat().st_size > 1000
    saved = json.loads((tmp_path / publish.QUALITY_JSON).read_text())
    assert len(saved["rows"]) == len(rows)


def test_goals_report_a_loss_to_classical_and_a_speed_miss():
    table = {"noise": {"input": {"psnr": 20.0}, "router": {"psnr": 24.0}, "oracle": {"psnr": 24.5},
                       "nl_means": {"psnr": 25.0}, "ffdnet_sigma": {"psnr": 23.0}}}
    goals = {goal: met for goal, _, met in report.goal_rows(table, {"routing_composition_ratio": 1.5})}
    assert goals["router ≥ every classical method on every case (PSNR)"] is False
    assert goals["router ≥ FFDNet told the true σ (cases with noise)"] is True
    assert goals["router within 0.2 dB of the oracle LoRA (every case)"] is False
    assert goals["LoRA bank ≥ multi-task baseline on average (PSNR)"] is None
    assert goals["routing + composition ≤ 1.3× the bare backbone's CPU time (512²)"] is False


def test_eval_command_on_a_folder(tmp_path, monkeypatch):
    from PIL import Image

    from uir_lora.lab.cli import main

    folder = tmp_path / "clean"
    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(2):
        array = (_blur(torch.rand(1, 3, 80, 80, generator=gen), 2.0)[0].permute(1, 2, 0) * 255).byte().numpy()
        Image.fromarray(array).save(folder / f"p{i}.png")
    monkeypatch.setattr("uir_lora.lab.commands.evaluate.random_bank", _small_random_bank)
    out = tmp_path / "out"
    assert main(["eval", str(folder), "--out", str(out), "--kinds", "noise", "--random-bank", "--size", "64"]) == 0
    text = (out / "benchmarks.md").read_text()
    assert "uir-lora eval" in text and f"at version {__version__}, commit " in text and "UTC" not in text
    assert main(["eval", str(tmp_path / "missing"), "--out", str(out)]) == 2


def _small_random_bank(root):
    from uir_lora.bank.store import open_bank
    from uir_lora.lab.testing.banks import make_random_bank
    from uir_lora.pipeline import default_backbone
    from uir_lora.router.encoder import DegradationEncoder

    return open_bank(make_random_bank(root, default_backbone(), names=("noise", "jpeg"), dim=DegradationEncoder().dim))


def test_a_shard_sees_the_same_degradations_as_the_whole_run(photo, random_bank, embedded_backbone):
    images = [("a", photo), ("b", photo.flip(-1))]
    cases = harness.default_cases(["jpeg"], pairs=False)
    whole, _ = harness.evaluate(images, embedded_backbone, random_bank, cases=cases, only={"input", "bilateral"})
    shard, _ = harness.evaluate(images[1:], embedded_backbone, random_bank, cases=cases, indices=[1],
                                only={"input", "bilateral"})
    assert {r["method"] for r in shard} == {"input", "bilateral"}
    def drop_time(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert drop_time(r for r in whole if r["image"] == "b") == drop_time(shard)


def test_a_later_only_run_replaces_that_methods_rows_and_keeps_the_rest():
    from uir_lora.lab.commands.evaluate import latest_rows

    def row(method: str, psnr: float) -> dict:
        return {"image": "a", "case": "noise", "method": method, "psnr": psnr}

    base = {"written": 100.0, "rows": [row("router", 20.0), row("nlmeans", 22.0)],
            "kept": {("a", "noise", "router"): "old"}}
    rerun = {"written": 200.0, "rows": [row("router", 25.0)],
             "kept": {("a", "noise", "router"): "new"}}
    for order in ([base, rerun], [rerun, base]):  # file order must not matter, the write time does
        rows, kept = latest_rows(order)
        assert sorted((r["method"], r["psnr"]) for r in rows) == [("nlmeans", 22.0), ("router", 25.0)]
        assert kept[("a", "noise", "router")] == "new"


def test_results_are_stamped_by_version_and_commit(tmp_path, monkeypatch):
    assert re.fullmatch(rf"version {re.escape(__version__)}, commit [0-9a-f]{{7,}}(\+uncommitted)?", publish.stamp())
    assert publish.stamp("abc1234") == f"version {__version__}, commit abc1234"
    assert publish.commit(tmp_path) == "unknown"  # not a repository

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert publish.commit() == "unknown"


def _save_part(folder, tag: str, index: int, stamp: str, written: float, psnr: float) -> None:
    meta = {"command": "uir-lora eval default", "stamp": stamp, "images": [(f"p{index}", "0" * 64)], "wall_s": 1.0,
            "multitask_info": "not run (no --multitask)", "bank_info": "bank"}
    rows = [{"image": f"p{index}", "case": "noise", "method": "router", "psnr": psnr}]
    torch.save({"rows": rows, "kept": {}, "meta": meta, "indices": [index], "tag": f"_{tag}_", "written": written},
               folder / f"bench_part_{tag}_{index}_of_2.pt")


def test_merge_names_each_runs_stamp_and_stamps_the_merge(tmp_path, monkeypatch):
    from uir_lora.lab.commands.evaluate import merge_parts

    for index in (0, 1):
        _save_part(tmp_path, "all", index, "version 1, commit aaaaaaa", 1.0 + index, 20.0)
        _save_part(tmp_path, "router", index, "version 1, commit bbbbbbb", 4.0 - index, 25.0 + index)
    published = {}
    monkeypatch.setattr(publish, "publish", lambda out, rows, kept, meta: published.update(rows=rows, meta=meta))
    monkeypatch.setattr(publish, "stamp", lambda revision=None: "version 1, commit ccccccc")
    assert merge_parts(argparse.Namespace(merge=tmp_path, out=tmp_path)) == 0
    assert published["meta"]["command"] == (
        "uir-lora eval default` as 2 parallel `--shard I/2` runs at version 1, commit aaaaaaa"
        " (plus `--only router` at version 1, commit bbbbbbb) merged by `uir-lora eval --merge")
    assert published["meta"]["stamp"] == "version 1, commit ccccccc"
    assert sorted(row["psnr"] for row in published["rows"]) == [25.0, 26.0]


def test_merge_refuses_part_files_without_a_write_time(tmp_path):
    from uir_lora.lab.commands.evaluate import merge_parts

    _save_part(tmp_path, "all", 0, "version 1, commit aaaaaaa", 1.0, 20.0)
    old = torch.load(tmp_path / "bench_part_all_0_of_2.pt", weights_only=True)
    del old["written"]
    torch.save(old, tmp_path / "bench_part_all_0_of_2.pt")
    with pytest.raises(InputError, match="older format"):
        merge_parts(argparse.Namespace(merge=tmp_path, out=tmp_path))


def test_heldout_cases_and_their_images():
    cases = heldout.heldout_cases([0.3, 0.7])
    assert cases[0] == ((), None, "clean") and len(cases) == 1 + len(KINDS) * 2 * 2 + len(heldout.PAIRS) * 2
    photo = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(heldout.damaged(photo, cases[0], 1), photo[None])
    noisy = heldout.damaged(photo, (("noise",), 0.7, "degrade_alt"), 5)
    assert torch.equal(noisy, heldout.damaged(photo, (("noise",), 0.7, "degrade_alt"), 5))
    assert not torch.equal(noisy, heldout.damaged(photo, (("noise",), 0.7, "degrade_alt"), 6))
    wide = heldout.heldout_cases([0.5], ["wide"])
    assert {synthesis for _, _, synthesis in wide[1:]} == {"wide"} and len(wide) == 1 + len(KINDS) + len(heldout.PAIRS)
    blurred = heldout.damaged(photo, (("motion_blur",), 0.5, "wide"), 3)
    assert blurred.shape == (1, 3, 32, 32) and torch.equal(blurred, heldout.damaged(photo, wide[1 + KINDS.index(
        "motion_blur")], 3))
    with pytest.raises(InputError, match="unknown synthesis"):
        heldout.heldout_cases([0.5], ["standard", "checkset"])
    assert heldout.named_banks(["a=x/y"]) == {"a": Path("x/y")}
    with pytest.raises(InputError, match="NAME=BANK_DIR"):
        heldout.named_banks(["lora_bank/embedded-ffdnet"])
