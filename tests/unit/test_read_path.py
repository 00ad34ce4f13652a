"""The read path: the cache of verified chunks, reads without operations, trimming zeros."""

from __future__ import annotations

import random
import time

import pytest

from cfs.errors import Corrupted, NoAttribute
from cfs.fs import SetAttr
from cfs.fs.data import trim_zeros
from cfs.hashing import chunk_id
from cfs.store import Store, StoreConfig, Table, chunks
from cfs.store.chunkcache import ChunkCache
from cfs.types import ChunkId

from unit_support import BLOCK_SIZE, Vol, changes

OLD = 1_000_000_000


def cid(n: int) -> ChunkId:
    return ChunkId(n.to_bytes(16, "big"))


# --- ChunkCache ------------------------------------------------------------------------

def test_cache_is_bounded_by_bytes_and_drops_the_least_recently_used() -> None:
    cache = ChunkCache(300)
    for n in range(3):
        cache.put(cid(n), bytes([n]) * 100)
    assert cache.bytes == 300 and len(cache) == 3
    assert cache.get(cid(0)) == b"\0" * 100  # 0 is now the most recently used
    cache.put(cid(3), b"x" * 150)
    assert cid(1) not in cache and cid(2) not in cache  # 1 then 2 made room
    assert cache.get(cid(0)) is not None and cache.get(cid(3)) is not None
    assert cache.bytes == 250
    assert cache.statistics()["hits"] == 3 and cache.statistics()["misses"] == 0


def test_cache_refuses_what_is_larger_than_it_and_a_zero_limit_caches_nothing() -> None:
    cache = ChunkCache(100)
    cache.put(cid(1), b"x" * 101)
    assert len(cache) == 0 and cache.bytes == 0
    off = ChunkCache(0)
    off.put(cid(1), b"x")
    assert off.get(cid(1)) is None and off.statistics()["misses"] == 1


def test_putting_an_id_again_counts_its_bytes_once() -> None:
    cache = ChunkCache(1000)
    cache.put(cid(1), b"x" * 100)
    cache.put(cid(1), b"x" * 100)
    assert cache.bytes == 100 and len(cache) == 1


# --- chunks.get through the cache ----------------------------------------------------------

@pytest.mark.damages_store("the stored copy of a cached chunk deleted, to see the cache serve it",
                           finds=("missing-chunk",))
def test_a_verified_chunk_is_served_from_the_cache(vol: Vol) -> None:
    data = random.Random(1).randbytes(BLOCK_SIZE)
    ino = vol.create(b"f", data)
    cache = vol.store.chunk_cache
    cache.clear()
    assert vol.fs.read(ino, 0, 100) == data[:100]
    assert chunk_id(data) in cache
    misses = cache.misses
    # Served from memory: even with the stored copy gone, the right bytes come back.
    vol.store.batch.delete(chunk_id(data), db=vol.store.db(Table.CHUNKS))
    assert vol.fs.read(ino, 1000, 3000) == data[1000:4000]
    assert cache.misses == misses


@pytest.mark.damages_store("a chunk overwritten with wrong bytes, to see it never cached", finds=("corrupt-chunk",))
def test_a_damaged_chunk_is_never_cached(vol: Vol) -> None:
    data = random.Random(2).randbytes(BLOCK_SIZE)
    ino = vol.create(b"f", data)
    key = chunk_id(data)
    vol.store.chunk_cache.clear()
    vol.store.batch.put(key, b"\x01\x00" + data[::-1], db=vol.store.db(Table.CHUNKS))
    for _ in range(2):
        with pytest.raises(Corrupted):
            vol.fs.read(ino, 0, 10)
    assert key not in vol.store.chunk_cache


def test_no_cache_reads_the_store_every_time(tmp_path) -> None:
    store = Store(tmp_path / "s", StoreConfig(chunk_cache_bytes=0))
    try:
        with store.op() as op:
            key = chunks.put(op, b"hello")
        assert chunks.get(store.view(), key) == b"hello"
        assert len(store.chunk_cache) == 0
    finally:
        store.close()


# --- reads without operations ------------------------------------------------------------

@pytest.mark.replicated  # the test reads the change log
def test_reads_see_uncommitted_operations_and_log_nothing(vol: Vol) -> None:
    ino = vol.create(b"f", b"abc")
    vol.fs.setattr(ino, SetAttr(atime_ns=time.time_ns(), mtime_ns=OLD, ctime_ns=OLD))
    log = changes(vol.store, vol.slot)
    assert vol.fs.lookup(vol.root, b"f").ino == ino  # nothing committed yet: the batch is read
    vol.fs.forget(ino, 1)
    assert vol.fs.getattr(ino).inode.size == 3
    assert vol.fs.read(ino, 0, 10) == b"abc"  # atime is recent, newer than mtime and ctime: not due
    assert [name for name, _a, _c in vol.fs.readdir(vol.root, 1)] == []
    with pytest.raises(NoAttribute):
        vol.fs.getxattr(ino, b"user.none")
    assert vol.fs.listxattr(ino) == []
    vol.fs.statfs()
    assert changes(vol.store, vol.slot) == log


@pytest.mark.replicated  # the test reads the change log
def test_a_due_atime_is_written_in_an_operation_of_its_own(vol: Vol) -> None:
    ino = vol.create(b"f", b"abc")
    vol.fs.setattr(ino, SetAttr(atime_ns=OLD, mtime_ns=OLD, ctime_ns=OLD))
    vol.fs.setattr(ino, SetAttr(atime_ns=OLD))  # ctime is now; atime older: due
    log = changes(vol.store, vol.slot)
    assert vol.fs.read(ino, 0, 1) == b"a"
    assert vol.inode(ino).atime_ns > OLD
    assert len(changes(vol.store, vol.slot)) == len(log) + 1
    vol.fs.read(ino, 0, 1)  # no longer due
    assert len(changes(vol.store, vol.slot)) == len(log) + 1


def test_reads_across_holes_trimmed_tails_and_cached_blocks(vol: Vol) -> None:
    rng = random.Random(3)
    size = 7 * BLOCK_SIZE + 123
    model = bytearray(size)
    ino = vol.create(b"f")
    for offset, length in [(10, 100), (2 * BLOCK_SIZE - 5, 20), (5 * BLOCK_SIZE, BLOCK_SIZE), (size - 1, 1)]:
        piece = rng.randbytes(length)
        vol.fs.write(ino, offset, piece)
        model[offset:offset + length] = piece
    for offset in range(0, size, 997):
        for length in (1, 100, BLOCK_SIZE, 3 * BLOCK_SIZE + 7):
            assert vol.fs.read(ino, offset, length) == bytes(model[offset:offset + length])
    whole = vol.fs.read(ino, 5 * BLOCK_SIZE, BLOCK_SIZE)
    assert whole == bytes(model[5 * BLOCK_SIZE:6 * BLOCK_SIZE]) and isinstance(whole, bytes)


# --- trim_zeros ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 2, 63, 64, 65, 511, 4096, 4097, 65536])
def test_trim_zeros_is_rstrip_of_zeros(size: int) -> None:
    rng = random.Random(size)
    for _ in range(200):
        buf = bytearray(size)
        for _ in range(rng.randrange(4)):
            if size:
                buf[rng.randrange(size)] = rng.randrange(1, 256)
        if size and rng.random() < 0.3:
            buf[-1] = 1
        expected = bytes(buf).rstrip(b"\0")
        assert trim_zeros(buf) == expected
        assert trim_zeros(bytes(buf)) == expected
        assert type(trim_zeros(buf)) is bytes
