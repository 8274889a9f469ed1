"""Shipped LoRAs run flat and coarse-to-fine, without retraining: PSNR on validation photos at 512 px.

    PYTHONPATH=. python tools/multiscale_probe.py haze low_light motion_blur defocus_blur color_cast noise
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import torch
from PIL import Image

from uir_lora import pipeline
from uir_lora.compose.composer import Composition, composed
from uir_lora.degrade import degrade
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.train.data import _downscale, split_photos
from uir_lora.sampler.multiscale import multiscale, pyramid_levels


def validation_crops(count: int, side: int) -> list[torch.Tensor]:
    crops = []
    for path in split_photos()[1][:count]:
        array = np.asarray(_downscale(Image.open(path).convert("RGB"), 2.0))
        top, left = (array.shape[0] - side) // 2, (array.shape[1] - side) // 2
        crop = torch.from_numpy(array[top:top + side, left:left + side].copy()).permute(2, 0, 1)
        crops.append(crop.float().div(255.0)[None])
    return crops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kinds", nargs="+")
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--coarsest", type=int, default=64)
    parser.add_argument("--severity", type=float, default=0.6)
    args = parser.parse_args()
    backbone, bank = pipeline.default_backbone(), pipeline.load_bank()
    crops = validation_crops(args.photos, args.side)
    levels = pyramid_levels(args.side, args.side, args.coarsest)
    print(f"{len(crops)} photos at {args.side} px, {levels} coarser levels, severity {args.severity}")
    for kind in args.kinds:
        scores: dict[str, list[float]] = {"input": [], "flat": [], "coarse-to-fine": []}
        composition = Composition(bank=bank, weights={kind: 1.0})
        conditioning = composition.conditioning(backbone)
        for index, clean in enumerate(crops):
            damaged = degrade(clean, kind, generator=torch.Generator().manual_seed(index), severity=args.severity)
            with composed(backbone, composition), torch.inference_mode():
                run = functools.partial(backbone.restore_step, conditioning=conditioning)
                scores["input"].append(psnr(damaged, clean))
                scores["flat"].append(psnr(run(damaged), clean))
                scores["coarse-to-fine"].append(psnr(multiscale(run, damaged, levels), clean))
        print(kind, {name: round(float(np.mean(values)), 2) for name, values in scores.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
