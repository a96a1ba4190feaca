"""Which versions of a model are served: ``latest`` (default), ``latest:N`` or a list.

The TF Serving convention: ``latest`` serves the highest version, ``latest:N`` the N
highest, and ``1,3`` exactly those versions (pinned: a hot reload never changes them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VersionPolicy:
    """``count`` newest versions, or exactly ``versions`` when given."""

    count: int = 1
    versions: tuple[int, ...] = ()

    @property
    def pinned(self) -> bool:
        """Whether the versions are fixed (a list), so new ones are never loaded."""
        return bool(self.versions)

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve among ``available`` (ascending)."""
        if self.versions:
            return [v for v in sorted(available) if v in self.versions]
        return sorted(available)[-self.count :]

    def __str__(self) -> str:
        if self.versions:
            return ",".join(str(v) for v in self.versions)
        return "latest" if self.count == 1 else f"latest:{self.count}"

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N`` (N >= 1) or comma-separated versions (``1,3``)."""
        value = text.strip().lower()
        if value == "latest":
            return cls()
        if value.startswith("latest:"):
            count = value.removeprefix("latest:")
            if count.isdigit() and int(count) >= 1:
                return cls(count=int(count))
        else:
            parts = [part.strip() for part in value.split(",")]
            if parts and all(part.isdigit() and int(part) >= 1 for part in parts):
                return cls(versions=tuple(sorted({int(part) for part in parts})))
        raise ValueError(
            f"invalid version policy {text!r}: use latest, latest:N or a list of versions"
        )
