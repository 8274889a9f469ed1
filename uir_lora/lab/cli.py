"""``uir-lora``, the full command line: the runtime's restore and estimate, and the lab's commands."""

from __future__ import annotations

import argparse
import sys

from ..cli import COMMAND_MODULES
from ..cli import build_parser as build_command_line
from ..cli import main as run_command

LAB_COMMAND_MODULES = ("uir_lora.lab.commands.bank", "uir_lora.lab.commands.train",
                       "uir_lora.lab.commands.evaluate", "uir_lora.lab.commands.router",
                       "uir_lora.lab.commands.encoder")


def build_parser() -> argparse.ArgumentParser:
    return build_command_line(COMMAND_MODULES + LAB_COMMAND_MODULES)


def main(argv: list[str] | None = None) -> int:
    return run_command(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
