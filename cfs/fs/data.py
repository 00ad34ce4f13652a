"""File content: reading, writing and truncating through block maps.

A file of block size B is the sequence of blocks ``[n*B, (n+1)*B)``. Block n is either
a hole (no BLOCKS row: reads as zeros, takes no space) or a row naming a chunk holding
the block's bytes with trailing zeros cut off, its base, and possibly patches over it
(cfs.codec.BlockRow). Bytes past the end of the file inside the last block are always
zero (truncate clears them), so growing a file never resurrects old data.

A row may hold its block *reserved* (fallocate, ``reserve``): the block then counts B
toward st_blocks whatever it stores, so writing into it never needs more room under a
volume's size limit. Every change of a row's content keeps its reservation; only
punching the whole block out, truncating it away and deleting the file drop it. A
reserved block that stores nothing (a reserved hole) reads as zeros, and may lie past
the end of the file (``FALLOC_FL_KEEP_SIZE``); no other row does.

A write through the store (``write``) replaces whole blocks: a partial block is read,
patched and stored as a new chunk (the old chunk loses a reference). The write-back
cache's flush (``store_written``) may store a patch instead: only the bytes written,
laid over the block's stored content. A 4 KiB write into a 64 KiB block then stores
4 KiB and reads nothing, where a new base would cost reading the old 64 KiB (from disk,
when cold) and storing 64 KiB again. Patches are bounded (``MAX_PATCHES``, and at most
half a block of patch bytes); past that the flush folds them into a new base.

``Inode.stored_units`` is kept equal to the sum of the rows' ``BlockRow.units``: the
``ceil(len(chunk)/512)`` of every chunk a row names, or the block size's units for a
reserved row that stores less; it is the file's st_blocks.
"""

from __future__ import annotations

import logging
from typing import Iterator, Mapping

from cfs.codec import BlockRow, Inode, Patch, decode_block, encode_row, ino_u64_key, pack_u64, units_of
from cfs.errors import Corrupted
from cfs.fs.cache import DirtyBlock
from cfs.hashing import chunk_id
from cfs.store import Op, Table, View, chunks
from cfs.types import InodeId

log = logging.getLogger(__name__)

MAX_FILE_SIZE = (1 << 63) - 1


MAX_PATCHES = 8
"""Patches a block row may carry before the flush folds them into a new base."""


def _block(view: View, ino: InodeId, n: int) -> BlockRow | None:
    raw = view.get(Table.BLOCKS, ino_u64_key(ino, n))
    return decode_block(raw) if raw is not None else None


def _content(view: View, row: BlockRow, n: int) -> bytes | bytearray:
    """The stored bytes of block n (zeros follow): the base chunk itself (immutable,
    cached) when the row has no patches."""
    if row.chunk is None:
        return b""
    base = chunks.get(view, row.chunk, f" at block {n}")
    if not row.patches:
        return base
    block = bytearray(base)
    for p in row.patches:
        piece = chunks.get(view, p.chunk, f" at block {n}")
        if p.at > len(block):
            block.extend(bytes(p.at - len(block)))
        block[p.at:p.at + len(piece)] = piece
    return block


def read(view: View, ino: InodeId, inode: Inode, offset: int, size: int, block_size: int,
         dirty: Mapping[int, DirtyBlock] | None = None) -> bytes:
    """Up to ``size`` bytes at ``offset``, zeros for holes; short at end of file.

    ``dirty`` holds what was written into blocks since the store last saw them (the
    write-back cache): it is laid over their stored bytes. The reply is joined once from
    views of the blocks' bytes; a read of exactly one whole chunk returns the chunk's
    (immutable, cached) bytes object itself.
    """
    end = min(offset + size, inode.size)
    if offset >= end:
        return b""
    first, last = offset // block_size, (end - 1) // block_size
    found: dict[int, bytes | bytearray] = {}
    dirty = dirty or {}
    rows: dict[int, BlockRow] = {}
    for key, value in view.range(Table.BLOCKS, ino_u64_key(ino, first), ino_u64_key(ino, last + 1)):
        n = int.from_bytes(key[8:16], "big")
        if n in dirty:
            rows[n] = decode_block(value)
        else:
            found[n] = _content(view, decode_block(value), n)
    cached = (range(first, last + 1) if last - first < len(dirty)
              else [n for n in dirty if first <= n <= last])
    for n in cached:
        written = dirty.get(n)
        if written is not None:
            row = rows.get(n)
            if row is None or written.covers(row.end):
                found[n] = written.data
            else:
                found[n] = written.overlay(bytearray(_content(view, row, n)))
    pieces: list[bytes | bytearray | memoryview] = []
    pos = offset  # the file offset the next piece starts at
    for n in sorted(found):
        data = found[n]
        start = n * block_size
        if start > pos:
            pieces.append(bytes(start - pos))  # a hole, or the trimmed tail of the block before
            pos = start
        hi = min(end, start + len(data))
        if hi > pos:
            whole = pos == start and hi == start + len(data)
            pieces.append(data if whole else memoryview(data)[pos - start:hi - start])
            pos = hi
    if end > pos:
        pieces.append(bytes(end - pos))
    return b"".join(pieces)


def load_block(view: View, ino: InodeId, n: int) -> bytearray:
    """The current content of block n as far as it is stored: zeros follow, up to the
    block size (a hole is empty). ``patch`` writes into it."""
    row = _block(view, ino, n)
    if row is None:
        return bytearray()
    return bytearray(_content(view, row, n))


def patch(block: bytearray, offset: int, piece: bytes | bytearray | memoryview) -> None:
    """Write ``piece`` at ``offset`` of a block held short (zeros past its length),
    growing it as needed; a gap before ``offset`` becomes zeros."""
    if offset > len(block):
        block.extend(bytes(offset - len(block)))
    block[offset:offset + len(piece)] = piece


_ZEROS = memoryview(bytes(1 << 20))
"""Compared against, never changed: as long as the largest block."""


def trim_zeros(content: bytes | bytearray) -> bytes:
    """``content`` without its trailing zeros, as bytes (one copy at most).

    ``bytes.rstrip(b"\\0")`` tests one byte at a time: ~270 us for the 64 KiB block of a
    1 KiB file. Here runs of zeros are compared in place (``startswith`` at an offset,
    memcmp): doubling runs back from the end, then halving the run that holds the last
    non-zero byte; ~15 us for the same block, ~3 us for a full one.
    """
    n = len(content)
    if not n or content[-1]:
        return content if isinstance(content, bytes) else bytes(content)
    zeros = 1  # content ends with this many zeros
    step = 64
    while True:  # are the ``step`` bytes before them zeros as well?
        step = min(step, n - zeros)
        if not step:
            return b""
        if not content.startswith(_ZEROS[:step], n - zeros - step):
            break
        zeros += step
        step *= 2
    while step > 1:  # the last non-zero byte is among those ``step`` bytes: halve
        half = step // 2
        if content.startswith(_ZEROS[:half], n - zeros - half):
            zeros += half
            step -= half
        else:
            step = half
    return bytes(memoryview(content)[:n - zeros])


def store_block(op: Op, ino: InodeId, inode: Inode, n: int, content: bytes | bytearray) -> None:
    """Make block n hold ``content`` (a hole when it is all zeros), releasing the old chunks."""
    _replace_block(op, ino, inode, n, content, _block(op, ino, n))


def _replace_block(op: Op, ino: InodeId, inode: Inode, n: int, content: bytes | bytearray,
                   old: BlockRow | None) -> None:
    """``store_block`` for a caller that has read the block's row (``old``) already."""
    trimmed = trim_zeros(content)
    cid = chunk_id(trimmed) if trimmed else None
    if old is not None and old.chunk == cid and not old.patches:
        return
    reserved = old.reserved if old is not None else 0
    new = BlockRow(cid, len(trimmed), (), reserved) if trimmed or reserved else None
    if cid is not None:
        chunks.put(op, trimmed, cid)
    _put_row(op, ino, inode, n, new, old)
    if old is not None:  # after the put: a chunk both rows name must not go in between
        _unref(op, old)


def _put_row(op: Op, ino: InodeId, inode: Inode, n: int, new: BlockRow | None, old: BlockRow | None) -> None:
    """Make block n's row ``new`` (None: a hole) where it was ``old``, and count the
    change in st_blocks; the references of chunks ``old`` named are the caller's."""
    if new is not None:
        op.put(Table.BLOCKS, ino_u64_key(ino, n), encode_row(new))
    elif old is not None:
        op.delete(Table.BLOCKS, ino_u64_key(ino, n))
    inode.stored_units += (new.units if new is not None else 0) - (old.units if old is not None else 0)


def _unref(op: Op, row: BlockRow) -> None:
    for cid, _length in row.chunks():
        chunks.decref(op, cid)


def release(op: Op, inode: Inode | None, row: BlockRow) -> None:
    """Drop the references of a row that is gone (and its units from ``inode``)."""
    if inode is not None:
        inode.stored_units -= row.units
    _unref(op, row)


def store_written(op: Op, ino: InodeId, inode: Inode, n: int, written: DirtyBlock, block_size: int) -> None:
    """Store what the write-back cache holds for block n: the flush.

    Written bytes that are the whole block become its new base. Otherwise they become
    patches over the stored content, which is not read; when the row would then carry
    more than ``MAX_PATCHES`` patches or more than half a block of patch bytes, the
    stored content is read, the written ranges laid over it, and the result is stored as
    a new base instead. If that read fails (a damaged chunk, or one held by replicas
    only), the written bytes are stored as patches all the same: they are not lost, and
    the damage stays where it was, for reads and fsck to report.
    """
    row = _block(op, ino, n)
    if row is None or row.chunk is None or written.covers(row.end):
        _replace_block(op, ino, inode, n, written.data, row)
        return
    fresh = sum(hi - lo for lo, hi in written.extents)
    if (len(row.patches) + len(written.extents) > MAX_PATCHES
            or sum(p.length for p in row.patches) + fresh > block_size // 2):
        try:
            content = bytearray(_content(op, row, n))
        except Corrupted as exc:
            log.warning("block %d of inode %d: its stored bytes cannot be read (%s); storing the "
                        "written bytes as patches over them", n, ino, exc)
        else:
            _replace_block(op, ino, inode, n, written.overlay(content), row)
            return
    _add_patches(op, ino, inode, n, row, written)


def _add_patches(op: Op, ino: InodeId, inode: Inode, n: int, row: BlockRow, written: DirtyBlock) -> None:
    """Lay the written ranges over the row as patches; older patches they hide go."""
    patches = list(row.patches)
    hidden: list[Patch] = []
    for lo, hi in written.extents:
        piece = bytes(memoryview(written.data)[lo:hi])
        cid = chunks.put(op, piece)
        keep: list[Patch] = []
        for p in patches:
            (hidden if lo <= p.at and p.at + p.length <= hi else keep).append(p)
        patches = keep + [Patch(lo, cid, len(piece))]
    _put_row(op, ino, inode, n, row._replace(patches=tuple(patches)), row)
    for p in hidden:
        chunks.decref(op, p.chunk)


def write(op: Op, ino: InodeId, inode: Inode, offset: int, data: bytes, block_size: int) -> int:
    """Write ``data`` at ``offset``; the caller saves ``inode`` (size, stored_units changed)."""
    for n, lo, piece in split(offset, data, block_size):
        if lo == 0 and len(piece) == block_size:
            content: bytes | bytearray = piece.tobytes()
        else:
            content = load_block(op, ino, n)
            patch(content, lo, piece)
        store_block(op, ino, inode, n, content)
    if data:
        inode.size = max(inode.size, offset + len(data))
    return len(data)


def split(offset: int, data: bytes, block_size: int) -> Iterator[tuple[int, int, memoryview]]:
    """(block number, offset in the block, bytes) of each block a write at ``offset`` touches."""
    view = memoryview(data)
    end = offset + len(data)
    pos = offset
    while pos < end:
        n = pos // block_size
        start = n * block_size
        hi = min(block_size, end - start)
        yield n, pos - start, view[pos - offset:start + hi - offset]
        pos = start + hi


def truncate(op: Op, ino: InodeId, inode: Inode, new_size: int, block_size: int) -> None:
    """Set the file size; shrinking drops whole blocks and zeros the tail of the last one.
    A size no larger than the old one drops every block past it, so also what a
    KEEP_SIZE fallocate reserved there (as tmpfs and ext4 free it, even for the same
    size); growing leaves those reservations be."""
    if new_size <= inode.size:
        keep = (new_size + block_size - 1) // block_size
        doomed = list(op.range(Table.BLOCKS, ino_u64_key(ino, keep), pack_u64(ino + 1)))
        for key, value in doomed:
            op.delete(Table.BLOCKS, key)
            release(op, inode, decode_block(value))
        tail = new_size % block_size
        if tail and new_size < inode.size:
            n = new_size // block_size
            if _block(op, ino, n) is not None:
                content = load_block(op, ino, n)
                del content[tail:]
                store_block(op, ino, inode, n, content)
    inode.size = new_size


def punch(op: Op, ino: InodeId, inode: Inode, offset: int, length: int, block_size: int) -> None:
    """Make ``[offset, offset + length)`` read as zeros (fallocate's PUNCH_HOLE).

    Blocks inside the range lose their rows, chunks and reservations; a block the range
    covers in part has those bytes zeroed and stored again (read first, so a damaged or
    remote chunk fails the call, as a write through the store does) and keeps its
    reservation. The size does not change.
    """
    end = offset + length
    first_whole, end_whole = -(-offset // block_size), end // block_size
    for n in {offset // block_size, (end - 1) // block_size}:
        if not first_whole <= n < end_whole:
            _zero_part(op, ino, inode, n, max(offset - n * block_size, 0), min(end - n * block_size, block_size))
    if first_whole < end_whole:
        doomed = list(op.range(Table.BLOCKS, ino_u64_key(ino, first_whole), ino_u64_key(ino, end_whole)))
        for key, value in doomed:
            op.delete(Table.BLOCKS, key)
            release(op, inode, decode_block(value))


def _zero_part(op: Op, ino: InodeId, inode: Inode, n: int, lo: int, hi: int) -> None:
    row = _block(op, ino, n)
    if row is None or row.chunk is None or lo >= row.end:
        return  # nothing stored there: it reads as zeros already
    content = bytearray(_content(op, row, n))
    if lo < len(content):
        content[lo:min(hi, len(content))] = bytes(min(hi, len(content)) - lo)
    _replace_block(op, ino, inode, n, content, row)


def reservation(view: View, ino: InodeId, first: int, last: int, block_size: int) -> int:
    """The units reserving blocks ``first`` to ``last`` would add to st_blocks: reading
    only the rows there, so that a request the volume cannot hold fails before anything
    is written, however many blocks it names."""
    full = units_of(block_size)
    held = 0  # units the range's rows count already, up to a block each
    for _key, value in view.range(Table.BLOCKS, ino_u64_key(ino, first), ino_u64_key(ino, last + 1)):
        held += min(decode_block(value).units, full)
    return (last - first + 1) * full - held


def reserve(op: Op, ino: InodeId, inode: Inode, first: int, last: int, block_size: int) -> None:
    """Hold blocks ``first`` to ``last`` in full (fallocate's allocation): holes become
    reserved holes; stored blocks keep their bytes and count a whole block at least."""
    rows = {int.from_bytes(key[8:16], "big"): decode_block(value)
            for key, value in op.range(Table.BLOCKS, ino_u64_key(ino, first), ino_u64_key(ino, last + 1))}
    for n in range(first, last + 1):
        old = rows.get(n)
        if old is None:
            _put_row(op, ino, inode, n, BlockRow(None, 0, (), block_size), None)
        elif not old.reserved:
            _put_row(op, ino, inode, n, old._replace(reserved=block_size), old)
