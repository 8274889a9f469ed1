"""``restore`` over a folder as one job among several processes, resumable after a crash.

Outputs are written atomically (uir_lora.images.save_image renames a finished temporary file), so
an output that exists is complete unless its disk lost it; ``--resume`` still opens each one and
redoes any that cannot be read.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from PIL import Image

from ..distributed import ProcessShare

log = logging.getLogger(__name__)

Job = tuple[Path, Path]
"""(input file, output file)."""


def add_archive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", action="store_true",
                        help="skip inputs whose output is already written (to continue an interrupted run)")


def is_complete(path: Path) -> bool:
    """The file exists and decodes as an image (checksums and length, without decoding every pixel)."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except (OSError, SyntaxError, ValueError):  # PIL reports truncated or corrupt files through these
        return False


def pending_jobs(jobs: list[Job], share: ProcessShare, resume: bool) -> list[Job]:
    """This process's share of ``jobs``; with ``resume``, without those already done.

    Every process has checked every name before this (the barrier keeps a fast process from writing
    an output a slow one is still checking), then takes its slice of the same ordered list.
    """
    share.wait()
    mine = share.split(jobs)
    if not resume:
        return mine
    todo = []
    for source, target in mine:
        if not target.exists():
            todo.append((source, target))
        elif not is_complete(target):
            log.warning("%s is unreadable (cut short?); restoring %s again", target, source)
            todo.append((source, target))
    skipped = len(mine) - len(todo)
    if skipped:
        print(f"resume: {skipped} of {len(mine)} outputs already written, {len(todo)} to do")
    return todo
