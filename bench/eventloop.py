"""Running a load generator's coroutine on the fastest event loop at hand."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(work: Coroutine[Any, Any, T]) -> T:
    """``work`` on a fresh uvloop event loop when uvloop is installed, else asyncio's: a
    generator that shares the server's CPUs adds less latency of its own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(work)
