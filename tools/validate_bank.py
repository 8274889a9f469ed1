"""Validate LoRAs of a bank along the inference path (global adapter first) and record the scores.

    python tools/validate_bank.py BANK_DIR NAME [NAME ...]

For each NAME: the fixed validation split (lab/train/validate.py: seeded degradations of the 9 held-out
photos) through the LoRA at weight 1, after the kind's global adapter when it has one; the result
replaces the entry's ``validation`` in the manifest (written atomically). Nothing else changes. Used when
LoRAs arrive from a trainer that does not validate (the joint trainer, tools/train_global_stage.sh).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.bank.store import open_bank
from uir_lora.lab.commands.train import bank_lock
from uir_lora.lab.train.data import DEFAULT_DATA_DIR, load_validation_images
from uir_lora.lab.train.validate import set_adapter_enabled, validate
from uir_lora.pipeline import default_backbone


def validate_entries(bank_dir: Path, names: list[str], data_dir: Path = DEFAULT_DATA_DIR) -> dict[str, dict]:
    bank = open_bank(bank_dir)
    backbone = default_backbone()
    images = load_validation_images(data_dir)
    adapters = bank.attach(backbone)
    results = {}
    try:
        for name in names:
            entry = bank.manifest.lora(name)
            results[name] = validate(backbone, name, images, entry.conditioning, adapters[name],
                                     global_stage=bank.global_adapter(name))
            print(f"{name}: input {results[name]['psnr_in']} -> {results[name]['psnr_out']} dB")
    finally:
        set_adapter_enabled(backbone, None)
    with bank_lock(bank_dir):
        manifest = read_manifest(bank_dir)
        for name, result in results.items():
            manifest.lora(name).validation = result
        write_manifest(manifest, bank_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank", type=Path)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    validate_entries(args.bank, args.names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
