"""Top-K and temperature of a presence router by restoration PSNR on training photos (the project's own synthesis).

    python tools/presence_top_k.py --bank lora_bank/embedded-ffdnet [--top-k 1 2 3] [--temperature 1]

Every single kind and the benchmark's mixed pairs on the first 9 training photos (256² centre crops, the
temperature sweep's photos and seeds), restored automatically (``pipeline.restore``: global stage,
confidence scaling) at every K and temperature T (weights sigmoid(s_o / T): T < 1 pushes presence towards 0
or 1); mean PSNR over all cases and over the pairs. The check set stays out of the choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from uir_lora import pipeline
from uir_lora.bank.store import open_bank
from uir_lora.lab.evaluate.harness import default_cases, synthesise
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.router.temperature import DEFAULT_PHOTOS, SEED, training_photos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank", type=Path, default=Path("lora_bank/embedded-ffdnet"))
    parser.add_argument("--photos", type=int, default=DEFAULT_PHOTOS)
    parser.add_argument("--top-k", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--temperature", type=float, nargs="+", default=[1.0])
    parser.add_argument("--json", type=Path, help="write the per-case table here")
    args = parser.parse_args()
    bank, backbone = open_bank(args.bank), pipeline.default_backbone()
    settings = [(k, t) for k in args.top_k for t in args.temperature]
    scores: dict[str, dict[str, list[float]]] = {}
    for index, clean in enumerate(training_photos(args.photos)):
        for number, case in enumerate(default_cases()):
            degraded, _ = synthesise(clean, case, SEED + 97 * index + number)
            for top_k, temperature in settings:
                restored, _ = pipeline.restore(degraded, backbone, bank, top_k=top_k, temperature=temperature)
                scores.setdefault(f"K={top_k} T={temperature:g}", {}).setdefault(case.name, []).append(
                    psnr(restored, clean))
        print(f"photo {index + 1}/{args.photos}", flush=True)
    table = {}
    for setting, per_case in scores.items():
        cases = {name: sum(values) / len(values) for name, values in per_case.items()}
        pairs = [value for name, value in cases.items() if "+" in name]
        table[setting] = {"all": sum(cases.values()) / len(cases), "pairs": sum(pairs) / len(pairs), "cases": cases}
        print(f"{setting}: {table[setting]['all']:.2f} dB over all cases, {table[setting]['pairs']:.2f} over the pairs")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
