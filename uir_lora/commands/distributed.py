"""One list of files shared out over the processes ``accelerate launch`` starts, on one machine or several.

Every process lists the same inputs in the same (sorted) order, and accelerate's
``PartialState.split_between_processes`` hands each process a contiguous, disjoint slice, so each
output has exactly one writer. Without a launcher (one process) accelerate is not imported at all:
it is an extra (``uir-lora[distributed]``), not something inference needs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ..extras import require

Item = TypeVar("Item")


def launched_processes() -> int:
    """How many processes the launcher started (its WORLD_SIZE; 1 when run directly)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True)
class ProcessShare:
    """This process's place among the launched ones; a single process owns everything."""

    index: int = 0
    count: int = 1
    device: torch.device | None = None
    """The device the launcher gave this process (its own GPU), or None without a launcher."""
    state: Any = None

    @classmethod
    def current(cls) -> ProcessShare:
        if launched_processes() <= 1:
            return cls()
        accelerate = require("accelerate", "distributed", "restoring over several processes")
        state = accelerate.PartialState()
        return cls(state.process_index, state.num_processes, state.device, state)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def split(self, items: Sequence[Item]) -> list[Item]:
        """This process's slice of ``items`` (all of them for a single process)."""
        if self.state is None:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def wait(self) -> None:
        """Block until every process reaches this point (nothing to wait for alone)."""
        if self.state is not None:
            self.state.wait_for_everyone()
