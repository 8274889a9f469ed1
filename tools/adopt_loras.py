"""Copy re-trained LoRAs into a shipped bank, only where they beat the shipped one on validation.

    python tools/adopt_loras.py SOURCE_BANK TARGET_BANK NAME [NAME ...] [--dry-run] [--force]

For each NAME: if SOURCE's validation psnr_out beats TARGET's, its .safetensors file, its global adapter
(if it has one) and its entry's provenance / validation / conditioning / measured / global_stage / coarsest_side
replace TARGET's (atomic writes, under the bank's lock). The entry's embedding, its position in the list and the
manifest's router section stay as they are. ``--force`` adopts without that comparison: for LoRAs whose
task changed (trained through a global stage), whose validation no longer compares with the old one;
measure them on the check set instead (benchmarks/wild.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uir_lora.bank.manifest import MANIFEST_NAME, read_manifest, write_manifest
from uir_lora.bank.store import read_lora_file
from uir_lora.bank.writer import save_lora_file
from uir_lora.lab.commands.train import bank_lock

FIELDS = ("provenance", "validation", "conditioning", "measured", "global_stage", "coarsest_side")
"""What travels with a LoRA's file: how it was made and how the sampler runs it (a LoRA trained through the pyramid
runs through it; one trained on a conditioning value read from each photo reads it at inference too)."""
WRITTEN_WHEN_SET = ("measured", "global_stage", "coarsest_side")
"""Fields the manifest leaves out when empty, so adopting an empty one removes the key."""


def _added_nulls(raw: object, written: object, path: str = "") -> list[str] | None:
    """Paths of keys that ``written`` adds empty (null or ""); None when it differs from ``raw`` otherwise."""
    if isinstance(raw, dict) and isinstance(written, dict):
        added: list[str] = []
        for key in raw.keys() | written.keys():
            if key not in raw and written[key] in (None, ""):  # a newer optional field, at its empty default
                added.append(f"{path}/{key}")
                continue
            if key not in written:
                return None
            inner = _added_nulls(raw[key], written[key], f"{path}/{key}")
            if inner is None:
                return None
            added += inner
        return added
    if isinstance(raw, list) and isinstance(written, list) and len(raw) == len(written):
        parts = [_added_nulls(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(raw, written))]
        return None if any(p is None for p in parts) else [x for p in parts for x in p]
    return [] if raw == written else None


def adopt(source: Path, target: Path, names: list[str], dry_run: bool = False, force: bool = False) -> list[str]:
    """Names adopted (those whose source psnr_out is higher); the rest are reported and left alone."""
    new = read_manifest(source)
    adopted = []
    with bank_lock(target):
        raw = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
        manifest = read_manifest(target)
        for name in names:
            old_entry, new_entry = manifest.lora(name), new.lora(name)
            old_psnr, new_psnr = old_entry.validation.get("psnr_out"), new_entry.validation.get("psnr_out")
            if (old_entry.rank, old_entry.alpha, old_entry.target_modules) != (
                    new_entry.rank, new_entry.alpha, new_entry.target_modules):
                raise SystemExit(f"{name}: rank/alpha/targets differ between the banks; cannot adopt")
            better = force or old_psnr is not None and new_psnr is not None and new_psnr > old_psnr
            verdict = ("adopt" if better else "keep") + (" (forced)" if force else "")
            print(f"{name}: shipped psnr_out {old_psnr} -> retrained {new_psnr}: {verdict}")
            if not better:
                continue
            raw_entry = next(e for e in raw["loras"] if e["name"] == name)
            for key in FIELDS:
                setattr(old_entry, key, getattr(new_entry, key))
                raw_entry[key] = getattr(new_entry, key)
                if key in WRITTEN_WHEN_SET and not raw_entry[key]:
                    del raw_entry[key]
            adopted.append(name)
        # only the adopted fields may change (and fields this engine version adds as null): anything else
        # would mean this code drops or rewrites manifest fields
        added = _added_nulls(raw, json.loads(json.dumps(manifest.to_json())))
        if added is None:
            raise SystemExit("the manifest round-trip would change fields other than the adopted ones; aborting")
        if added:
            print(f"note: this engine version writes its new optional fields empty: {', '.join(added)}")
        if dry_run or not adopted:
            return adopted
        for name in adopted:
            entry = manifest.lora(name)
            metadata = {"name": name, "rank": entry.rank, "alpha": entry.alpha, "bank": manifest.name,
                        "backbone_fingerprint": manifest.backbone_fingerprint,
                        "target_modules": json.dumps(entry.target_modules)}
            save_lora_file(read_lora_file(source / new.lora(name).file), target / entry.file, metadata)
            if entry.global_stage:
                save_lora_file(read_lora_file(source / entry.global_stage), target / entry.global_stage,
                               {"name": name, "bank": manifest.name, "role": "global adapter"})
        write_manifest(manifest, target)
    return adopted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--force", action="store_true", help="adopt without comparing validation scores")
    args = parser.parse_args(argv)
    print("adopted:", adopt(args.source, args.target, args.names, args.dry_run, args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
