"""What each LoRA of a bank is worth when applied, against what it costs when the router is wrong.

The automatic restore turns the router's presence p of a kind into the weight that minimises the expected squared
error, w = p r / (p r + 1 - p) (router.expected_gain_weights), with r = G / D: the mean squared error the kind's LoRA
at weight 1 removes from photos with that damage (G) over the error it adds to photos without it (D). Both are
measured here on held-out photos, never on the photos the LoRAs and adapters were trained on: a global adapter
trained to leave its training photos alone costs almost nothing on them and a great deal on a white room it never
saw, and that tail is what D must see.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from ... import pipeline
from ...bank.manifest import MAX_GAIN_RATIO, read_manifest, write_manifest
from ...bank.store import open_bank
from ...degrade import KINDS
from ..evaluate.heldout import SYNTHESES, damaged
from .temperature import bank_backbone

log = logging.getLogger(__name__)

SEVERITIES = (0.3, 0.5, 0.7)
SEED = 4100


def _restored(image: torch.Tensor, backbone, bank, kind: str) -> torch.Tensor:
    composition = pipeline.compose(bank, manual={kind: 1.0}, mode="manual")
    return pipeline.restore_composed(image, backbone, [composition]).clamp(0, 1)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.float() - b.float()) ** 2).mean())


def measure_gain(bank_dir: Path, photos: Sequence[torch.Tensor],
                 severities: Sequence[float] = SEVERITIES) -> dict[str, dict[str, float]]:
    """{kind: {gain, cost, ratio, damaged, clean}} for every built-in kind of the bank, on ``photos`` [3,H,W]: each
    clean, and damaged by both training syntheses at each of ``severities`` (seeds fixed per photo and case)."""
    bank = open_bank(bank_dir)
    backbone = bank_backbone(bank.manifest.backbone_family, "calibrate-gain")
    report: dict[str, dict[str, float]] = {}
    for kind in (name for name in bank.manifest.names if name in KINDS):
        gains, costs = [], []
        for index, photo in enumerate(photos):
            clean = photo[None]
            costs.append(_mse(_restored(clean, backbone, bank, kind), clean))
            for number, (level, synthesis) in enumerate((s, n) for s in severities for n in SYNTHESES):
                image = damaged(photo, ((kind,), level, synthesis), SEED + 100 * index + number)
                gains.append(_mse(image, clean) - _mse(_restored(image, backbone, bank, kind), clean))
        gain, cost = sum(gains) / len(gains), sum(costs) / len(costs)
        ratio = MAX_GAIN_RATIO if cost <= gain / MAX_GAIN_RATIO else max(gain, 0.0) / cost
        report[kind] = {"gain": gain, "cost": cost, "ratio": max(ratio, 1.0 / MAX_GAIN_RATIO),
                        "damaged": len(gains), "clean": len(costs)}
        log.info("%s: gain %.5f, cost %.5f, ratio %.3g", kind, gain, cost, report[kind]["ratio"])
    return report


def record_gain(bank_dir: Path, report: dict[str, dict[str, float]], photos: str) -> None:
    """Write each measured kind's ``gain_ratio`` into the manifest; every other entry and file is left as it is."""
    manifest = read_manifest(bank_dir)
    for entry in manifest.loras:
        if entry.name in report:
            entry.gain_ratio = float(f"{report[entry.name]['ratio']:.4g}")
            entry.validation["gain"] = {"gain": round(report[entry.name]["gain"], 6),
                                        "cost": round(report[entry.name]["cost"], 6), "photos": photos}
    write_manifest(manifest, bank_dir)
