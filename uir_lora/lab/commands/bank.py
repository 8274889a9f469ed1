"""``uir-lora bank list|info``."""

from __future__ import annotations

import argparse
import sys

from ...errors import UIRError
from ...pipeline import DEFAULT_BANK, bank_roots, list_banks, load_bank


def register(subparsers: argparse._SubParsersAction) -> None:
    bank = subparsers.add_parser("bank", help="list banks or show one bank's LoRAs")
    actions = bank.add_subparsers(dest="bank_command", required=True)
    show_list = actions.add_parser("list", help="banks found in lora_bank/ and --bank-dir folders")
    show_list.add_argument("--bank-dir", action="append", default=[])
    show_list.set_defaults(run=run_list)
    info = actions.add_parser("info", help="one bank's backbone, router defaults and LoRAs")
    info.add_argument("name", nargs="?", default=DEFAULT_BANK)
    info.add_argument("--bank-dir", action="append", default=[])
    info.set_defaults(run=run_info)
    from .router import register_bank_add  # `bank add` lives with the router commands

    register_bank_add(actions)


def run_list(args: argparse.Namespace) -> int:
    """Every bank found; a broken one is named with its problem and the others are still listed (exit 1)."""
    names = list_banks(args.bank_dir)
    print(f"banks in {', '.join(str(r) for r in bank_roots(args.bank_dir))}:")
    broken = []
    for name in names:
        try:
            bank = load_bank(name, args.bank_dir)
        except (UIRError, OSError) as exc:
            broken.append(name)
            print(f"  {name:<24} BROKEN: {exc}")
            continue
        print(f"  {name:<24} {len(bank.manifest.loras):>3} LoRAs  backbone {bank.manifest.backbone_family}")
    if broken:
        print(f"uir-lora: {len(broken)} bank(s) cannot be used: {', '.join(broken)}; fix or remove them",
              file=sys.stderr)
        return 1
    return 0


def _db(value: object) -> str:
    """A validation PSNR for display; the clean LoRA records psnr_in as null (its input is exact)."""
    return f"{value:.1f}" if isinstance(value, (int, float)) else "exact"


def run_info(args: argparse.Namespace) -> int:
    manifest = load_bank(args.name, args.bank_dir).manifest
    router = manifest.router
    print(f"bank {manifest.name}: {manifest.description}")
    print(f"backbone {manifest.backbone_family} {manifest.backbone_fingerprint}; encoder {manifest.encoder.name} "
          f"(dim {manifest.encoder.dim})")
    print(f"router: top_k {router.top_k}, temperature {router.temperature}, {router.normalisation}, "
          f"unknown below {router.unknown_threshold}"
          f"{'' if router.unknown_margin is None else f' or unknown-class margin above {router.unknown_margin}'}"
          f"{'' if router.unknown_residual is None else f' or subspace residual above {router.unknown_residual}'}")
    print(f"{'LoRA':<16}{'rank':>5}{'alpha':>7}  {'validation':<34} description")
    for entry in manifest.loras:
        val = entry.validation
        numbers = f"{_db(val.get('psnr_in'))} -> {_db(val.get('psnr_out'))} dB" if "psnr_out" in val else "-"
        print(f"{entry.name:<16}{entry.rank:>5}{entry.alpha:>7.0f}  {numbers:<34} {entry.description}")
    return 0
