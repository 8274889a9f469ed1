"""Re-run only the temperature and top-K choice of ``uir-lora train-router`` on a bank (see
uir_lora/lab/router/temperature.py); ``train-router`` runs the same choice after every fit.

    python tools/choose_temperature.py --bank lora_bank/embedded-ffdnet [--photos 9] [--json F] [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from uir_lora.lab.router.temperature import DEFAULT_PHOTOS, record_choice, sweep, training_photos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=DEFAULT_PHOTOS)
    parser.add_argument("--json", type=Path, help="write the full table here")
    parser.add_argument("--write", action="store_true", help="store the best top-2 pair as the bank's default")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = sweep(args.bank, training_photos(args.photos))
    for key, mean in result["mean"].items():
        pairs = result["mean_pairs"][key]
        print(f"{key:>16}: mean PSNR {mean:.3f} dB, mixed pairs {pairs:.3f} dB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.write:
        top_k, temperature = record_choice(args.bank, result, f"first {args.photos} training photos",
                                           "python tools/choose_temperature.py --bank BANK --write")
        print(f"wrote top_k {top_k} and temperature {temperature:g} to {args.bank / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
