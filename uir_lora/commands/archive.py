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

from .distributed import ProcessShare

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

    Every process has checked every name before this, and lists the finished outputs before any
    process writes (the barriers), so all of them split the same two ordered lists: the work left,
    shared out evenly, and the finished outputs, each re-read by one process and redone if broken.
    """
    share.wait()
    if not resume:
        return share.split(jobs)
    written = [target.exists() for _, target in jobs]
    done = [job for job, exists in zip(jobs, written) if exists]
    todo = [job for job, exists in zip(jobs, written) if not exists]
    share.wait()
    broken = [job for job in share.split(done) if not is_complete(job[1])]
    for source, target in broken:
        log.warning("%s is unreadable (cut short?); restoring %s again", target, source)
    if done and share.is_main:
        print(f"resume: {len(done)} of {len(jobs)} outputs already written, {len(todo)} to do")
    return share.split(todo) + broken
