"""benchmarks/wild.py's summary: gains over the input, best classical, router top-1/top-2, do-no-harm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

wild = pytest.importorskip("wild")


def restored(photo, case, method, value, kinds=None, severity="moderate", **extra):
    return {"photo": photo, "case": case, "kinds": kinds or case.split("+"), "severity": severity,
            "method": method, "psnr": value, "ssim": 0.5, **extra}


def test_gains_best_classical_routing_and_clean_photos():
    rows = [
        restored("a", "haze", "input", 10.0), restored("a", "haze", "classical:dark_channel", 14.0),
        restored("a", "haze", "auto", 13.0, weights={"haze": 0.9, "noise": 0.1}),
        restored("b", "haze", "input", 12.0), restored("b", "haze", "classical:dark_channel", 12.0),
        restored("b", "haze", "auto", 11.0, weights={"snow": 1.0}),
        restored("a", "haze", "lora@1", 15.0), restored("b", "haze", "lora@1", 13.0),
        {"photo": "a", "case": "haze", "kinds": ["haze"], "severity": "mild", "method": "route",
         "weights": {"haze": 1.0}},
        restored("a", "haze+noise", "input", 10.0, kinds=["haze", "noise"]),
        restored("a", "haze+noise", "classical:nl_means+dark_channel", 11.0, kinds=["haze", "noise"]),
        restored("a", "haze+noise", "auto", 12.0, kinds=["haze", "noise"], weights={"noise": 0.6, "haze": 0.4}),
        restored("a", "haze+noise", "lora@1:haze", 13.0, kinds=["haze", "noise"]),
        restored("a", "haze+noise", "lora@1:noise", 11.5, kinds=["haze", "noise"]),
        restored("a", "haze+noise", "loras@0.5", 13.5, kinds=["haze", "noise"]),
        restored("a", "haze+noise", "loras@1", 12.5, kinds=["haze", "noise"]),
        {"photo": "a", "case": "clean", "kinds": [], "severity": None, "method": "auto", "psnr_vs_input": 45.0,
         "weights": {"clean": 1.0}},
        {"photo": "b", "case": "clean", "kinds": [], "severity": None, "method": "auto", "psnr_vs_input": 25.0,
         "weights": {"raindrop": 0.7, "clean": 0.3}},
    ]
    summary = wild.summarise(rows)
    haze = summary["cases"]["haze@moderate"]
    assert haze["gain"]["auto"] == pytest.approx(1.0) and haze["gain"]["classical:dark_channel"] == pytest.approx(2)
    assert haze["best_classical"] == "classical:dark_channel" and haze["input_psnr"] == pytest.approx(11.0)
    mixture = summary["cases"]["haze+noise@moderate"]
    assert mixture["best_single_lora"] == "lora@1:haze"
    routing = summary["routing"]
    assert routing["top1_per_kind"]["haze"] == {"moderate": 0.5, "mild": 1.0, "all": pytest.approx(2 / 3)}
    assert routing["top2_mixtures"] == {"haze+noise": 1.0}
    assert routing["confusion"]["haze"] == {"haze": 2, "snow": 1}
    clean = summary["clean"]
    assert clean["below_30db"] == 1 and clean["share_at_least_40db"] == 0.5
    assert clean["routed_clean_or_nothing"] == 0.5 and clean["top1"] == {"clean": 1, "raindrop": 1}
    text = wild.markdown(summary, {"command": "c", "date": "d", "commit": "x", "machine": "m", "photos_n": 2,
                                   "crop": "centre 512² crops", "photos": {"a": "0" * 64, "b": "1" * 64},
                                   "restore_severities": ["moderate"], "seconds": 1.0})
    assert "| haze (moderate) | 11.00 | +2.00 (dark_channel) | +1.00 |" in text
    met = {goal: ok for goal, _, ok in wild.goals(summary)}
    assert not met["(14) auto > best classical, every kind and mixture"]  # haze: +1 against +2
    assert met["(14) auto above the input, every kind"] and met["(14) right LoRA at 1 > best classical, every kind"]
    assert not met["(15) clean photos: none below 30 dB"]
    assert met["(14) composed LoRAs ≥ best single LoRA + 0.3 dB, every mixture"]  # 13.5 against 13.0 + 0.3
