"""The bench's small C load generators (``*_client.c`` beside this file), compiled once per
source version with the system's C compiler into the temporary folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path


def binary(source_name: str, libraries: Sequence[str] = ()) -> Path | None:
    """The program built from ``source_name`` (linked with ``libraries``, e.g. ``m``);
    None when no C compiler is installed or the source does not compile (said on stderr)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source = Path(__file__).with_name(source_name)
    # The headers beside it too (loadgen.h): a change to either builds anew.
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):
        digest.update(header.read_bytes())
    built_path = Path(tempfile.gettempdir()) / f"mmserve-{source.stem}-{digest.hexdigest()[:16]}"
    if not built_path.exists():
        partial = built_path.with_suffix(f".{os.getpid()}")
        command = [compiler, "-O2", "-o", str(partial), str(source)]
        command += [f"-l{library}" for library in libraries]
        built = subprocess.run(command, capture_output=True, text=True)
        if built.returncode != 0:
            print(f"{source.name} did not compile:\n{built.stderr}", file=sys.stderr)
            return None
        partial.replace(built_path)
    return built_path


def framed(requests: Iterable[bytes]) -> bytes:
    """Complete HTTP requests as the C clients read them from stdin (``read_requests`` in
    ``loadgen.h``): each as a decimal length, a newline and that many bytes."""
    return b"".join(b"%d\n%s" % (len(r), r) for r in requests)
