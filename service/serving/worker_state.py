"""What a worker process knows of its group: its own slot, every worker's state, and the
models the group serves.

The supervisor (:mod:`service.serving.workers`) shares two small arrays and a folder with
its workers. Each worker writes its own slots and reads the others', so that readiness
speaks for the whole group whichever worker answers the probe, and a worker that changed
what the group serves knows when every other worker has followed. Light: the app imports
it, the supervisor too.

    shared folder (the supervisor's, removed when it exits)
      served.json ── {"generation": G, "models": [...]}: what every worker should serve;
                     absent until the first change through the API (then MMSERVE_MODELS)
      served.lock ── held while a worker changes served.json
    states[i]  ── STARTING, READY or STOPPING
    applied[i] ── the generation worker i has applied (negative: it failed to)
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTING = 0
READY = 1
STOPPING = 2

SERVED_FILE = "served.json"
_LOCK_FILE = "served.lock"


@dataclass(frozen=True)
class Served:
    """What the group should serve: the models, and the change's number (0: no change yet)."""

    generation: int
    models: tuple[str, ...] | None
    """None until the first change: each worker serves what its settings say."""


@dataclass(frozen=True)
class WorkerGroup:
    """Worker ``index`` of ``len(states)``; ``states`` and ``applied`` are shared arrays."""

    index: int
    states: Any
    applied: Any = None
    folder: Path | None = None

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
        """Ask the supervisor to make every worker re-read the labels, check the store for
        a newer version and follow ``served.json`` (SIGHUP to each)."""
        os.kill(os.getppid(), signal.SIGHUP)

    # -- what the group serves -----------------------------------------------------------

    @property
    def shares_models(self) -> bool:
        """Whether changes to what is served reach the other workers (a group of several
        with a shared folder)."""
        return self.size > 1 and self.folder is not None and self.applied is not None

    def served(self) -> Served:
        """What the group should serve now."""
        if self.folder is None:
            return Served(0, None)
        try:
            data = json.loads((self.folder / SERVED_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return Served(0, None)
        return Served(int(data["generation"]), tuple(data["models"]))

    def record(self, serving: list[str], add: str | None = None, remove: str | None = None) -> int:
        """Record a change for every worker to follow: ``add`` or ``remove`` a model (or
        neither: the labels changed) in what the group serves, which is ``serving`` (this
        worker's models) before the first change. Returns the change's generation."""
        assert self.folder is not None
        with open(self.folder / _LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # changes made at once in two workers both count
            now = self.served()
            models = set(now.models if now.models is not None else serving)
            if add is not None:
                models.add(add)
            if remove is not None:
                models.discard(remove)
            generation = now.generation + 1
            tmp = self.folder / f".{SERVED_FILE}.tmp"
            tmp.write_text(json.dumps({"generation": generation, "models": sorted(models)}))
            os.replace(tmp, self.folder / SERVED_FILE)
        return generation

    def mark_applied(self, generation: int, ok: bool = True) -> None:
        """Record that this worker has applied change ``generation`` (or failed to)."""
        self.applied[self.index] = generation if ok else -generation

    def applied_by(self, index: int) -> int:
        """The last change worker ``index`` has applied, failed or not."""
        return abs(int(self.applied[index]))

    def behind(self, generation: int) -> list[int]:
        """The ready workers that have not applied change ``generation`` yet (a starting
        worker reads ``served.json`` as it starts)."""
        return [i for i in range(self.size) if self.is_ready(i) and self.applied_by(i) < generation]

    def failed(self, generation: int) -> list[int]:
        """The workers whose latest change, at or after ``generation``, failed."""
        return [
            i
            for i in range(self.size)
            if int(self.applied[i]) < 0 and self.applied_by(i) >= generation
        ]
