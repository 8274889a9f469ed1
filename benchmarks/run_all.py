"""Regenerate docs/benchmarks.md, its JSON and its plots: speed first, then quality (which reads the speed goals).

    python benchmarks/run_all.py [--multitask runs/multitask/ffdnet_multitask.safetensors] [eval options]

Every argument other than --skip-speed is passed on to ``uir-lora eval default --out docs``.
Each generated section names its command and the version and commit it ran at.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed  # noqa: E402  (the sibling script)

from uir_lora.lab.cli import main as cli_main  # noqa: E402


def main(argv: list[str]) -> int:
    docs = Path(__file__).resolve().parents[1] / "docs"
    if "--skip-speed" in argv:
        argv = [a for a in argv if a != "--skip-speed"]
    elif speed.main(["--out", str(docs)]) != 0:
        return 1
    return cli_main(["eval", "default", "--out", str(docs), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
