"""A kind's LoRA at weight 1, flat and coarse to fine, on the choosing sets: which ``coarsest_side`` to give it.

    python tools/coarse_to_fine_probe.py raindrop [--bank DIR] [--photos validation-512|train-scenes|train-photos-1024]
                                         [--levels 0,1,2] [--json F] [--threads 1]

Each photo damaged by the kind at severities 0.3 and 0.7 by the standard synthesis, ``degrade_alt``, the wide profile
and, for rain, snow and raindrops, the third synthesis (``lab/precipitation.py``); each image restored by the kind's
LoRA at weight 1 with the backbone run flat (0 levels) and on a pyramid of 1, 2, ... halved copies
(``sampler.multiscale``, as the sampler runs a LoRA whose ``coarsest_side`` asks for it). Prints the mean PSNR gain
over the input per synthesis and severity, and over all. ``--photos train-photos-1024``: centre 1024² crops of the
training photos of at least 1024 px (data/train_photos, from tools/pack_training_photos.py): not held out, but the
one set large enough to show how the best number of levels follows the photo's size. The check set stays out.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from restore_heldout import photos_named

from uir_lora import pipeline
from uir_lora.bank.store import open_bank
from uir_lora.compose.composer import composed
from uir_lora.images import array_to_tensor
from uir_lora.lab.evaluate.datasets import centre_crop
from uir_lora.lab.evaluate.heldout import damaged
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.precipitation import KINDS as PRECIPITATION_KINDS
from uir_lora.lab.precipitation import degrade_precipitation
from uir_lora.sampler.multiscale import multiscale

ROOT = Path(__file__).resolve().parent.parent
SEVERITIES = (0.3, 0.7)
SEED = 9300
LARGE_SIDE = 1024


def large_training_photos(side: int = LARGE_SIDE) -> list[torch.Tensor]:
    """Centre ``side``² crops of every second training photo whose shorter side is at least ``side``."""
    files = [path for path in sorted((ROOT / "data" / "train_photos").glob("*.jpg"))
             if min(Image.open(path).size) >= side][::2]
    return [centre_crop(array_to_tensor(np.asarray(Image.open(path).convert("RGB")))[0], side) for path in files]


def damage(photo: torch.Tensor, kind: str, severity: float, synthesis: str, seed: int) -> torch.Tensor:
    """``photo`` [3,H,W] with ``kind`` by ``synthesis`` (the held-out tools' three, or "third"), [1,3,H,W]."""
    if synthesis == "third":
        generator = torch.Generator().manual_seed(seed)
        return degrade_precipitation(photo[None], kind, generator, severities=[severity]).float().clamp(0, 1)
    return damaged(photo, ((kind,), severity, synthesis), seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind")
    parser.add_argument("--bank", type=Path, default=ROOT / "lora_bank" / "embedded-ffdnet")
    parser.add_argument("--photos", choices=("validation-512", "train-scenes", "train-photos-1024"),
                        default="validation-512")
    parser.add_argument("--levels", default="0,1,2", help="comma-separated numbers of halved copies (0: flat)")
    parser.add_argument("--json", type=Path, help="write every image's gains here")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    levels = [int(level) for level in args.levels.split(",")]
    if args.photos == "train-photos-1024":
        photos = large_training_photos()
    else:
        photos = photos_named(args.photos)
        photos = photos if args.photos == "validation-512" else photos[::2]
    syntheses = ["standard", "degrade_alt", "wide"] + (["third"] if args.kind in PRECIPITATION_KINDS else [])
    bank, backbone = open_bank(args.bank), pipeline.default_backbone()
    composition = pipeline.compose(bank, None, {args.kind: 1.0}, "manual")
    rows = []
    for index, photo in enumerate(photos):
        for severity in SEVERITIES:
            for number, synthesis in enumerate(syntheses):
                seed = SEED + 71 * index + 7 * number + int(10 * severity)
                image = damage(photo, args.kind, severity, synthesis, seed)
                clean, base = photo[None], float(psnr(image, photo[None]))
                conditioning = composition.conditioning(backbone, composition.measure(backbone, image))
                row = {"photo": index, "severity": severity, "synthesis": synthesis, "input": base}
                with composed(backbone, composition), torch.inference_mode():
                    def run(level: torch.Tensor, conditioning: dict = conditioning) -> torch.Tensor:
                        return backbone.restore_step(level, conditioning).float().clamp(0, 1)  # as the sampler's tiles

                    for count in levels:
                        row[f"levels {count}"] = float(psnr(multiscale(run, image, count).clamp(0, 1), clean)) - base
                rows.append(row)
        print(f"photo {index + 1}/{len(photos)}", flush=True)
    groups = defaultdict(list)
    for row in rows:
        groups[f"{row['synthesis']} at {row['severity']}"].append(row)
    groups["every image"] = rows
    names = ["flat" if count == 0 else f"{count} halved cop{'y' if count == 1 else 'ies'}" for count in levels]
    print(f"| {args.kind} at weight 1 (mean dB gained) | " + " | ".join(names)
          + " |\n|---|" + "---:|" * len(levels))
    for name, members in groups.items():
        print(f"| {name} | " + " | ".join(f"{np.mean([r[f'levels {count}'] for r in members]):+.2f}"
                                          for count in levels) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
