"""Kernel lookup counts: how many references the kernel holds to each inode.

The kernel may use an inode number for as long as it holds a lookup on it, even after
the last name is gone (an unlinked file that is still open). An inode is destroyed only
when its link count is 0 *and* the kernel holds no lookups. Every call that returns an
entry to the kernel counts one lookup; ``forget`` gives them back.

Owner: ``Filesystem`` (one instance per node). Not persisted: after a restart the
kernel holds nothing, so every orphan left in the store is destroyed at start-up.
"""

from __future__ import annotations

from cfs.types import InodeId


class LookupCounts:
    def __init__(self) -> None:
        self._counts: dict[InodeId, int] = {}

    def add(self, ino: InodeId, n: int = 1) -> None:
        self._counts[ino] = self._counts.get(ino, 0) + n

    def forget(self, ino: InodeId, n: int) -> bool:
        """Drop ``n`` lookups; True when none are left."""
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
