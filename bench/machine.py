"""What the figures were measured on, recorded with every run."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

_PACKAGES = ("tensorflow", "keras", "fastapi", "uvicorn", "httpx", "numpy", "pillow")


def machine_info() -> dict[str, Any]:
    """Platform, CPUs (count, model, usable by this process, cgroup quota), RAM and the
    versions of the packages that shape the figures."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_quota": _cgroup_cpu_quota(),
        "cpu_model": _cpu_model(),
        "ram_total_bytes": psutil.virtual_memory().total,
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in _PACKAGES},
    }


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU time so far, all CPUs together, in clock ticks (``/proc/stat``)."""

    total: int
    steal: int

    def steal_pct_since(self, earlier: CpuTimes) -> float | None:
        """The share of the machine's CPU time between ``earlier`` and this reading that the
        host gave to others (a virtual machine's *steal*), in %."""
        elapsed = self.total - earlier.total
        return 100.0 * (self.steal - earlier.steal) / elapsed if elapsed > 0 else None


def cpu_times() -> CpuTimes | None:
    """The machine's CPU time so far, or None where ``/proc/stat`` is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: within user/nice]
    return CpuTimes(sum(fields[:8]), fields[7] if len(fields) > 7 else 0)


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _cgroup_cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 quota (containers), which os.cpu_count() does not see."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
