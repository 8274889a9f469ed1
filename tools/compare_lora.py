"""One kind's LoRA in a candidate bank against the shipped one, on held-out interiors.

    python tools/compare_lora.py CANDIDATE_BANK KIND --partners haze noise [--photos 9] [--json F]

The 9 validation interiors (never trained on): the kind alone by both training syntheses (``degrade_alt`` and
the standard ``uir_lora.degrade``, severities 0.3 and 0.7), each partner with the kind (``degrade_alt``,
0.5), and three images the LoRA should leave alone (the clean photo, noise, defocus blur). Every image is
restored by the kind's LoRA at weight 1 in both banks, a pair also with both LoRAs at 1 and with the
partner's alone; printed as the mean PSNR gain over the input per case (the clean photo: PSNR to the
input). Manual weights only, so the router plays no part and a candidate bank needs no router files.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from uir_lora import pipeline
from uir_lora.bank.store import open_bank
from uir_lora.degrade import degrade as degrade_standard
from uir_lora.lab.degrade_alt import degrade as degrade_alt
from uir_lora.lab.evaluate.metrics import psnr
from uir_lora.lab.evaluate.publish import write_json
from uir_lora.lab.evaluate.report import mean_gain_lines
from uir_lora.lab.train.data import load_validation_images

SEED = 31000
CAMERA_CASES = (("noise",), ("defocus_blur",))


def cases(kind: str, partners: list[str]) -> list[tuple[str, tuple[str, ...], float | None]]:
    """(synthesis, kinds, severity); no kinds: the clean photo."""
    alone = [(synthesis, (kind,), severity) for synthesis in ("alt", "standard") for severity in (0.3, 0.7)]
    pairs = [("alt", (partner, kind), 0.5) for partner in partners]
    others = [("alt", (), None)] + [("alt", other, 0.5) for other in CAMERA_CASES]
    return alone + pairs + others


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("candidate", type=Path, help="a bank folder holding the candidate LoRA")
    parser.add_argument("kind")
    parser.add_argument("--partners", nargs="*", default=[], help="kinds to pair the kind with")
    parser.add_argument("--photos", type=int, default=9, help="the first N validation interiors")
    parser.add_argument("--json", type=Path, help="write the per-image rows here")
    args = parser.parse_args()
    banks = {"shipped": pipeline.load_bank(), "candidate": open_bank(args.candidate)}
    backbone = pipeline.default_backbone()
    validation = load_validation_images()[: args.photos]
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    rows = []
    for index, clean in enumerate(validation.split(1)):
        for number, (synthesis, kinds, severity) in enumerate(cases(args.kind, args.partners)):
            generator = torch.Generator().manual_seed(SEED + 100 * index + number)
            damage = degrade_alt if synthesis == "alt" else degrade_standard
            damaged = damage(clean, list(kinds), generator=generator, severity=severity).clamp(0, 1) if kinds else clean
            before = psnr(damaged, clean) if kinds else 0.0
            weights = {"the LoRA": {args.kind: 1.0}}
            if len(kinds) == 2:
                weights |= {"both": dict.fromkeys(kinds, 1.0), "partner": {kinds[0]: 1.0}}
            case = f"{synthesis}:{'+'.join(kinds) or 'clean'}" + (f"@{severity}" if severity is not None else "")
            for bank_name, bank in banks.items():
                for setting, manual in weights.items():
                    out = pipeline.restore(damaged, backbone, bank, manual=manual, mode="manual")[0]
                    gain = psnr(out, clean) - before
                    table[case][f"{setting} {bank_name}"].append(gain)
                    rows.append({"photo": index, "case": case, "setting": setting, "bank": bank_name, "gain": gain})
        print(f"photo {index + 1}/{len(validation)}", flush=True)
    print("\n".join(mean_gain_lines(table, overall=False)))
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
