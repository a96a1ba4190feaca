"""The peer servers' virtual environments, under ``bench/.peers/<name>`` (git-ignored).

Each peer runs in its own venv from ``bench/peers/<name>.txt`` (its framework pinned to
the version the figures are quoted for, TensorFlow, Keras and Pillow pinned to the
service's), so no peer's dependencies touch the project's. A venv is created on first
use, with a message; when it cannot be created the peer is skipped with the reason.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.servers import ROOT

PEERS_DIR = ROOT / "bench" / ".peers"
REQUIREMENTS_DIR = ROOT / "bench" / "peers"
STAMP = ".bench-installed"
INSTALL_TIMEOUT_S = 45 * 60.0
# Packages whose versions must match the service's for a like-for-like comparison.
MATCHED = ("tensorflow", "keras", "pillow", "numpy")


@dataclass(frozen=True)
class PeerEnv:
    """A ready peer venv and the versions installed in it."""

    name: str
    path: Path
    versions: dict[str, str]

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.path / "bin" / "python"

    def mismatches(self) -> list[str]:
        """``package peer-version != service-version`` for each matched package that differs."""
        out = []
        for package in MATCHED:
            ours = _our_version(package)
            theirs = self.versions.get(package)
            if ours and theirs != ours:
                out.append(f"{package} {theirs} != {ours}")
        return out


def requirements(name: str) -> Path:
    """The requirements file of peer ``name``."""
    return REQUIREMENTS_DIR / f"{name}.txt"


def ensure(name: str, progress: Callable[[str], None]) -> PeerEnv | None:
    """The venv of peer ``name``, created (or re-created when its requirements changed);
    None, after saying why, when it cannot be."""
    reqs = requirements(name)
    path = PEERS_DIR / name
    digest = hashlib.sha256(reqs.read_bytes()).hexdigest()
    stamp = path / STAMP
    if not (stamp.is_file() and stamp.read_text().strip() == digest):
        log = PEERS_DIR / f"{name}.install.log"
        progress(
            f"{name}: creating its venv in {_shown(path)} from {_shown(reqs)} (first run only; "
            f"about 2-10 minutes, TensorFlow is large; log: {_shown(log)})"
        )
        try:
            _install(path, reqs, log)
        except (OSError, subprocess.SubprocessError) as exc:
            progress(f"{name}: skipped, its venv could not be created ({exc}); see {_shown(log)}")
            return None
        stamp.write_text(digest + "\n")
    try:
        versions = _versions(path / "bin" / "python")
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        progress(f"{name}: skipped, its venv does not work ({exc})")
        return None
    return PeerEnv(name, path, versions)


def _install(path: Path, reqs: Path, log: Path) -> None:
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    (path / STAMP).unlink(missing_ok=True)
    with log.open("wb") as out:
        if not (path / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=300,
            )
        # nice: the install competes with nothing measured, but with everything else.
        subprocess.run(
            [
                "nice",
                "-n",
                "10",
                str(path / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(reqs),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=True,
            timeout=INSTALL_TIMEOUT_S,
        )


def _versions(python: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        f"names = {list(MATCHED)!r}\n"
        "out = {}\n"
        "for n in names:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def _our_version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
