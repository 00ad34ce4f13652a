"""Kernel lookup counts and open handles: what the kernel still uses of each inode.

Every call that returns an entry to the kernel counts one lookup; ``forget`` gives them
back. An inode without names is destroyed once nothing uses it any more: for a regular
file, when no handle is open (so unlink frees space at once when the file is closed);
for anything else, when the kernel holds no lookup (a directory may be a process's
working directory; FIFOs and device nodes are opened without an open reaching us).

Owner: ``Filesystem`` (one instance per node). Not persisted: after a restart the
kernel holds nothing, so every orphan left in the store is destroyed at start-up.
"""

from __future__ import annotations

from typing import Iterator

from cfs.types import InodeId


class RefCounts:
    """A count per inode; an inode with no count is not held."""

    def __init__(self) -> None:
        self._counts: dict[InodeId, int] = {}

    def add(self, ino: InodeId, n: int = 1) -> None:
        self._counts[ino] = self._counts.get(ino, 0) + n

    def drop(self, ino: InodeId, n: int = 1) -> bool:
        """Drop ``n``; True when none are left."""
        left = self._counts.get(ino, 0) - n
        if left > 0:
            self._counts[ino] = left
            return False
        self._counts.pop(ino, None)
        return True

    def held(self, ino: InodeId) -> bool:
        return ino in self._counts

    def __len__(self) -> int:
        return len(self._counts)

    def __iter__(self) -> Iterator[InodeId]:
        """The inodes held."""
        return iter(self._counts)

