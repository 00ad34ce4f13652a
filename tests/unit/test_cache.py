"""The write-back cache of dirty blocks (cfs.fs.cache), through the filesystem core."""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Iterator

import pytest

from cfs.check import check
from cfs.codec import Inode
from cfs.errors import Corrupted, ReadOnly
from cfs.fs import Filesystem, SetAttr, inodes
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


def test_a_damaged_block_fails_the_write_whole(cached: Vol) -> None:
    data = random.Random(4).randbytes(2 * BLOCK_SIZE)
    ino = cached.create(b"f", data)
    cached.fs.flush(ino)
    (key, value), = [r for r in rows(cached.store, Table.BLOCKS) if r[0].endswith((1).to_bytes(8, "big"))]
    cid = bytes(value[:16])
    cached.store.batch.put(cid, b"\x01\x00junk", db=cached.store.db(Table.CHUNKS))
    with pytest.raises(Corrupted):
        cached.fs.write(ino, 0, b"N" * (BLOCK_SIZE + 10))  # block 0 whole, a piece of block 1
    assert cached.fs.dirty.bytes == 0
    assert cached.fs.read(ino, 0, BLOCK_SIZE) == data[:BLOCK_SIZE]


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
    assert cached.fs.dirty.get(ino, 0) == bytearray(b"0123456789")
    assert cached.fs.dirty.bytes == cached.fs.dirty.volume_bytes(cached.slot) == BLOCK_SIZE
    cached.fs.write(ino, 100, b"x")                     # same block, past a gap
    assert len(cached.fs.dirty.get(ino, 0)) == 101
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
    flushes now and then: the file always reads as a plain bytearray model of it."""
    rng = random.Random(5)
    ino = cached.create(b"f", keep_open=True)
    model = bytearray()
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
        assert cached.fs.read(ino, 0, 6 * BLOCK_SIZE) == bytes(model), step
    cached.fs.flush(ino)
    assert cached.fs.read(ino, 0, 6 * BLOCK_SIZE) == bytes(model)
    assert cached.fs.dirty.bytes == 0
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
