"""File content: reading, writing and truncating through block maps.

A file of block size B is the sequence of blocks ``[n*B, (n+1)*B)``. Block n is either
a hole (no BLOCKS row: reads as zeros, takes no space) or a chunk holding the block's
bytes with trailing zeros cut off. Bytes past the end of the file inside the last block
are always zero (truncate clears them), so growing a file never resurrects old data.

Writes replace whole blocks: a partial block is read, patched and stored as a new chunk
(the old chunk loses a reference). ``Inode.stored_units`` is kept equal to the sum of
``ceil(len(chunk)/512)`` over the file's blocks; it is the file's st_blocks.
"""

from __future__ import annotations

from typing import Mapping

from cfs.codec import Inode, decode_block, encode_block, ino_u64_key, pack_u64
from cfs.hashing import chunk_id
from cfs.store import Op, Table, chunks
from cfs.types import ChunkId, InodeId

MAX_FILE_SIZE = (1 << 63) - 1


def _units(length: int) -> int:
    return (length + 511) // 512


def _block(op: Op, ino: InodeId, n: int) -> tuple[ChunkId, int] | None:
    raw = op.get(Table.BLOCKS, ino_u64_key(ino, n))
    return decode_block(raw) if raw is not None else None


def read(op: Op, ino: InodeId, inode: Inode, offset: int, size: int, block_size: int,
         dirty: Mapping[int, bytearray] | None = None) -> bytes:
    """Up to ``size`` bytes at ``offset``, zeros for holes; short at end of file.

    ``dirty`` holds blocks newer than the store (the write-back cache): they are read
    from there, and their stored chunks are not touched.
    """
    end = min(offset + size, inode.size)
    if offset >= end:
        return b""
    out = bytearray(end - offset)
    first, last = offset // block_size, (end - 1) // block_size
    dirty = dirty or {}
    rows = op.range(Table.BLOCKS, ino_u64_key(ino, first), ino_u64_key(ino, last + 1))
    for key, value in rows:
        n = int.from_bytes(key[8:16], "big")
        if n not in dirty:
            chunk, _length = decode_block(value)
            _copy(out, offset, end, n * block_size, chunks.get(op, chunk, f" at block {n}"))
    if dirty:
        for n in range(first, last + 1):
            block = dirty.get(n)
            if block is not None:
                _copy(out, offset, end, n * block_size, block)
    return bytes(out)


def _copy(out: bytearray, offset: int, end: int, block_start: int, data: bytes | bytearray) -> None:
    """Copy the part of a block (starting at file offset ``block_start``) that falls in [offset, end)."""
    lo = max(offset, block_start)
    hi = min(end, block_start + len(data))
    if hi > lo:
        out[lo - offset:hi - offset] = data[lo - block_start:hi - block_start]


def load_block(op: Op, ino: InodeId, n: int, block_size: int) -> bytearray:
    """The current content of block n, whole (zeros past the stored bytes)."""
    current = _block(op, ino, n)
    buf = bytearray(block_size)
    if current is not None:
        data = chunks.get(op, current[0], f" at block {n}")
        buf[:len(data)] = data
    return buf


def store_block(op: Op, ino: InodeId, inode: Inode, n: int, content: bytes | bytearray) -> None:
    """Make block n hold ``content`` (a hole when it is all zeros), releasing the old chunk."""
    trimmed = bytes(content).rstrip(b"\0")
    old = _block(op, ino, n)
    cid = chunk_id(trimmed) if trimmed else None
    if old is not None and old[0] == cid:
        return
    if old is not None:
        inode.stored_units -= _units(old[1])
    if trimmed:
        chunks.put(op, trimmed, cid)
        op.put(Table.BLOCKS, ino_u64_key(ino, n), encode_block(cid, len(trimmed)))  # type: ignore[arg-type]
        inode.stored_units += _units(len(trimmed))
    elif old is not None:
        op.delete(Table.BLOCKS, ino_u64_key(ino, n))
    if old is not None:
        chunks.decref(op, old[0])


def write(op: Op, ino: InodeId, inode: Inode, offset: int, data: bytes, block_size: int) -> int:
    """Write ``data`` at ``offset``; the caller saves ``inode`` (size, stored_units changed)."""
    if not data:
        return 0
    view = memoryview(data)
    end = offset + len(data)
    pos = offset
    while pos < end:
        n = pos // block_size
        block_start = n * block_size
        lo = pos - block_start
        hi = min(block_size, end - block_start)
        piece = view[pos - offset:pos - offset + (hi - lo)]
        if lo == 0 and hi == block_size:
            content: bytes | bytearray = piece.tobytes()
        else:
            content = load_block(op, ino, n, block_size)
            content[lo:hi] = piece
        store_block(op, ino, inode, n, content)
        pos = block_start + hi
    inode.size = max(inode.size, end)
    return len(data)


def truncate(op: Op, ino: InodeId, inode: Inode, new_size: int, block_size: int) -> None:
    """Set the file size; shrinking drops whole blocks and zeros the tail of the last one."""
    if new_size < inode.size:
        keep = (new_size + block_size - 1) // block_size
        doomed = list(op.range(Table.BLOCKS, ino_u64_key(ino, keep), pack_u64(ino + 1)))
        for key, value in doomed:
            chunk, length = decode_block(value)
            op.delete(Table.BLOCKS, key)
            inode.stored_units -= _units(length)
            chunks.decref(op, chunk)
        tail = new_size % block_size
        if tail:
            n = new_size // block_size
            if _block(op, ino, n) is not None:
                content = load_block(op, ino, n, block_size)
                content[tail:] = bytes(block_size - tail)
                store_block(op, ino, inode, n, content)
    inode.size = new_size
