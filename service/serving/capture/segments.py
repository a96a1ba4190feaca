"""Captured rows and images on disk, in segments, within a disk budget.

One worker's files in the capture folder (``stem`` = ``capture-<UTC time>-w<worker>-<pid>-<n>``,
so that names sort by the time a segment was opened and no two processes share one)::

    <capture_dir>/
      <stem>.jsonl              a closed segment: whole rows, a valid manifest once labelled
      images/<stem>/000001.png  its images, named by the row's number and the image's format
      .<stem>.jsonl.tmp         the open segment, renamed to <stem>.jsonl when it closes
      .spare-w<worker>/<id>/    the emptied image folder of a deleted segment, kept for reuse

A segment closes when it holds a quarter of the worker's share of the budget, when it has
been open ``segment_s`` seconds, and at shutdown; a reader never sees a half-written row,
and a crash loses at most the open segment (the next start of that worker deletes it).
Image files are written in place: until its segment is renamed, no row names them. Before
a write would take the worker's files past its share (``max_bytes / workers``, every file
counted in whole 4 KiB blocks), its oldest closed segments are deleted, rows first, then
images.

A deleted segment's image files are emptied (their bytes freed) and its image folder,
files and all, is moved to the worker's spare folder in one rename; the next segment takes
that folder over, and its images are written into the emptied files of the same names.
Writing an image is then an open, a write and a close: no file is created, renamed or
deleted, and no folder changes, where a new file per image would cost a file system some
directory and inode work per image, work that on some file systems grows with the files
deleted before it (ext4 without a journal scans past every inode freed in the last half
minute, about 100 µs per file at a few hundred files a second). Files of the taken-over
folder that the segment did not write (it held fewer images, or one in another format)
are deleted when it closes. At most ``_SPARE_FOLDERS`` folders are kept; their own sizes
count in the share, their emptied files take no block.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

BLOCK = 4096
"""Files are counted in whole blocks of this size (the usual file-system block)."""

IMAGES = "images"
_STEM = re.compile(r"capture-\d{8}T\d{12}Z-w(\d+)-\d+-\d{6}")
_SEGMENTS_PER_SHARE = 4
_PATH_BOUND = 256  # the "image" member of a row: images/<stem>/<n>.<ext>
_SPARE = re.compile(r"\.spare-w(\d+)")
_SPARE_FOLDERS = 2
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
_EMPTIED_FILE = os.O_WRONLY | os.O_NOFOLLOW
_ROWS = json.JSONEncoder(ensure_ascii=False)  # one encoder for every row, not one per row


class BudgetExceeded(Exception):
    """One row with its image is larger than the worker's whole share of the budget."""


def blocks(size: int) -> int:
    """``size`` bytes rounded up to whole blocks."""
    return -(-size // BLOCK) * BLOCK


def folder_usage(folder: Path) -> int:
    """What a capture folder holds, counted from the disk as the budget counts it: every
    file in whole blocks, one block per image folder and the spare folders' own sizes (for
    checks and reports; the writer keeps its own running total)."""
    files = sum(blocks(p.stat().st_size) for p in folder.rglob("*") if p.is_file())
    spare_folders = [*folder.glob(".spare-w*"), *folder.glob(".spare-w*/*/")]
    spares = sum(blocks(p.stat().st_size) for p in spare_folders if p.is_dir())
    images = folder / IMAGES
    return files + spares + BLOCK * sum(1 for p in images.iterdir() if p.is_dir())


@dataclass
class _Segment:
    stem: str
    cost: int  # its files, counted in blocks (its image folder included)
    rows_bytes: int = 0
    rows: int = 0
    opened: float = 0.0  # monotonic
    file: IO[bytes] | None = None
    images: str = ""  # its image folder
    emptied: set[str] = field(default_factory=set)  # emptied files it came with, not yet written


class SegmentStore:
    """One worker's segments. Not thread-safe: the capture writer's thread alone uses it."""

    def __init__(
        self, folder: Path, max_bytes: int, segment_s: float, worker: int = 0, workers: int = 1
    ) -> None:
        self.folder = folder
        self.share = max_bytes // workers
        self.segment_bytes = self.share // _SEGMENTS_PER_SHARE
        self.segment_s = segment_s
        self.worker = worker
        self.workers = workers
        self._closed: deque[_Segment] = deque()
        self._closed_cost = 0  # the sum of their costs
        self._open: _Segment | None = None
        self._count = 0
        self.pruned = 0
        """Closed segments deleted to keep to the budget, since start."""
        self.spare_folder = folder / f".spare-w{worker}"
        # Emptied image folders kept for reuse, each with the names of its (empty) files.
        self._spares: list[tuple[str, set[str]]] = []
        self._spare_prefix = f"{time.time_ns():x}"  # new names never meet a kept one's
        self._spare_names = 0
        self._spare_cost = 0

    @property
    def used(self) -> int:
        """Bytes (in blocks) of this worker's files now."""
        open_cost = self._open.cost if self._open is not None else 0
        return self._closed_cost + open_cost + self._spare_cost

    def adopt(self) -> None:
        """Create the folder; take over the closed segments a previous process of this
        worker left (worker 0 also those of workers beyond the count, from a run with more
        workers); delete its unfinished ones. Raises OSError when the folder is unusable."""
        (self.folder / IMAGES).mkdir(parents=True, exist_ok=True)
        closed = set()
        for path in self.folder.glob("capture-*.jsonl"):
            if self._mine(path.stem):
                closed.add(path.stem)
        for path in self.folder.glob(".capture-*.jsonl.tmp"):
            if self._mine(path.name[1:].removesuffix(".jsonl.tmp")):
                path.unlink(missing_ok=True)
        for path in (self.folder / IMAGES).iterdir():
            if self._mine(path.name) and path.name not in closed:
                shutil.rmtree(path, ignore_errors=True)
        self._adopt_spares()
        for stem in sorted(closed):
            self._closed.append(_Segment(stem, self._measure(stem)))
            self._closed_cost += self._closed[-1].cost
        self._prune(0)

    def write(self, image: bytes, extension: str, row: dict[str, Any]) -> None:
        """Write ``image`` and then ``row`` (given its ``image`` path) to the open segment.
        Raises :class:`BudgetExceeded`, or OSError when the disk refuses."""
        # The row's JSON object, opened again after its last member to add the image's path.
        body = _ROWS.encode(row)[:-1]
        # An upper bound of what the row adds: its line (the image path included), one
        # block of rounding, and the image folder's block when a segment opens.
        need = blocks(len(image)) + len(body.encode()) + _PATH_BOUND + 2 * BLOCK
        if need > self.share - BLOCK:
            raise BudgetExceeded(f"{need} bytes do not fit a share of {self.share}")
        segment = self._open
        if segment is not None and segment.cost + need > self.segment_bytes:
            self.close_open()
        self._prune(need)
        segment = self._open or self._start()
        segment.rows += 1
        name = f"{segment.rows:06d}.{extension}"
        # Written in place: no row names the file until its segment is renamed into place,
        # and a crash's half-written images go with their unfinished segment (adopt).
        self._put(segment, name, image)
        segment.cost += blocks(len(image))
        # The path needs no JSON escaping: the stem, the number and the extension are ASCII
        # letters, digits, dashes and dots.
        data = f'{body}, "image": "{IMAGES}/{segment.stem}/{name}"}}\n'.encode()
        assert segment.file is not None
        segment.file.write(data)
        segment.cost += blocks(segment.rows_bytes + len(data)) - blocks(segment.rows_bytes)
        segment.rows_bytes += len(data)

    def close_if_old(self) -> None:
        """Close the open segment once it has been open ``segment_s`` seconds."""
        left = self.seconds_left()
        if left is not None and left <= 0:
            self.close_open()

    def seconds_left(self) -> float | None:
        """Seconds until the open segment is due to close; None when none is open."""
        if self._open is None:
            return None
        return self._open.opened + self.segment_s - time.monotonic()

    def close_open(self) -> None:
        """Delete the files its image folder came with and did not use, flush the open
        segment to disk and rename it into place."""
        segment = self._open
        if segment is None:
            return
        self._open = None
        for name in segment.emptied:
            with contextlib.suppress(OSError):
                os.unlink(f"{segment.images}/{name}")
        segment.emptied = set()
        assert segment.file is not None
        segment.file.flush()
        os.fsync(segment.file.fileno())
        segment.file.close()
        segment.file = None
        os.rename(self._temporary(segment.stem), self.folder / f"{segment.stem}.jsonl")
        self._closed.append(segment)
        self._closed_cost += segment.cost

    def _start(self) -> _Segment:
        self._count += 1
        now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        stem = f"capture-{now}-w{self.worker}-{os.getpid()}-{self._count:06d}"
        images = os.path.join(self.folder, IMAGES, stem)
        emptied: set[str] = set()
        while self._spares:
            spare, names = self._spares.pop()
            try:
                os.rename(spare, images)
            except OSError:  # gone, or not ours to move: forget it
                shutil.rmtree(spare, ignore_errors=True)
                continue
            emptied = names
            break
        else:
            os.mkdir(images)
        self._spare_cost = self._measure_spares()
        segment = _Segment(stem, BLOCK, opened=time.monotonic(), images=images, emptied=emptied)
        segment.file = self._temporary(stem).open("xb")
        self._open = segment
        return segment

    def _prune(self, need: int) -> None:
        """Delete the oldest closed segments until ``need`` more bytes fit the share."""
        while self._closed and self.used + need > self.share:
            segment = self._closed.popleft()
            self._closed_cost -= segment.cost
            (self.folder / f"{segment.stem}.jsonl").unlink(missing_ok=True)
            self._recycle(os.path.join(self.folder, IMAGES, segment.stem))
            self.pruned += 1

    @staticmethod
    def _put(segment: _Segment, name: str, data: bytes) -> None:
        """Write image ``name`` of the open segment: into the emptied file of that name
        when its folder came with one, otherwise into a new file."""
        path = f"{segment.images}/{name}"
        fd = -1
        if name in segment.emptied:
            segment.emptied.discard(name)
            with contextlib.suppress(FileNotFoundError):  # deleted by someone else
                fd = os.open(path, _EMPTIED_FILE)
        if fd < 0:
            fd = os.open(path, _NEW_FILE, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def _recycle(self, images: str) -> None:
        """Delete a segment's image folder: its files emptied and the folder kept as a
        spare while fewer than ``_SPARE_FOLDERS`` are, otherwise deleted outright."""
        try:
            names = os.listdir(images)
        except FileNotFoundError:
            return
        if len(self._spares) >= _SPARE_FOLDERS:
            shutil.rmtree(images, ignore_errors=True)
            return
        try:
            for name in names:
                # Emptied by an open that truncates and a close, not by os.truncate: ext4
                # then does its flush-on-close of a truncated file now, on an empty file,
                # instead of after the next write into it.
                os.close(os.open(f"{images}/{name}", os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW))
            self._spare_names += 1
            spare = os.path.join(self.spare_folder, f"{self._spare_prefix}-{self._spare_names}")
            os.rename(images, spare)
        except OSError:  # not a plain file, or gone: no reuse of this folder
            shutil.rmtree(images, ignore_errors=True)
            return
        self._spares.append((spare, set(names)))
        self._spare_cost = self._measure_spares()

    def _measure_spares(self) -> int:
        """The spare folders' own sizes (their files are empty)."""
        cost = blocks(self.spare_folder.stat().st_size)
        for spare, _ in self._spares:
            with contextlib.suppress(FileNotFoundError):
                cost += blocks(os.stat(spare).st_size)
        return cost

    def _adopt_spares(self) -> None:
        """Take over this worker's spare folders (worker 0 deletes those of workers beyond
        the count): a file that is not empty, or anything past the cap, is deleted."""
        self.spare_folder.mkdir(exist_ok=True)
        if self.worker == 0:
            for path in self.folder.glob(".spare-w*"):
                match = _SPARE.fullmatch(path.name)
                if match is not None and int(match.group(1)) >= self.workers:
                    shutil.rmtree(path, ignore_errors=True)
        for entry in os.scandir(self.spare_folder):
            if not entry.is_dir(follow_symlinks=False) or len(self._spares) >= _SPARE_FOLDERS:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
                continue
            names = set()
            for file in os.scandir(entry.path):
                if file.is_file(follow_symlinks=False) and file.stat().st_size == 0:
                    names.add(file.name)
                elif file.is_dir(follow_symlinks=False):
                    shutil.rmtree(file.path, ignore_errors=True)
                else:
                    os.unlink(file.path)
            self._spares.append((entry.path, names))
        self._spare_cost = self._measure_spares()

    def _mine(self, stem: str) -> bool:
        match = _STEM.fullmatch(stem)
        if match is None:
            return False
        worker = int(match.group(1))
        return worker == self.worker or (self.worker == 0 and worker >= self.workers)

    def _measure(self, stem: str) -> int:
        cost = blocks((self.folder / f"{stem}.jsonl").stat().st_size) + BLOCK
        images = self.folder / IMAGES / stem
        if images.is_dir():
            cost += sum(blocks(p.stat().st_size) for p in images.iterdir())
        return cost

    def _temporary(self, stem: str) -> Path:
        return self.folder / f".{stem}.jsonl.tmp"
