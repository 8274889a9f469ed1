"""The automatic restore of banks side by side on held-out interiors, damaged by both training syntheses.

    python tools/restore_heldout.py shipped=lora_bank/embedded-ffdnet candidate=lora_bank/CANDIDATE [--json F]

The 9 validation interiors (never trained on), each clean, with every kind by ``uir_lora.degrade`` (standard)
and by ``uir_lora.lab.degrade_alt`` at severities 0.3 and 0.7, and the five benchmark pairs at 0.5 by both
(seeds fixed per photo and case). Each bank routes and restores every image as ``uir-lora restore`` does; a
composition that another bank already restored with the same LoRA files is not restored again. Prints the mean
PSNR gain over the input per case and over every damaged image, and the clean photos' lowest PSNR(output, input). The
banks must share their backbone. The check set stays out of the choice (benchmarks/wild.py measures it).

``--photos train-scenes`` uses the scene pool's TRAIN photographs instead (centre 512² crops, from
tools/build_scene_pool.py): training sources, so not held out, but outdoor, dark and night scenes that the
bright interiors never show. ``--photos validation-512`` takes the same 9 interiors as the whole photos shrunk to a
shorter side of 512 px and cropped to 512² (four of the 256² crops show a bare wall and nothing else).
``--syntheses wide`` draws the standard synthesis's wide profile instead (the
field's kernels, then a camera's faint noise and mild JPEG).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from uir_lora import pipeline
from uir_lora.bank.store import LoraBank, open_bank
from uir_lora.images import array_to_tensor
from uir_lora.lab.evaluate.datasets import centre_crop
from uir_lora.lab.evaluate.heldout import DEFAULT_SYNTHESES, damaged, heldout_cases, named_banks
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.evaluate.publish import write_json
from uir_lora.lab.scenes import load_scenes
from uir_lora.lab.train.data import load_validation_images, sha256_file

SEVERITIES = (0.3, 0.7)
SEED = 3000
CLEAN_CASE = "clean: lowest PSNR(output, input)"
CLEAN_SHARE = "clean: share with PSNR(output, input) >= 40 dB"
SCENE_SIDE = 512


def photos_named(which: str) -> torch.Tensor | list[torch.Tensor]:
    """The photos to damage: the validation interiors (256² centre crops, or the whole photos shrunk to a shorter
    side of 512 and cropped to 512²), or centre crops of the scene pool's TRAIN photographs."""
    if which == "validation":
        return load_validation_images()
    if which == "validation-512":
        from uir_lora.lab.router.data import whole_split_photos

        return [centre_crop(shrink_to(photo, SCENE_SIDE)[0], SCENE_SIDE) for photo in whole_split_photos("val")[1]]
    return [centre_crop(array_to_tensor(image)[0], SCENE_SIDE) for _, image in load_scenes("TRAIN")]


def shrink_to(photo: torch.Tensor, side: int) -> torch.Tensor:
    """``photo`` [1,3,H,W] area-shrunk so that its shorter side is ``side`` (never enlarged)."""
    scale = side / min(photo.shape[-2:])
    return photo if scale >= 1 else F.interpolate(photo, scale_factor=scale, mode="area").clamp(0, 1)


def lora_digests(bank: LoraBank) -> dict[str, tuple[str, ...]]:
    """sha256 of each LoRA's files (its global adapter too): banks share a restore only where the weights match."""
    return {entry.name: tuple(sha256_file(bank.root / file) for file in (entry.file, entry.global_stage) if file)
            for entry in bank.manifest.loras}


def restore_key(composition, digests: dict[str, tuple[str, ...]]) -> tuple:
    """What a restore depends on beyond the image: each kind's weight and files, and the strength. Banks whose
    compositions share it share one restore."""
    return (tuple(sorted((kind, weight, digests[kind]) for kind, weight in composition.weights.items())),
            composition.confidence)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("banks", nargs="+", help="NAME=BANK_DIR, one or more")
    parser.add_argument("--json", type=Path, help="write the per-case means here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--syntheses", default=",".join(DEFAULT_SYNTHESES),
                        help="comma-separated: standard, degrade_alt, wide (the wide profile with a camera finish)")
    parser.add_argument("--photos", choices=("validation", "validation-512", "train-scenes"), default="validation",
                        help="the held-out interiors as 256² crops (default) or as 512² views of the whole photos, "
                             "or the scene pool's TRAIN photographs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    banks = {name: open_bank(folder) for name, folder in named_banks(args.banks).items()}
    digests = {name: lora_digests(bank) for name, bank in banks.items()}
    backbone = pipeline.default_backbone()
    gains: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in banks}
    photos = photos_named(args.photos)
    for index, photo in enumerate(photos):
        clean = photo[None]
        for number, case in enumerate(heldout_cases(SEVERITIES, args.syntheses.split(","))):
            kinds = case[0]
            image = damaged(photo, case, SEED * index + number)
            restored: dict[tuple, float] = {}
            for name, bank in banks.items():
                composition = pipeline.compose(bank, pipeline.estimate(bank, image)[0])
                key = restore_key(composition, digests[name])
                if key not in restored:
                    output = pipeline.restore_composed(image, backbone, [composition])
                    restored[key] = float(psnr(output, clean))  # the clean photo's own: PSNR(output, input)
                if not kinds:
                    gains[name][CLEAN_CASE].append(restored[key])
                    continue
                gain = restored[key] - float(psnr(image, clean))
                for key_name in ("+".join(kinds), "every damaged image"):
                    gains[name][key_name].append(gain)
        print(f"photo {index + 1}/{len(photos)}", flush=True)
    # the clean photos' worst case: a photo returned bit for bit scores inf, which a mean would hide the others behind
    means = {name: {case: min(values) if case == CLEAN_CASE else sum(values) / len(values)
                    for case, values in table.items()} for name, table in gains.items()}
    for name, table in gains.items():
        means[name][CLEAN_SHARE] = sum(value >= 40 for value in table[CLEAN_CASE]) / len(table[CLEAN_CASE])
    print("| case (mean dB) | " + " | ".join(banks) + " |\n|---|" + "---:|" * len(banks))
    for case in means[next(iter(banks))]:
        cell = "{:.0%}" if case == CLEAN_SHARE else "{:+.2f}"
        print(f"| {case} | " + " | ".join(cell.format(means[name][case]) for name in banks) + " |")
    if args.json:
        write_json(args.json, means)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
