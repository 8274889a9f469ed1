"""``uir-lora``: the command line over the same engine calls the ComfyUI nodes use."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import NoReturn

from .errors import InputError, UIRError

# modules that add sub-commands with ``register(subparsers)``: the runtime's own (restore, estimate);
# ``uir_lora.lab.cli`` builds the full command line from these and the lab's
COMMAND_MODULES = ("uir_lora.commands.restore",)


class CommandLineParser(argparse.ArgumentParser):
    """argparse, with its refusals reported like every other bad input (``uir-lora: error: ...``, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message}; see `{self.prog} --help`")


def build_parser(command_modules: tuple[str, ...] = COMMAND_MODULES) -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="uir-lora",
                                     description="Universal image restoration with a routed LoRA bank.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (router weights, tiles)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in command_modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run one command; every refusal is one ``uir-lora: error:`` line and exit status 2, never a traceback."""
    parser = parser or build_parser()
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


if __name__ == "__main__":
    sys.exit(main())
