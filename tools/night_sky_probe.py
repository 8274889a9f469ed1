"""The router's night-sky rule: what it does to night skies, and where else it fires.

    python tools/night_sky_probe.py shipped=lora_bank/embedded-ffdnet off=BANK_WITHOUT_THE_RULE [--fields 24]
    python tools/night_sky_probe.py shipped=lora_bank/embedded-ffdnet other=BANK --damaged [--fields 12]
    python tools/night_sky_probe.py --where-else

The first form routes and restores procedural night skies (``lab/evaluate/star_fields.py``, seeds 100 on; a
third without nebula) with each bank as ``uir-lora restore`` does, and prints each one's weights and
PSNR(output, input): an undamaged sky should come back as it was. ``--damaged`` gives every sky each kind at 0.5
by the standard, ``degrade_alt`` and wide syntheses and prints each bank's mean gain over the damaged sky per kind
(a rule that doubts a kind on skies costs where that damage is real). ``--where-else`` counts the images of the
choosing sets on which the rule fires at all (``router.night_sky.night_sky_factors`` > 0 at the shipped ends):
the held-out interiors (256² crops and 512² views), the scene pool's TRAIN photographs and the training photos,
each clean and with every kind at 0.3 and 0.7 and the pairs at 0.5 by the standard, ``degrade_alt`` and wide
syntheses (the training photos: every seventh case). The check set stays out (benchmarks/wild.py measures it).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from restore_heldout import lora_digests, photos_named, restore_key  # tools/ is the script's own folder

from uir_lora import pipeline
from uir_lora.bank.manifest import NIGHT_SKY_POINTS, NIGHT_SKY_VOID
from uir_lora.bank.store import open_bank
from uir_lora.images import array_to_tensor
from uir_lora.lab.evaluate.heldout import damaged, heldout_cases, named_banks
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.evaluate.star_fields import star_field
from uir_lora.router.night_sky import night_sky_factors

FIRST_SEED = 100
TRAINING_PHOTOS = Path("data/train_photos")
"""Where tools/pack_training_photos.py puts the training photos."""


def restore_fields(specs: list[str], count: int) -> None:
    banks = {name: open_bank(folder) for name, folder in named_banks(specs).items()}
    backbone = pipeline.default_backbone()
    kept: dict[str, list[float]] = {name: [] for name in banks}
    for seed in range(FIRST_SEED, FIRST_SEED + count):
        sky = star_field(seed, nebula=seed % 3 != 0)
        cells = [f"sky {seed}"]
        for name, bank in banks.items():
            output, compositions = pipeline.restore(sky, backbone, bank, mode="override")
            kept[name].append(float(psnr(output, sky)))
            weights = ", ".join(f"{kind} {weight:.2f}" for kind, weight in compositions[0].weights.items())
            cells.append(f"{name}: {{{weights}}} {kept[name][-1]:.1f} dB")
        print(" | ".join(cells), flush=True)
    for name, values in kept.items():
        print(f"{name}: PSNR(output, input) median {statistics.median(values):.1f} dB, >= 40 dB on "
              f"{sum(v >= 40 for v in values)}, below 30 dB on {sum(v < 30 for v in values)} of {len(values)}")


def restore_damaged_fields(specs: list[str], count: int) -> None:
    banks = {name: open_bank(folder) for name, folder in named_banks(specs).items()}
    backbone = pipeline.default_backbone()
    digests = {name: lora_digests(bank) for name, bank in banks.items()}
    cases = [case for case in heldout_cases((0.5,), ("standard", "degrade_alt", "wide")) if len(case[0]) == 1]
    gains: dict[str, dict[str, list[float]]] = {name: {} for name in banks}
    for seed in range(FIRST_SEED, FIRST_SEED + count):
        sky = star_field(seed, nebula=seed % 3 != 0)
        for number, case in enumerate(cases):
            image = damaged(sky[0], case, 7000 + 97 * seed + number)
            before = float(psnr(image, sky))
            restored: dict[tuple, float] = {}  # banks that compose alike share one restore
            for name, bank in banks.items():
                composition = pipeline.compose(bank, pipeline.estimate(bank, image)[0])
                key = restore_key(composition, digests[name])
                if key not in restored:
                    restored[key] = float(psnr(pipeline.restore_composed(image, backbone, [composition]), sky))
                gains[name].setdefault(case[0][0], []).append(restored[key] - before)
        print(f"sky {seed} done", flush=True)
    print("| kind (mean dB gain) | " + " | ".join(banks) + " |\n|---|" + "---:|" * len(banks))
    for kind in gains[next(iter(banks))]:
        print(f"| {kind} | " + " | ".join(f"{statistics.mean(gains[name][kind]):+.2f}" for name in banks) + " |")
    print("| every damaged sky | " + " | ".join(
        f"{statistics.mean(v for values in gains[name].values() for v in values):+.2f}" for name in banks) + " |")


def where_else() -> None:
    training = [array_to_tensor(np.asarray(Image.open(path).convert("RGB")))[0]
                for path in sorted(TRAINING_PHOTOS.glob("*.jpg"))]
    sets = {"held-out interiors 256²": list(photos_named("validation")),
            "held-out interiors 512²": photos_named("validation-512"),
            "TRAIN scenes": photos_named("train-scenes"), "training photos": training}
    cases = heldout_cases((0.3, 0.7), ("standard", "degrade_alt", "wide"))
    for name, photos in sets.items():
        every = 7 if name == "training photos" else 1
        fired, count = [], 0
        for index, photo in enumerate(photos):
            for number, case in enumerate(cases[::every]):
                image = damaged(photo, case, 3000 + 97 * index + number)
                factor = float(night_sky_factors(image, NIGHT_SKY_VOID, NIGHT_SKY_POINTS))
                count += 1
                if factor > 0:
                    fired.append(f"{'+'.join(case[0]) or 'clean'} ({case[2]}) on photo {index}: {factor:.2f}")
        print(f"{name}: {count} images, the rule fires on {len(fired)}", *fired[:20], sep="\n  ", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("banks", nargs="*", help="NAME=BANK_DIR, one or more")
    parser.add_argument("--fields", type=int, default=24, help="how many night skies")
    parser.add_argument("--where-else", action="store_true", help="count where the rule fires on the choosing sets")
    parser.add_argument("--damaged", action="store_true", help="restore the skies given each kind of damage instead")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.where_else:
        where_else()
    if args.banks:
        (restore_damaged_fields if args.damaged else restore_fields)(args.banks, args.fields)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
