"""What a worker process knows of its group: its own slot and every worker's state.

The supervisor (:mod:`service.serving.workers`) shares one small array with its workers; each
worker writes its own slot and reads the others', so that readiness speaks for the whole
group whichever worker answers the probe. Light: the app imports it, the supervisor too.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

STARTING = 0
READY = 1
STOPPING = 2


@dataclass(frozen=True)
class WorkerGroup:
    """Worker ``index`` of ``len(states)``; ``states`` is a shared array of bytes."""

    index: int
    states: Any

    @property
    def size(self) -> int:
        """How many workers the group has."""
        return len(self.states)

    def mark(self, state: int) -> None:
        """Record this worker's state (STARTING, READY or STOPPING)."""
        self.states[self.index] = state

    def is_ready(self, index: int) -> bool:
        """Whether worker ``index`` is ready."""
        return bool(self.states[index] == READY)

    def not_ready(self) -> list[int]:
        """The workers that are not ready now."""
        return [i for i in range(self.size) if not self.is_ready(i)]

    def reload_all(self) -> None:
        """Ask the supervisor to make every worker check the store for a newer version."""
        os.kill(os.getppid(), signal.SIGHUP)
