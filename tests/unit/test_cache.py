"""The write-back cache of dirty blocks (cfs.fs.cache), through the filesystem core."""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Iterator

import pytest

from cfs.check import check
from cfs.codec import BlockRow, Inode, decode_block, ino_u64_key
from cfs.errors import Corrupted, ReadOnly
from cfs.fs import Filesystem, SetAttr, data, inodes
from cfs.fs.cache import DirtyBlocks, Written
from cfs.store import Store, Table
from cfs.types import InodeId

from unit_support import BLOCK_SIZE, Vol, assert_chunks_consistent, chunk_refs, rows

LIMIT = 16 * BLOCK_SIZE


@pytest.fixture
def cached(store: Store) -> Iterator[Vol]:
    fs = Filesystem(store, dirty_limit=LIMIT)
    yield Vol(store, fs, fs.create_volume("vol", block_size=BLOCK_SIZE))


def block_rows(vol: Vol) -> int:
    return len(rows(vol.store, Table.BLOCKS))


def test_small_writes_stay_in_memory_until_flushed(cached: Vol) -> None:
    ino = cached.create(b"f", keep_open=True)
    rng = random.Random(1)
    model = bytearray(3 * BLOCK_SIZE)
    cached.fs.write(ino, len(model) - 1, b"\xff")
    model[-1] = 0xFF
    for _ in range(200):
        offset = rng.randrange(len(model) - 100)
        piece = rng.randbytes(rng.randint(1, 100))
        cached.fs.write(ino, offset, piece)
        model[offset:offset + len(piece)] = piece
    assert block_rows(cached) == 0                       # nothing hashed or stored yet
    assert cached.fs.read(ino, 0, len(model)) == bytes(model)
    cached.fs.flush(ino)
    assert block_rows(cached) == 3
    assert cached.fs.read(ino, 0, len(model)) == bytes(model)
    assert cached.inode(ino).stored_units == 3 * BLOCK_SIZE // 512
    assert_chunks_consistent(cached.store)
    assert check(cached.store).clean


def test_cached_blocks_overlay_stored_ones(cached: Vol) -> None:
    base = random.Random(2).randbytes(2 * BLOCK_SIZE)
    ino = cached.create(b"f", base)                     # closed: stored
    cached.fs.flush(ino)
    cached.fs.write(ino, BLOCK_SIZE - 3, b"XYZWV")        # straddles blocks 0 and 1
    expected = base[:BLOCK_SIZE - 3] + b"XYZWV" + base[BLOCK_SIZE + 2:]
    assert cached.fs.read(ino, 0, 2 * BLOCK_SIZE) == expected
    cached.fs.sync()
    assert cached.fs.read(ino, 0, 2 * BLOCK_SIZE) == expected
    assert check(cached.store).clean


def test_truncate_drops_and_zeros_cached_blocks(cached: Vol) -> None:
    ino = cached.create(b"f", keep_open=True)
    cached.fs.write(ino, 0, b"A" * (3 * BLOCK_SIZE))
    cached.fs.setattr(ino, SetAttr(size=BLOCK_SIZE + 10))
    cached.fs.setattr(ino, SetAttr(size=3 * BLOCK_SIZE))   # grow again: zeros, not old bytes
    assert cached.fs.read(ino, 0, 3 * BLOCK_SIZE) == b"A" * (BLOCK_SIZE + 10) + bytes(2 * BLOCK_SIZE - 10)
    cached.fs.flush(ino)
    assert cached.fs.read(ino, 0, 3 * BLOCK_SIZE) == b"A" * (BLOCK_SIZE + 10) + bytes(2 * BLOCK_SIZE - 10)
    assert check(cached.store).clean


def test_unlinked_file_takes_its_cached_blocks_along(cached: Vol) -> None:
    ino = cached.create(b"f", keep_open=True)
    cached.fs.write(ino, 0, random.Random(3).randbytes(4 * BLOCK_SIZE))
    cached.fs.unlink(cached.root, b"f")
    cached.fs.release(ino)
    assert cached.fs.dirty.bytes == 0
    cached.fs.sync()
    assert chunk_refs(cached.store) == {}
    assert check(cached.store).clean


def test_memory_limit_stores_blocks(cached: Vol) -> None:
    ino = cached.create(b"f", keep_open=True)
    for n in range(LIMIT // BLOCK_SIZE + 4):
        cached.fs.write(ino, n * BLOCK_SIZE, bytes([n + 1]) * BLOCK_SIZE)
    assert cached.fs.dirty.bytes <= LIMIT
    assert block_rows(cached) > 0


def block_row(vol: Vol, ino: InodeId, n: int) -> BlockRow:
    raw = vol.store.batch.get(ino_u64_key(ino, n), db=vol.store.db(Table.BLOCKS))
    assert raw is not None
    return decode_block(raw)


def stored_file(vol: Vol, content: bytes) -> InodeId:
    ino = vol.create(b"f", content)
    vol.fs.flush(ino)
    return ino


def test_a_small_write_into_a_stored_block_stores_a_patch(cached: Vol) -> None:
    data = random.Random(4).randbytes(2 * BLOCK_SIZE)
    ino = stored_file(cached, data)
    base = block_row(cached, ino, 1)
    units = cached.inode(ino).stored_units
    cached.fs.write(ino, BLOCK_SIZE + 100, b"p" * 300)
    cached.fs.write(ino, BLOCK_SIZE + 1000, b"q" * 10)
    cached.fs.flush(ino)
    row = block_row(cached, ino, 1)
    assert (row.chunk, row.length) == (base.chunk, base.length)     # the base is not rewritten
    assert [(p.at, p.length) for p in row.patches] == [(100, 300), (1000, 10)]
    assert cached.inode(ino).stored_units == units + 1 + 1
    expected = bytearray(data)
    expected[BLOCK_SIZE + 100:BLOCK_SIZE + 400] = b"p" * 300
    expected[BLOCK_SIZE + 1000:BLOCK_SIZE + 1010] = b"q" * 10
    cached.store.chunk_cache.clear()
    assert cached.fs.read(ino, 0, 2 * BLOCK_SIZE) == bytes(expected)
    assert cached.fs.read(ino, BLOCK_SIZE + 390, 20) == bytes(expected[BLOCK_SIZE + 390:BLOCK_SIZE + 410])
    assert_chunks_consistent(cached.store)
    assert check(cached.store).clean


def test_a_patch_hides_the_patches_it_covers(cached: Vol) -> None:
    ino = stored_file(cached, random.Random(5).randbytes(BLOCK_SIZE))
    for lo, hi in ((100, 200), (300, 350), (50, 360)):
        cached.fs.write(ino, lo, bytes([lo % 256]) * (hi - lo))
        cached.fs.flush(ino)
    assert [(p.at, p.length) for p in block_row(cached, ino, 0).patches] == [(50, 310)]
    assert cached.inode(ino).stored_units == BLOCK_SIZE // 512 + 1
    assert_chunks_consistent(cached.store)                 # the hidden patches' chunks are gone
    assert check(cached.store).clean


def test_patches_fold_into_a_new_base_past_the_limits(cached: Vol) -> None:
    rng = random.Random(6)
    model = bytearray(rng.randbytes(BLOCK_SIZE))
    ino = stored_file(cached, bytes(model))
    seen = []
    for i in range(3 * data.MAX_PATCHES):
        offset = rng.randrange(0, BLOCK_SIZE - 64, 128)
        piece = rng.randbytes(64)
        model[offset:offset + 64] = piece
        cached.fs.write(ino, offset, piece)
        cached.fs.flush(ino)
        row = block_row(cached, ino, 0)
        assert len(row.patches) <= data.MAX_PATCHES
        seen.append(len(row.patches))
        assert cached.fs.read(ino, 0, BLOCK_SIZE) == bytes(model)
    assert 0 in seen and data.MAX_PATCHES in seen           # patches grew, then were folded
    big = rng.randbytes(BLOCK_SIZE // 2 + 1)                 # more than half a block: a new base
    cached.fs.write(ino, 10, big)
    model[10:10 + len(big)] = big
    cached.fs.flush(ino)
    assert block_row(cached, ino, 0).patches == ()
    assert cached.fs.read(ino, 0, BLOCK_SIZE) == bytes(model)
    assert_chunks_consistent(cached.store)
    assert check(cached.store).clean


def test_a_write_into_a_damaged_block_needs_none_of_its_bytes(cached: Vol) -> None:
    """A cached write reads nothing: the bytes written land (as a patch) even over a
    damaged chunk, whose damage stays for reads and fsck to report."""
    data_ = random.Random(7).randbytes(2 * BLOCK_SIZE)
    ino = stored_file(cached, data_)
    cid = block_row(cached, ino, 1).chunk
    cached.store.batch.put(cid, b"\x01\x00junk", db=cached.store.db(Table.CHUNKS))
    cached.store.chunk_cache.clear()
    cached.fs.write(ino, 0, b"N" * (BLOCK_SIZE + 10))       # block 0 whole, a piece of block 1
    cached.fs.flush(ino)
    assert cached.fs.read(ino, 0, BLOCK_SIZE) == b"N" * BLOCK_SIZE
    assert block_row(cached, ino, 1).patches[0].length == 10
    with pytest.raises(Corrupted):
        cached.fs.read(ino, BLOCK_SIZE, 10)
    for i in range(data.MAX_PATCHES + 1):                   # folding needs the damaged bytes: patches instead
        cached.fs.write(ino, BLOCK_SIZE + 100 * (i + 1), b"m")
        cached.fs.flush(ino)
    assert len(block_row(cached, ino, 1).patches) > data.MAX_PATCHES
    assert cached.fs.dirty.bytes == 0
    assert {p.kind for p in check(cached.store).problems} == {"corrupt-chunk"}


def test_a_failed_flush_gives_its_blocks_back_under_newer_writes(cached: Vol) -> None:
    ino = cached.create(b"f", b"a" * (2 * BLOCK_SIZE), keep_open=True)
    cached.fs.write(ino, 10, b"old")
    cached.store.frozen_slots.add(cached.slot)                # the flush fails: ReadOnly
    with pytest.raises(ReadOnly):
        cached.fs.flush(ino)
    cached.store.frozen_slots.discard(cached.slot)
    blocks, written = cached.fs.dirty.take(ino)
    cached.fs.write(ino, 12, b"NEW")                          # written while the flush was failing
    cached.fs.dirty.give_back(ino, blocks, written, BLOCK_SIZE)
    expected = b"a" * 10 + b"olNEW" + b"a" * (2 * BLOCK_SIZE - 15)
    assert cached.fs.read(ino, 0, 2 * BLOCK_SIZE) == expected
    cached.fs.flush(ino)
    assert cached.fs.read(ino, 0, 2 * BLOCK_SIZE) == expected


def test_sync_makes_cached_writes_durable(store_path: Path, cached: Vol) -> None:
    ino = cached.create(b"f", keep_open=True)
    cached.fs.write(ino, 5, b"durable")
    cached.fs.fsync(ino)
    cached.store.close()
    reopened = Store(store_path)
    try:
        fs = Filesystem(reopened)
        assert fs.read(ino, 0, 100) == bytes(5) + b"durable"
    finally:
        reopened.close()


def test_blocks_are_held_short_and_counted_whole(cached: Vol) -> None:
    """A 10-byte write caches 10 bytes, not a zero-filled block; it is still counted as a
    whole block, the most it can grow to and add to the volume when stored."""
    ino = cached.create(b"f", keep_open=True)
    cached.fs.write(ino, 0, b"0123456789")
    assert cached.fs.dirty.get(ino, 0).data == bytearray(b"0123456789")
    assert cached.fs.dirty.bytes == cached.fs.dirty.volume_bytes(cached.slot) == BLOCK_SIZE
    cached.fs.write(ino, 100, b"x")                     # same block, past a gap
    assert len(cached.fs.dirty.get(ino, 0).data) == 101
    cached.fs.write(ino, BLOCK_SIZE + 5, b"y")          # a second block
    assert cached.fs.dirty.bytes == 2 * BLOCK_SIZE
    expected = b"0123456789" + bytes(90) + b"x" + bytes(BLOCK_SIZE - 101) + bytes(5) + b"y"
    assert cached.fs.read(ino, 0, 2 * BLOCK_SIZE) == expected
    cached.fs.flush(ino)
    assert cached.fs.dirty.bytes == cached.fs.dirty.volume_bytes(cached.slot) == 0
    assert cached.fs.read(ino, 0, 2 * BLOCK_SIZE) == expected
    assert cached.inode(ino).stored_units == 1 + 1    # 101 and 6 stored bytes: one unit each
    assert check(cached.store).clean


def test_short_blocks_against_a_model(cached: Vol) -> None:
    """Writes at random places (gaps, block edges, past the end), truncates down and up,
    flushes now and then (storing patches, folding them): the file always reads as a
    plain bytearray model of it."""
    rng = random.Random(5)
    ino = cached.create(b"f", keep_open=True)
    model = bytearray()
    patched = 0
    for step in range(400):
        action = rng.random()
        if action < 0.7:
            offset = rng.randrange(4 * BLOCK_SIZE)
            piece = rng.randbytes(rng.choice([1, 7, 100, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 3]))
            cached.fs.write(ino, offset, piece)
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset:offset + len(piece)] = piece
        elif action < 0.85:
            size = rng.randrange(5 * BLOCK_SIZE)
            cached.fs.setattr(ino, SetAttr(size=size))
            model = model[:size] + bytearray(max(0, size - len(model)))
        else:
            cached.fs.flush(ino)
            patched += sum(len(decode_block(v).patches) for _k, v in rows(cached.store, Table.BLOCKS))
        assert cached.fs.read(ino, 0, 6 * BLOCK_SIZE) == bytes(model), step
    cached.fs.flush(ino)
    assert cached.fs.read(ino, 0, 6 * BLOCK_SIZE) == bytes(model)
    assert cached.fs.dirty.bytes == 0
    assert patched > 0                                  # the flushes stored patches, too
    assert_chunks_consistent(cached.store)
    assert check(cached.store).clean


def stored_inode(vol: Vol, ino: InodeId) -> Inode:
    """The inode record as the store holds it, without the flush a getattr does."""
    return inodes.load(vol.store.view(), ino)


def test_a_cached_write_is_no_store_operation_but_shows_at_once(cached: Vol) -> None:
    """Size, mtime and ctime of cached writes wait with the blocks for the flush, and
    lookup, readdir and read show them meanwhile."""
    ino = cached.create(b"f", keep_open=True)
    before = stored_inode(cached, ino)
    records = cached.store.commits, len(rows(cached.store, Table.INODES))
    time.sleep(0.002)
    cached.fs.write(ino, 4 * BLOCK_SIZE + 5, b"tail")
    assert stored_inode(cached, ino) == before               # the record is untouched
    seen = cached.fs.lookup(cached.root, b"f").inode
    cached.fs.forget(ino, 1)
    assert seen.size == 4 * BLOCK_SIZE + 9
    assert seen.mtime_ns == seen.ctime_ns > before.mtime_ns
    (_name, listed, _cookie), = cached.fs.readdir(cached.root, 0)
    cached.fs.forget(ino, 1)
    assert listed.inode == seen
    assert cached.fs.read(ino, 4 * BLOCK_SIZE, 100) == bytes(5) + b"tail"
    assert (cached.store.commits, len(rows(cached.store, Table.INODES))) == records
    cached.fs.flush(ino)
    stored = stored_inode(cached, ino)                         # atime: the read marked it
    assert stored == dataclasses.replace(seen, stored_units=1, atime_ns=stored.atime_ns)
    assert check(cached.store).clean


def test_a_read_after_a_cached_write_marks_atime(cached: Vol) -> None:
    """relatime marks an access when atime is not newer than mtime: the mtime of the
    cached write, which the record does not hold yet."""
    ino = cached.create(b"f", b"abc", keep_open=True)
    cached.fs.flush(ino)
    cached.fs.read(ino, 0, 3)                                 # atime now newer than mtime
    read_at = stored_inode(cached, ino).atime_ns
    time.sleep(0.002)
    cached.fs.write(ino, 0, b"x")
    cached.fs.read(ino, 0, 3)
    assert stored_inode(cached, ino).atime_ns > read_at


def test_truncate_and_utimes_after_cached_writes_win(cached: Vol) -> None:
    """setattr flushes first: a truncate must not be undone by the size the writes
    reached, nor a set mtime by the time they came."""
    ino = cached.create(b"f", keep_open=True)
    cached.fs.write(ino, 0, b"A" * (2 * BLOCK_SIZE))
    cached.fs.setattr(ino, SetAttr(size=100))
    cached.fs.write(ino, 50, b"B" * 10)
    cached.fs.setattr(ino, SetAttr(mtime_ns=1_000_000_000))
    cached.fs.flush(ino)
    inode = stored_inode(cached, ino)
    assert (inode.size, inode.mtime_ns) == (100, 1_000_000_000)
    assert cached.fs.read(ino, 0, 1000) == b"A" * 50 + b"B" * 10 + b"A" * 40


def test_a_failed_flush_keeps_the_written_attributes(cached: Vol) -> None:
    ino = cached.create(b"f", keep_open=True)
    cached.fs.write(ino, 0, b"0123456789")
    cached.store.frozen_slots.add(cached.slot)                # as a node that lost the lease
    with pytest.raises(ReadOnly):
        cached.fs.flush(ino)
    with pytest.raises(ReadOnly):
        cached.fs.write(ino, 10, b"x")                        # refused, not cached
    cached.store.frozen_slots.discard(cached.slot)
    assert cached.fs.lookup(cached.root, b"f").inode.size == 10
    cached.fs.flush(ino)
    assert stored_inode(cached, ino).size == 10
    assert cached.fs.read(ino, 0, 100) == b"0123456789"


def test_written_attributes_merge_when_given_back() -> None:
    dirty = DirtyBlocks(LIMIT)
    ino = InodeId(7)
    dirty.wrote(ino, 100, 5)
    blocks, written = dirty.take(ino)
    assert (blocks, written) == ({}, Written(100, 5)) and not dirty.has(ino)
    dirty.wrote(ino, 50, 9)                                   # a write while the flush failed
    dirty.give_back(ino, blocks, written, BLOCK_SIZE)
    assert dirty.written(ino) == Written(100, 9) and dirty.files() == [ino]
    dirty.wrote(ino, 120, 11)
    assert dirty.written(ino) == Written(120, 11)
