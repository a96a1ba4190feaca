"""Where a server's Python time goes: py-spy samples reduced to the top functions.

``py-spy record --format raw`` writes one line per distinct stack (``frame;frame;... N``,
root first). Each function's *own* share counts the samples where it is the innermost
frame; its *total* share counts the samples where it is anywhere on the stack (once per
stack, so recursion does not count twice). Shares are of all non-idle samples: py-spy
leaves out threads waiting on I/O or locks, so an event loop parked in ``epoll`` does not
show up, and native code (TensorFlow kernels, libjpeg) is charged to the Python function
that called it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


@dataclass(frozen=True)
class FunctionShare:
    """One function (``name (file)``) and its share of the samples, in percent."""

    function: str
    own_pct: float
    total_pct: float


@dataclass(frozen=True)
class Profile:
    """The reduced profile of one sampling run."""

    samples: int
    top_own: list[FunctionShare]
    top_total: list[FunctionShare]


def executable() -> str | None:
    """py-spy from the running interpreter's environment or ``PATH``, or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record_command(
    py_spy: str, pid: int, duration_s: float, output: Path, rate: int = 100
) -> list[str]:
    """Sample ``pid`` and its subprocesses (worker processes) for ``duration_s``."""
    return [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration_s))),
        "--rate",
        str(rate),
        "--subprocesses",
        "--format",
        "raw",
        "--output",
        str(output),
    ]


def start(py_spy: str, pid: int, duration_s: float, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling in the background (it stops by itself after ``duration_s``)."""
    return subprocess.Popen(
        record_command(py_spy, pid, duration_s, output),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def reduce(raw: str, top: int = 15) -> Profile:
    """The ``top`` functions by own and by total share of the samples in ``raw``."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    stacks_of: dict[str, list[int]] = {}
    depth: dict[str, int] = {}
    samples = 0
    for number, line in enumerate(raw.splitlines()):
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # With --subprocesses each stack starts with 'process N:"<command line>";', and a
        # command line can hold ';' itself (python -c "...; spawn_main(...)").
        if stack.startswith("process "):
            end = stack.find('";')
            stack = stack[end + 2 :] if end >= 0 else ""
        frames = [_function(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("thread (")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for level, function in enumerate(frames):
            if function in depth and stacks_of[function][-1] == number:
                continue
            total[function] += count
            stacks_of.setdefault(function, []).append(number)
            depth[function] = max(depth.get(function, 0), level)
    if samples == 0:
        return Profile(0, [], [])

    def share(function: str) -> FunctionShare:
        return FunctionShare(
            function, 100.0 * own[function] / samples, 100.0 * total[function] / samples
        )

    # A chain of callers found on exactly the same stacks (start-up, click, the event
    # loop's run...) says one thing: keep only its innermost function.
    innermost: dict[tuple[int, ...], str] = {}
    for function, stacks in stacks_of.items():
        key = tuple(stacks)
        if key not in innermost or depth[function] > depth[innermost[key]]:
            innermost[key] = function
    shown = set(innermost.values())
    return Profile(
        samples,
        [share(f) for f, _ in own.most_common(top)],
        [share(f) for f, _ in total.most_common() if f in shown][:top],
    )


def _function(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``: one entry per function, not per line."""
    return _LINE.sub(")", frame.strip())
