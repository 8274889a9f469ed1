"""Motion blur by its length in px, from a short exposure's faint shake to a long one: the routed restore, and the
motion blur LoRA alone at weight 1, bank beside bank.

    python tools/motion_length_probe.py shipped=lora_bank/embedded-ffdnet candidate=BANK [--photos train-scenes]

The 9 validation interiors as 512² views (``--photos validation-512``, the default) or every third TRAIN scene
photo at 512², each blurred at the lengths below (a camera-shake trajectory on even photos, a straight line on odd
ones), with and without a faint sensor noise of 2/255 and 8-bit rounding, one seeded draw per photo and case.
Prints the mean PSNR gain over the input per case, length and bank, and each bank's top-1 routed kind per length.
The standard synthesis draws no shake under about 4 px; the wide profile draws it from 2 px, so a LoRA or encoder
trained on it has seen the short end.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict

import torch
from restore_heldout import photos_named

from uir_lora import pipeline
from uir_lora.bank.store import open_bank
from uir_lora.degrade._common import convolve
from uir_lora.degrade.blur import linear_motion_kernel, shake_trajectory_kernel
from uir_lora.lab.evaluate.heldout import named_banks
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.evaluate.report import mean_gain_lines

LENGTHS = (2.0, 3.0, 4.5, 6.0, 9.0, 14.0)
SENSOR_NOISE = (0.0, 2.0)
"""Standard deviations of the faint noise added after the blur, in 8-bit levels."""


def blurred(clean: torch.Tensor, index: int, length: float, noise: float) -> torch.Tensor:
    """``clean`` [1,3,H,W] blurred over ``length`` px, with ``noise``/255 sensor noise, rounded to 8 bits."""
    generator = torch.Generator().manual_seed(100 * index + int(length * 10) + int(noise))
    if index % 2:
        kernel = linear_motion_kernel(length, float(torch.rand(1, generator=generator)) * 180.0, 0.0)
    else:
        kernel = shake_trajectory_kernel(length, generator)
    out = convolve(clean, kernel)
    out = out + noise / 255.0 * torch.randn(out.shape, generator=generator)
    return (out.clamp(0.0, 1.0) * 255.0).round() / 255.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("banks", nargs="+", help="NAME=BANK_DIR, one per bank")
    parser.add_argument("--photos", choices=("validation-512", "train-scenes"), default="validation-512")
    args = parser.parse_args()
    banks = {name: open_bank(folder) for name, folder in named_banks(args.banks).items()}
    backbone = pipeline.default_backbone()
    photos = photos_named(args.photos)
    if args.photos == "train-scenes":
        photos = photos[::3]
    gains: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    routed: dict[tuple[str, float], Counter] = defaultdict(Counter)
    for index, photo in enumerate(photos):
        clean = photo[None]
        for length in LENGTHS:
            for noise in SENSOR_NOISE:
                damaged = blurred(clean, index, length, noise)
                before = psnr(damaged, clean)
                case = f"{length:g} px, noise {noise:g}"
                for name, bank in banks.items():
                    at_one = pipeline.restore(damaged, backbone, bank, manual={"motion_blur": 1.0}, mode="manual")[0]
                    gains[f"{case}: LoRA at 1"][name].append(psnr(at_one, clean) - before)
                    auto, compositions = pipeline.restore(damaged, backbone, bank)
                    gains[f"{case}: automatic"][name].append(psnr(auto, clean) - before)
                    weights = compositions[0].weights
                    routed[name, length][max(weights, key=weights.get) if weights else "nothing"] += 1
    print("\n".join(mean_gain_lines(gains, overall=True)))
    for (name, length), tops in routed.items():
        print(f"{name} {length:g} px routed to: {dict(tops.most_common())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
