"""Rain, snow or raindrop LoRAs on damage by the third synthesis (``uir_lora.lab.precipitation``).

    python tools/precipitation_probe.py rain CANDIDATE_BANK [MORE_BANKS ...]

For LoRAs trained without that synthesis it is a held-out model of the kind: the 9 validation interiors as
512² views and the 19 TRAIN scene photos at 512², the kind at severity 0.3 and 0.7 (one seeded draw per photo
and severity), restored by the kind's LoRA at weight 1 in the shipped bank and in each bank given; printed as the
mean PSNR gain over the input per set, severity and bank. A LoRA trained with ``--precipitation-share`` has seen
this synthesis, so its numbers here are not held out.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
from restore_heldout import photos_named

from uir_lora import pipeline
from uir_lora.bank.store import open_bank
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.evaluate.report import mean_gain_lines
from uir_lora.lab.precipitation import KINDS, degrade_precipitation

SEED = 5000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("banks", type=Path, nargs="+", help="bank folders holding candidate LoRAs of the kind")
    args = parser.parse_args()
    banks = {"shipped": pipeline.load_bank(), **{str(path): open_bank(path) for path in args.banks}}
    backbone = pipeline.default_backbone()
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for which in ("validation-512", "train-scenes"):
        for index, photo in enumerate(photos_named(which)):
            clean = photo[None]
            for severity in (0.3, 0.7):
                generator = torch.Generator().manual_seed(SEED + 17 * index + round(severity * 10))
                damaged = degrade_precipitation(clean, args.kind, generator, [severity])
                before = psnr(damaged, clean)
                for name, bank in banks.items():
                    out = pipeline.restore(damaged, backbone, bank, manual={args.kind: 1.0}, mode="manual")[0]
                    table[f"{which}:{args.kind}@{severity}"][name].append(psnr(out, clean) - before)
    print("\n".join(mean_gain_lines(table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
