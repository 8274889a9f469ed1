"""A bank's composition order against the global stage first, on mixtures of the choosing sets.

    python tools/composition_order.py [--bank DIR] [--photos validation-512|train-scenes|validation]
                                      [--pairs haze+noise,low_light+noise] [--threads 2]

Each pair at severity 0.5 by the three training syntheses (standard, ``degrade_alt`` and the wide profile), on the
held-out interiors or the TRAIN scenes (tools/restore_heldout.py's photo sets; the check set stays out), restored by
the bank as it is and by a copy whose LoRAs have no ``restored_before`` (the global stage first, then one pass),
each with the router's weights (automatic) and with both LoRAs at 1. Prints the mean PSNR gain over the input.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from restore_heldout import photos_named

from uir_lora import pipeline
from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import LoraBank, open_bank
from uir_lora.lab.evaluate.heldout import damaged
from uir_lora.lab.evaluate.metrics import psnr

SYNTHESES = ("standard", "degrade_alt", "wide")
SEED = 9100


def global_stage_first(bank: LoraBank, folder: Path) -> LoraBank:
    """A copy of ``bank`` in ``folder`` whose LoRAs are restored after every global stage."""
    shutil.copytree(bank.root, folder)
    manifest = read_manifest(folder)
    for entry in manifest.loras:
        entry.restored_before = []
    write_manifest(manifest, folder)
    return open_bank(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, help="the bank folder (default: the shipped bank)")
    parser.add_argument("--photos", choices=("validation", "validation-512", "train-scenes"), default="validation-512")
    parser.add_argument("--pairs", default="haze+noise,low_light+noise")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bank = open_bank(args.bank) if args.bank else pipeline.load_bank()
    pairs = [tuple(pair.split("+")) for pair in args.pairs.split(",")]
    backbone = pipeline.default_backbone()
    gains: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as scratch:
        banks = {"bank's order": bank, "global stage first": global_stage_first(bank, Path(scratch) / "bank")}
        for index, photo in enumerate(photos_named(args.photos)):
            clean = photo[None]
            for number, pair in enumerate(pairs):
                for offset, synthesis in enumerate(SYNTHESES):
                    image = damaged(photo, (pair, 0.5, synthesis), SEED + 53 * index + 7 * number + offset)
                    base = float(psnr(image, clean))
                    routing = pipeline.estimate(bank, image)[0]
                    both = dict.fromkeys(pair, 1.0)
                    for weights, routed, manual in (("automatic", routing, None), ("both at 1", None, both)):
                        outputs = {}
                        for order, each in banks.items():
                            composition = pipeline.compose(each, routed, manual)
                            # a composition the bank does not reorder restores the same both ways: run it once
                            key = "one pass" if composition.in_order() is None else order
                            if key not in outputs:
                                outputs[key] = pipeline.restore_composed(image, backbone, [composition])
                            gains["+".join(pair), weights, order].append(float(psnr(outputs[key], clean)) - base)
            print(f"photo {index + 1}", flush=True)
    print(f"| pair ({args.photos}, mean dB gained) | weights | " + " | ".join(banks) + " |\n|---|---|---:|---:|")
    for pair in pairs:
        for weights in ("automatic", "both at 1"):
            cells = [gains["+".join(pair), weights, order] for order in banks]
            print(f"| {'+'.join(pair)} | {weights} | " + " | ".join(f"{sum(c) / len(c):+.2f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
