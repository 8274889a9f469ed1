"""Fit the bank's ``router.severity_strength``: how strongly to apply a kind's LoRA for the severity read.

    python tools/fit_severity_strength.py --measure runs/strength/measured.json          # about 25 minutes, 2 cores
    python tools/fit_severity_strength.py --fit runs/strength/measured.json [--write BANK_DIR]

Measure: the scene pool's TRAIN photographs (centre 512² crops; training sources), each damaged by every kind at
severities 0.1 / 0.4 / 0.7 / 1.0, the synthesis turning over the standard one, ``degrade_alt`` and the wide profile
(seeds fixed per photo, kind and severity); for each image the encoder's severity reading and the PSNR gain of the
kind's LoRA alone at weights 0.5 / 0.75 / 1 / 1.25. ``--photos validation`` measures the held-out interiors
instead, for a report only: the fit refuses them. Shards (``--shard I/N``) write separate files to merge by
listing them all after ``--fit``.

Fit: per kind, the curve that maximises the mean gain over the measured images among "strength 1 everywhere" and
ramps from a strength below 1 at a mild reading up to 1 (the gain at a strength between measured weights is
interpolated; at strength 0 it is 0). A ramp is kept only where it gains at least ``--min-gain`` dB on average
over the kind's images, so a curve is not fitted to a few photos' noise. The curves never exceed 1: a weight
above the one a LoRA was trained at is not applied on the strength of a severity reading.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from uir_lora import pipeline
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.lab.evaluate.heldout import damaged
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.router.router import severity_strength

sys.path.insert(0, str(Path(__file__).resolve().parent))
from restore_heldout import photos_named  # noqa: E402  (a sibling tool: the same photos as the held-out runs)

SEVERITIES = (0.1, 0.4, 0.7, 1.0)
WEIGHTS = (0.5, 0.75, 1.0, 1.25)
SYNTHESES = ("standard", "degrade_alt", "wide")
SEED = 9000
SEED_OFFSET = {"train-scenes": 0, "validation": 19}
"""Added to a photo's number in its seed: the interiors' seeds follow the 19 TRAIN scenes'."""
MILD_READINGS = (0.1, 0.2, 0.3, 0.4)
"""Where a ramp may start (its strength held below 1 up to here)."""
RAMP_WIDTHS = (0.1, 0.2, 0.3)
MILD_STRENGTHS = (0.5, 0.75)
FLAT = [[0.0, 1.0]]
"""Strength 1 at every reading: the curve a kind keeps unless a ramp beats it."""
DEFAULT_KINDS = ("motion_blur", "defocus_blur", "low_resolution", "jpeg", "haze", "color_cast", "raindrop", "rain",
                 "snow", "low_light")


def measure(bank_dir: Path, which: str, kinds: list[str], shard: int, shards: int) -> list[dict]:
    bank = open_bank(bank_dir)
    router = pipeline.router_for(bank)
    backbone = pipeline.default_backbone()
    offset = SEED_OFFSET[which]
    rows = []
    for index, photo in enumerate(photos_named(which)):
        if index % shards != shard:
            continue
        clean = photo[None]
        for number, kind in enumerate(kinds):
            for level_number, level in enumerate(SEVERITIES):
                synthesis = SYNTHESES[(index + number + level_number) % len(SYNTHESES)]
                seed = SEED + 1000 * (index + offset) + 10 * number + level_number
                image = damaged(photo, ((kind,), level, synthesis), seed)
                base = float(psnr(image, clean))
                reading = router.encoder.severities(router.encoder.features(image))
                gains = {}
                for weight in WEIGHTS:
                    composition = pipeline.compose(bank, None, {kind: weight}, mode="manual")
                    output = pipeline.restore_composed(image, backbone, [composition])
                    gains[str(weight)] = float(psnr(output, clean)) - base
                rows.append({"photos": which, "photo": index, "kind": kind, "severity": level, "synthesis": synthesis,
                             "input_psnr": base, "reading": float(reading[kind][0]), "gains": gains})
        print(f"photo {index + 1}", flush=True)
    return rows


def gain_at(row: dict, strength: float) -> float:
    """The gain at ``strength``, interpolated between the measured weights (and 0 at strength 0)."""
    weights = [0.0, *WEIGHTS]
    return float(np.interp(strength, weights, [0.0] + [row["gains"][str(w)] for w in WEIGHTS]))


def mean_gain(rows: list[dict], knots: list[list[float]]) -> float:
    """The mean gain over ``rows`` with each image's LoRA at the strength the curve gives its reading."""
    return sum(gain_at(row, severity_strength(knots, row["reading"])) for row in rows) / len(rows)


def candidate_curves() -> list[list[list[float]]]:
    """The ramps tried: a strength below 1 up to a mild reading, rising linearly to 1."""
    curves = []
    for start in MILD_READINGS:
        for width in RAMP_WIDTHS:
            for strength in MILD_STRENGTHS:
                curves.append([[start, strength], [round(start + width, 2), 1.0]])
    return curves


def fit(rows: list[dict], min_gain: float) -> tuple[dict[str, list[list[float]]], list[str]]:
    """Per kind the best candidate curve (kept only where it beats strength 1 by ``min_gain``) and a report."""
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_kind[row["kind"]].append(row)
    chosen: dict[str, list[list[float]]] = {}
    report = ["| kind | images | strength 1 (dB) | best ramp | its mean (dB) | kept |", "|---|---:|---:|---|---:|---|"]
    for kind, kind_rows in by_kind.items():
        flat = mean_gain(kind_rows, FLAT)
        best = max(candidate_curves(), key=lambda knots: mean_gain(kind_rows, knots))
        kept = mean_gain(kind_rows, best) - flat >= min_gain
        if kept:
            chosen[kind] = best
        report.append(f"| {kind} | {len(kind_rows)} | {flat:+.2f} | {best} | {mean_gain(kind_rows, best):+.2f} | "
                      f"{'yes' if kept else 'no'} |")
    return chosen, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--measure", type=Path, help="measure, and write the measurements here")
    action.add_argument("--fit", type=Path, nargs="+", help="fit curves to these measurement files")
    parser.add_argument("--bank", type=Path, default=Path("lora_bank/embedded-ffdnet"))
    parser.add_argument("--photos", choices=("train-scenes", "validation"), default="train-scenes")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS))
    parser.add_argument("--shard", default="0/1", help="I/N: measure every N-th photo from the I-th")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-gain", type=float, default=0.05)
    parser.add_argument("--write", type=Path, help="fit: write the curves into this bank's manifest")
    parser.add_argument("--check", type=Path, nargs="*", default=[],
                        help="fit: measurement files of held-out photos, to report the fitted curves on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        if args.measure.exists():
            parser.error(f"{args.measure} exists: measurements are not overwritten; choose another file")
        shard, shards = (int(part) for part in args.shard.split("/"))
        rows = measure(args.bank, args.photos, args.kinds.split(","), shard, shards)
        args.measure.parent.mkdir(parents=True, exist_ok=True)
        args.measure.write_text(json.dumps(rows))
        return 0
    rows = [row for path in args.fit for row in json.loads(path.read_text())]
    if any(row["photos"] != "train-scenes" for row in rows):
        parser.error("the fit takes training photos only: the held-out interiors are for checking the result")
    curves, report = fit(rows, args.min_gain)
    print("\n".join(report))
    held_out = [row for path in args.check for row in json.loads(path.read_text())]
    if held_out:
        print("\nHeld out, mean gain (dB): strength 1 -> the fitted curve")
        for kind in curves:
            kind_rows = [row for row in held_out if row["kind"] == kind]
            print(f"- {kind} ({len(kind_rows)} images): {mean_gain(kind_rows, FLAT):+.2f} -> "
                  f"{mean_gain(kind_rows, curves[kind]):+.2f}")
    if args.write:
        manifest = read_manifest(args.write)
        manifest.router.severity_strength = curves
        write_manifest(manifest, args.write)
        print(f"wrote router.severity_strength for {sorted(curves)} into {args.write}/manifest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
