"""Write-back cache of dirty blocks: small writes patch memory, not chunks.

Without it, every write smaller than a block would be stored on its own: a 4 KiB write
into a 64 KiB block costs a store operation, and the next write to the same block
another. Here the bytes written into a block stay in memory until the file is flushed
(close, fsync, the commit timer, or memory pressure) and are stored together then.

A cached block (``DirtyBlock``) holds only what was written into it, and where
(``extents``); the rest of the block is whatever the store holds. So a write never
reads the block's old bytes: a 4 KiB write into a cold 64 KiB block reads nothing from
disk. Whoever needs the whole block (a read, the flush) lays the written ranges over the
stored content (cfs.fs.data). Its bytes are as long as the furthest write into it: the
1 KiB of a small file is a 1 KiB bytearray, not a zero-filled 64 KiB one that the flush
then has to search back through for the last non-zero byte (26 us per small file,
measured).

Owner: ``Filesystem``. Invariants: a cached block's written ranges are newer than
whatever the store holds for them. Nothing here touches the store; the core decides
when to flush.

A file written through the cache also keeps what the writes did to its attributes
(``Written``: the furthest byte written, the time of the last write) until the flush
writes them into its inode record with its blocks, so a cached write is no store
operation at all. The core shows them in every attribute it hands out meanwhile.

Every block is counted at the full block size, whatever its length: that is the most
memory it can grow to, and the most storing it can add to the volume's bytes in use,
so it is what the core holds in reserve against a volume's size limit (cfs.fs.quota,
``volume_bytes``).

Concurrency: used only from the trio thread, between awaits, like the rest of the core.
"""

from __future__ import annotations

from dataclasses import dataclass

from cfs.codec import Inode
from cfs.types import InodeId, Slot, slot_of


@dataclass(slots=True)
class DirtyBlock:
    """The bytes written into one block since the file was last flushed."""

    data: bytearray
    """The written bytes at their offsets in the block; zeros between the written ranges
    and past them (those bytes are the store's, not these)."""
    extents: list[tuple[int, int]]
    """The written ranges ``[lo, hi)``: sorted, disjoint, not touching."""

    @classmethod
    def empty(cls) -> "DirtyBlock":
        return cls(bytearray(), [])

    def write(self, lo: int, piece: bytes | bytearray | memoryview) -> None:
        """Write ``piece`` at offset ``lo`` of the block."""
        hi = lo + len(piece)
        if lo > len(self.data):
            self.data.extend(bytes(lo - len(self.data)))
        self.data[lo:hi] = piece
        extents = self.extents
        if extents and extents[-1][0] <= lo <= extents[-1][1]:  # the common case: appending
            extents[-1] = (extents[-1][0], max(extents[-1][1], hi))
            return
        kept = []
        for start, end in extents:
            if end < lo or start > hi:
                kept.append((start, end))
            else:
                lo, hi = min(lo, start), max(hi, end)
        kept.append((lo, hi))
        kept.sort()
        self.extents = kept

    def covers(self, end: int) -> bool:
        """Whether the written bytes are the whole block, given that the stored content
        ends at ``end`` (zeros past it)."""
        return len(self.extents) == 1 and self.extents[0][0] == 0 and self.extents[0][1] >= end

    def overlay(self, content: bytearray) -> bytearray:
        """Lay the written ranges over ``content`` (the stored block) and return it."""
        data = self.data
        for lo, hi in self.extents:
            if lo > len(content):
                content.extend(bytes(lo - len(content)))
            content[lo:hi] = memoryview(data)[lo:hi]
        return content


@dataclass(slots=True)
class Written:
    """What cached writes did to a file's attributes since it was last flushed."""

    end: int
    """The end of the furthest write: the file is at least this long."""
    time_ns: int
    """When the last write came: the file's mtime, and its ctime unless that is later."""

    def apply(self, inode: Inode) -> None:
        """Write these into ``inode`` (the flush, or a copy shown to a caller)."""
        inode.size = max(inode.size, self.end)
        inode.mtime_ns = self.time_ns
        inode.ctime_ns = max(inode.ctime_ns, self.time_ns)

    def merge(self, newer: "Written") -> "Written":
        return Written(max(self.end, newer.end), max(self.time_ns, newer.time_ns))


class DirtyBlocks:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self._files: dict[InodeId, dict[int, DirtyBlock]] = {}
        self._block_size: dict[InodeId, int] = {}
        """Per file with cached blocks: its volume's block size, what each block counts."""
        self._volume_bytes: dict[Slot, int] = {}
        self._written: dict[InodeId, Written] = {}

    def volume_bytes(self, slot: Slot) -> int:
        """Bytes of cached blocks of the volume in ``slot``."""
        return self._volume_bytes.get(slot, 0)

    def _count(self, ino: InodeId, delta: int) -> None:
        self.bytes += delta
        slot = slot_of(ino)
        left = self._volume_bytes.get(slot, 0) + delta
        if left:
            self._volume_bytes[slot] = left
        else:
            self._volume_bytes.pop(slot, None)

    def get(self, ino: InodeId, n: int) -> DirtyBlock | None:
        blocks = self._files.get(ino)
        return blocks.get(n) if blocks else None

    def put(self, ino: InodeId, n: int, block: DirtyBlock, block_size: int) -> None:
        """Cache ``block`` as block n of a file with ``block_size`` blocks."""
        blocks = self._files.setdefault(ino, {})
        self._block_size[ino] = block_size
        if blocks.get(n) is None:
            self._count(ino, block_size)
        blocks[n] = block

    def wrote(self, ino: InodeId, end: int, time_ns: int) -> None:
        """A cached write ending at ``end`` came at ``time_ns``."""
        written = self._written.get(ino)
        if written is None:
            self._written[ino] = Written(end, time_ns)
        else:
            written.end = max(written.end, end)
            written.time_ns = max(written.time_ns, time_ns)

    def written(self, ino: InodeId) -> Written | None:
        """What cached writes did to the file's attributes, if it has any unflushed."""
        return self._written.get(ino)

    def blocks(self, ino: InodeId) -> dict[int, DirtyBlock]:
        """The file's dirty blocks by number (a live view: do not change it)."""
        return self._files.get(ino, {})

    def has(self, ino: InodeId) -> bool:
        """Whether the file has anything to flush: blocks, or attributes of cached writes."""
        return ino in self._files or ino in self._written

    def take(self, ino: InodeId) -> tuple[dict[int, DirtyBlock], Written | None]:
        """Remove and return the file's dirty blocks and written attributes (to store
        them, or to drop them)."""
        blocks = self._files.pop(ino, {})
        block_size = self._block_size.pop(ino, 0)
        if blocks:
            self._count(ino, -len(blocks) * block_size)
        return blocks, self._written.pop(ino, None)

    def give_back(self, ino: InodeId, blocks: dict[int, DirtyBlock], written: Written | None,
                  block_size: int) -> None:
        """Return what a failed flush took, under whatever was written since."""
        for n, block in blocks.items():
            newer = self.get(ino, n)
            if newer is not None:
                for lo, hi in newer.extents:
                    block.write(lo, memoryview(newer.data)[lo:hi])
            self.put(ino, n, block, block_size)
        if written is not None:
            newer_written = self._written.get(ino)  # not ``newer``: mypy keeps a variable's first type
            self._written[ino] = written if newer_written is None else written.merge(newer_written)

    def files(self) -> list[InodeId]:
        """Every file with something to flush."""
        return list(dict.fromkeys([*self._files, *self._written]))

    @property
    def over_limit(self) -> bool:
        return self.bytes > self.limit_bytes

    def __len__(self) -> int:
        """How many blocks are cached."""
        return sum(len(b) for b in self._files.values())
