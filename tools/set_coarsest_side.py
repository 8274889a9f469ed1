"""Make a bank's LoRA run coarse to fine, or flat again: its manifest entry's ``coarsest_side``.

    python tools/set_coarsest_side.py lora_bank/embedded-ffdnet raindrop 256     # 0: flat

The sampler then runs a pass whose every LoRA asks for it on the photo and on halved copies of it, as many as keep
the shorter side at or above the side (docs/engine.md); choose the side with tools/coarse_to_fine_probe.py. Only
that entry's field changes: the manifest is read and written by the bank's own reader and writer, every LoRA file
and every other field stay as they were.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uir_lora.bank.manifest import read_manifest, write_manifest
from uir_lora.errors import BankError


def set_coarsest_side(bank: Path, kind: str, side: int) -> int:
    """Write ``side`` as ``kind``'s ``coarsest_side`` in the bank's manifest; returns the side it had. The writer
    checks the whole manifest as the reader would before it replaces the file, so a bad side changes nothing."""
    manifest = read_manifest(bank)
    entry = manifest.lora(kind)
    before, entry.coarsest_side = entry.coarsest_side, side
    write_manifest(manifest, bank)
    return before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bank", type=Path, help="the bank folder")
    parser.add_argument("kind", help="the LoRA's name")
    parser.add_argument("side", type=int, help="the coarsest level's shorter side in px (0: run flat)")
    args = parser.parse_args(argv)
    try:
        before = set_coarsest_side(args.bank, args.kind, args.side)
    except BankError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.kind}: coarsest_side {before} -> {args.side}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
