"""Write-back cache of dirty blocks: small writes patch memory, not chunks.

Without it, every write smaller than a block reads the block's chunk, patches it, hashes
it and stores a new chunk: a 4 KiB write into a 64 KiB block costs a 64 KiB hash and
put, and the next write to the same block does it all again. Here a written block stays
in memory, whole, until the file is flushed (close, fsync, the commit timer, or memory
pressure); it is then hashed and stored once.

Owner: ``Filesystem``. Invariants: a cached block holds the block's full current
content (bytes past end of file are zero), and it is newer than whatever the store holds
for that block. Nothing here touches the store; the core decides when to flush.

The bytes held are counted per volume too (``volume_bytes``): storing a cached block can
add at most its length to the volume's bytes in use, so that is what the core holds in
reserve against a volume's size limit (cfs.fs.quota).

Concurrency: used only from the trio thread, between awaits, like the rest of the core.
"""

from __future__ import annotations

from cfs.types import InodeId, Slot, slot_of


class DirtyBlocks:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self._files: dict[InodeId, dict[int, bytearray]] = {}
        self._volume_bytes: dict[Slot, int] = {}

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

    def get(self, ino: InodeId, n: int) -> bytearray | None:
        blocks = self._files.get(ino)
        return blocks.get(n) if blocks else None

    def put(self, ino: InodeId, n: int, block: bytearray) -> None:
        blocks = self._files.setdefault(ino, {})
        old = blocks.get(n)
        blocks[n] = block
        self._count(ino, len(block) - (0 if old is None else len(old)))

    def blocks(self, ino: InodeId) -> dict[int, bytearray]:
        """The file's dirty blocks by number (a live view: do not change it)."""
        return self._files.get(ino, {})

    def has(self, ino: InodeId) -> bool:
        return ino in self._files

    def take(self, ino: InodeId) -> dict[int, bytearray]:
        """Remove and return the file's dirty blocks (to store them, or to drop them)."""
        blocks = self._files.pop(ino, {})
        if blocks:
            self._count(ino, -sum(len(b) for b in blocks.values()))
        return blocks

    def give_back(self, ino: InodeId, blocks: dict[int, bytearray]) -> None:
        """Return blocks whose store failed, without overwriting newer ones written since."""
        for n, block in blocks.items():
            if self.get(ino, n) is None:
                self.put(ino, n, block)

    def truncate(self, ino: InodeId, size: int, block_size: int) -> None:
        """Drop blocks past ``size`` and zero the tail of the block that holds it."""
        blocks = self._files.get(ino)
        if not blocks:
            return
        keep = (size + block_size - 1) // block_size
        for n in [n for n in blocks if n >= keep]:
            self._count(ino, -len(blocks.pop(n)))
        tail = size % block_size
        if tail and (size // block_size) in blocks:
            block = blocks[size // block_size]
            block[tail:] = bytes(len(block) - tail)
        if not blocks:
            del self._files[ino]

    def files(self) -> list[InodeId]:
        return list(self._files)

    @property
    def over_limit(self) -> bool:
        return self.bytes > self.limit_bytes

    def __len__(self) -> int:
        return sum(len(b) for b in self._files.values())
