"""``uir-lora``: the command line over the same engine calls the ComfyUI nodes use."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from .errors import UIRError

# modules that add sub-commands with ``register(subparsers)``; kept in one table
COMMAND_MODULES = ("uir_lora.commands.restore", "uir_lora.commands.bank", "uir_lora.commands.train",
                   "uir_lora.commands.evaluate", "uir_lora.commands.router",
                   "uir_lora.commands.encoder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uir-lora",
                                     description="Universal image restoration with a routed LoRA bank.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (router weights, tiles)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return int(args.run(args) or 0)
    except (UIRError, FileNotFoundError) as exc:
        print(f"uir-lora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uir-lora: interrupted; finished files are kept, nothing half-written", file=sys.stderr)
        return 130


def existing_path(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return path


if __name__ == "__main__":
    sys.exit(main())
