"""Raindrop restoration by distance from the drop's edge: what the backbone's receptive field can reach.

    python tools/raindrop_reach.py [BANK]      (default lora_bank/embedded-ffdnet; needs data/validation.pt)

Re-draws each validation pair's drop mask (same seeds as uir_lora.lab.train.validate), then reports the
PSNR of input, FFDNet alone and the raindrop LoRA over pixels binned by their distance (px) to the
nearest pixel outside any drop. A pixel deeper inside a drop than the network's receptive field (hard
limit 25 px; its effective reach, measured by tools/blur_receptive_field.py, is in docs/training.md)
has no clean pixel in view to restore from.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from scipy.ndimage import distance_transform_edt

from uir_lora.backbones.registry import FAMILIES
from uir_lora.bank.store import open_bank
from uir_lora.degrade.lens import _drop_field
from uir_lora.lab.train.data import load_validation_images
from uir_lora.lab.train.validate import VALIDATION_SEED, VERSIONS_PER_IMAGE, set_adapter_enabled, validation_pairs

BINS = ((-1, 0.5), (0.5, 4), (4, 8), (8, 16), (16, 25), (25, 1e9))  # distance to the nearest dry pixel, px


def drop_depth(images: torch.Tensor) -> torch.Tensor:
    """[N*2,H,W] distance of each pixel to the nearest pixel outside the drops (0 outside)."""
    depths = []
    for i, image in enumerate(images.split(1)):
        for v in range(VERSIONS_PER_IMAGE):
            gen = torch.Generator().manual_seed(VALIDATION_SEED + i * VERSIONS_PER_IMAGE + v)
            severity = float(torch.rand((1,), generator=gen))  # degrade() draws the severity first
            weight = _drop_field(image, severity, gen)[0]
            depths.append(torch.from_numpy(distance_transform_edt((weight > 0.5).numpy())).float())
    return torch.stack(depths)


def main(bank_dir: str = "lora_bank/embedded-ffdnet") -> None:
    torch.set_num_threads(1)
    images = load_validation_images(Path("data"))
    degraded, clean = validation_pairs(images, "raindrop")
    depth = drop_depth(images)
    bank = open_bank(bank_dir)
    backbone = FAMILIES["embedded-ffdnet"](None)
    adapter = bank.attach(backbone)["raindrop"]
    sigma = bank.manifest.lora("raindrop").conditioning
    outputs = {"input": degraded}
    with torch.inference_mode():
        for label, name in (("FFDNet alone", None), ("LoRA", adapter)):
            set_adapter_enabled(backbone, name)
            outputs[label] = torch.cat([backbone.restore_step(x, sigma).clamp(0, 1) for x in degraded.split(6)])
    print(f"bank {bank_dir}: drop pixels (weight > 0.5) = {float((depth > 0).float().mean()):.3f} of all")
    print("| depth in drop (px) | share of pixels | share of input error | " + " | ".join(outputs) + " |")
    print("|---|---|---|" + "---|" * len(outputs))
    total_err = float(((degraded - clean) ** 2).mean(1).sum())
    for low, high in BINS:
        mask = (depth > low) & (depth <= high)
        if not mask.any():
            continue
        cells = []
        for out in outputs.values():
            mse = float(((out - clean) ** 2).mean(1)[mask].mean())
            cells.append(f"{-10 * torch.log10(torch.tensor(mse)).item():.2f}")
        share_err = float(((degraded - clean) ** 2).mean(1)[mask].sum()) / total_err
        label = "outside" if high == 0.5 else f"{low:g}-{high:g}" if high < 1e9 else f"> {low:g}"
        print(f"| {label} | {float(mask.float().mean()):.3f} | {share_err:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
