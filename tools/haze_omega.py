"""The automatic restore with the haze adapter head's omega and with omega from the router's haze severity read.

    python tools/haze_omega.py --photos validation-512      # [held-out 512²]; or train-scenes

Choosing sets only (the check set stays out): each photo clean, every kind at 0.3 / 0.7 and the five pairs at 0.5 by
the three training syntheses, routed by the shipped bank; every image the router gives haze is restored twice, with
``global_stage.adapter.dehazing_omega`` as shipped and with the head's own omega. Prints the mean dB gained over
every damaged image and per case of the images given haze, and how many each way gained or lost over 0.05 dB.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch
from restore_heldout import photos_named

from uir_lora import pipeline
from uir_lora.global_stage import adapter
from uir_lora.lab.evaluate.heldout import damaged, heldout_cases
from uir_lora.lab.evaluate.metrics import psnr

SEED = 8800


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", choices=("validation-512", "train-scenes"), default="validation-512")
    parser.add_argument("--max-photos", type=int, default=0, help="the first N photos only (0: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    read_omega = adapter.dehazing_omega
    bank, backbone = pipeline.load_bank(), pipeline.default_backbone()
    photos = photos_named(args.photos)
    photos = photos[: args.max_photos] if args.max_photos else photos
    cases = heldout_cases((0.3, 0.7), ["standard", "degrade_alt", "wide"])
    every: dict[str, list[float]] = defaultdict(list)
    given: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        for index, photo in enumerate(photos):
            photo = photo if photo.dim() == 4 else photo[None]
            for number, case in enumerate(cases):
                if not case[0]:
                    continue
                image = damaged(photo[0], case, SEED * index + number)
                before = psnr(image, photo)
                adapter.dehazing_omega = read_omega
                restored, compositions = pipeline.restore(image, backbone, bank)
                read = psnr(restored, photo) - before
                head = read
                if compositions[0].weights.get("haze", 0.0) > 0:
                    adapter.dehazing_omega = lambda params: params.omega
                    head = psnr(pipeline.restore(image, backbone, bank)[0], photo) - before
                    label = "+".join(case[0]) if "haze" in case[0] else "haze misread: " + "+".join(case[0])
                    given[label].append((head, read))
                every["head"].append(head)
                every["read"].append(read)
            print(f"photo {index + 1}/{len(photos)}", flush=True)
    finally:
        adapter.dehazing_omega = read_omega
    print(f"every damaged image ({len(every['head'])}): head's omega {np.mean(every['head']):+.3f} dB, "
          f"read omega {np.mean(every['read']):+.3f} dB")
    for label, pairs in sorted(given.items()):
        head, read = np.array(pairs).T
        print(f"{label} ({len(pairs)} given haze): {head.mean():+.2f} -> {read.mean():+.2f} dB; "
              f"better {int((read - head > 0.05).sum())}, worse {int((read - head < -0.05).sum())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
