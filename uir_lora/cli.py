"""``uir-lora``: the command line over the same engine calls the ComfyUI nodes use."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import NoReturn

from .errors import InputError, UIRError, parse_number

# modules that add sub-commands with ``register(subparsers)``; kept in one table
COMMAND_MODULES = ("uir_lora.commands.restore", "uir_lora.commands.bank", "uir_lora.commands.train",
                   "uir_lora.commands.evaluate", "uir_lora.commands.router",
                   "uir_lora.commands.encoder")


class CommandLineParser(argparse.ArgumentParser):
    """argparse, with its refusals reported like every other bad input (``uir-lora: error: ...``, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message}; see `{self.prog} --help`")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="uir-lora",
                                     description="Universal image restoration with a routed LoRA bank.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (router weights, tiles)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                            format="%(levelname)s %(message)s")
        return int(args.run(args) or 0)
    except (UIRError, FileNotFoundError) as exc:
        print(f"uir-lora: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system refused (permissions, full disk, a name too long): no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"uir-lora: error: {where}{exc.strerror or exc}; check the path and its permissions", file=sys.stderr)
        return 2
    except MemoryError:
        print("uir-lora: error: out of memory; lower --tile or --max-pixels, or restore smaller images",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uir-lora: interrupted; finished files are kept, nothing half-written", file=sys.stderr)
        return 130


def existing_path(text: str) -> Path:
    path = Path(text)
    try:
        path.stat()
    except FileNotFoundError:
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder") from None
    except OSError as exc:  # e.g. a name over 255 bytes, or a loop of symlinks
        raise argparse.ArgumentTypeError(f"{text[:80]}: {exc.strerror or exc}") from None
    return path


def whole_number(text: str) -> int:
    """argparse type: a whole number in plain ASCII digits (int() would also take '1_0' and '٣')."""
    try:
        return int(parse_number("the value", text, whole=True))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def decimal_number(text: str) -> float:
    """argparse type: a finite decimal number in plain ASCII (float() would also take 'nan', '1_0', '٣')."""
    try:
        return float(parse_number("the value", text))
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
