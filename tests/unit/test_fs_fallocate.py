"""fallocate(2) in the core (``Filesystem.fallocate``): allocating reserves blocks,
punching frees them, zeroing does both; reservations count against a volume's size
limit so that writing into them never fails for it.

4096-byte blocks (512 in the size-limit tests), so that ranges cross block boundaries
and partial blocks; every test on ``vol`` ends with a clean fsck (conftest.py), the
others check the store themselves.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import pytest

from cfs import check
from cfs.codec import BlockRow, decode_block, ino_u64_key, pack_u64
from cfs.errors import FileTooBig, InvalidArgument, IsADirectory, NoSpace, NotSupported, ReadOnly
from cfs.fs import Filesystem, SetAttr
from cfs.fs.core import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from cfs.store import Store, StoreConfig, Table
from cfs.types import InodeId

from unit_support import (
    BLOCK_SIZE, OLD, Vol, assert_chunks_consistent, changes, chunk_refs, check_at_teardown, rows, units,
)

B = BLOCK_SIZE
MiB = 1 << 20
PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
FULL = B // 512
"""st_blocks of one reserved block."""


def block_rows(vol: Vol, ino: InodeId) -> dict[int, BlockRow]:
    """Block number -> decoded row, for one file."""
    return {int.from_bytes(k[8:16], "big"): decode_block(v)
            for k, v in rows(vol.store, Table.BLOCKS, ino_u64_key(ino, 0), pack_u64(ino + 1))}


def reserved_holes(vol: Vol, ino: InodeId) -> list[int]:
    return sorted(n for n, row in block_rows(vol, ino).items() if row.chunk is None)


def used(vol: Vol) -> int:
    return vol.fs.volume_space(vol.record.name)["used_bytes"]


def test_allocating_extends_the_file_with_reserved_zeros(vol: Vol) -> None:
    ino = vol.create(b"f", keep_open=True)
    vol.fs.fallocate(ino, 0, 100, 3 * B)                     # blocks 0 to 3, the last one in part
    inode = vol.inode(ino)
    assert inode.size == 100 + 3 * B
    assert inode.stored_units == 4 * FULL
    assert vol.read_all(ino) == bytes(100 + 3 * B)
    assert reserved_holes(vol, ino) == [0, 1, 2, 3]
    assert chunk_refs(vol.store) == {}                         # nothing stored, only held
    assert used(vol) == 4 * B
    vol.fs.release(ino)


def test_allocating_over_data_keeps_it_and_holds_the_whole_block(vol: Vol) -> None:
    content = b"a" * 1000                                      # 2 units of a block of 8
    ino = vol.create(b"f", content, keep_open=True)
    vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 10)
    assert vol.read_all(ino) == content
    assert vol.inode(ino).size == 1000 and vol.inode(ino).stored_units == FULL
    vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 10)          # again: nothing more to hold
    assert vol.inode(ino).stored_units == FULL
    vol.fs.release(ino)


def test_keep_size_reserves_past_the_end_and_writes_fill_the_reservation(vol: Vol) -> None:
    ino = vol.create(b"f", b"head", keep_open=True)
    vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 2 * B, 2 * B)
    inode = vol.inode(ino)
    assert inode.size == 4 and inode.stored_units == 1 + 2 * FULL
    assert reserved_holes(vol, ino) == [2, 3]                  # past the end: fsck allows them
    assert check.check(vol.store).clean
    piece = random.Random(1).randbytes(B)
    vol.fs.write(ino, 2 * B, piece)                            # into the reservation: no growth
    assert vol.inode(ino).stored_units == 1 + 2 * FULL
    assert vol.fs.read(ino, 2 * B, B) == piece
    assert vol.inode(ino).size == 3 * B
    vol.fs.release(ino)


def test_truncating_and_unlinking_drop_reservations(vol: Vol) -> None:
    ino = vol.create(b"f", b"x" * 10, keep_open=True)
    vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 6 * B)
    vol.fs.setattr(ino, SetAttr(size=2 * B))                   # growing keeps what lies past the end
    assert vol.inode(ino).stored_units == 6 * FULL
    vol.fs.setattr(ino, SetAttr(size=2 * B))                   # the same size does not (tmpfs, ext4)
    assert sorted(block_rows(vol, ino)) == [0, 1]
    vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 6 * B)
    vol.fs.setattr(ino, SetAttr(size=B + 1))                   # shrinking drops it, as on ext4
    assert sorted(block_rows(vol, ino)) == [0, 1]
    assert vol.inode(ino).stored_units == 2 * FULL
    vol.fs.release(ino)
    vol.fs.unlink(vol.root, b"f")
    vol.fs.forget(ino, 1)
    assert used(vol) == 0 and rows(vol.store, Table.BLOCKS) == []


def test_punching_across_blocks_zeros_partial_ones_and_frees_whole_ones(vol: Vol) -> None:
    content = bytearray(random.Random(2).randbytes(5 * B))
    ino = vol.create(b"f", bytes(content), keep_open=True)
    middle = block_rows(vol, ino)[2].chunk
    offset, length = B + 100, 3 * B - 200                      # from inside block 1 to inside block 3
    vol.fs.fallocate(ino, PUNCH, offset, length)
    content[offset:offset + length] = bytes(length)
    assert vol.read_all(ino) == bytes(content)
    assert vol.inode(ino).size == 5 * B                        # KEEP_SIZE
    assert sorted(block_rows(vol, ino)) == [0, 1, 3, 4]        # block 2 went, chunk and all
    assert middle not in chunk_refs(vol.store)
    assert vol.inode(ino).stored_units == units(content)
    assert_chunks_consistent(vol.store)
    vol.fs.fallocate(ino, PUNCH, 0, 10 * B)                    # past the end too: everything
    assert rows(vol.store, Table.BLOCKS) == [] and vol.inode(ino).stored_units == 0
    assert vol.read_all(ino) == bytes(5 * B)
    vol.fs.release(ino)


def test_punching_inside_one_block_and_at_the_tail(vol: Vol) -> None:
    content = bytearray(random.Random(3).randbytes(B + 1000))
    ino = vol.create(b"f", bytes(content), keep_open=True)
    for offset, length in ((10, 20), (B + 900, 5000), (B, 900)):
        vol.fs.fallocate(ino, PUNCH, offset, length)
        content[offset:offset + length] = bytes(len(content[offset:offset + length]))
        assert vol.read_all(ino) == bytes(content)
    assert vol.inode(ino).stored_units == units(content)
    assert sorted(block_rows(vol, ino)) == [0]                # block 1 holds only zeros now: a hole
    vol.fs.release(ino)


def test_punching_blocks_with_patches(store: Store, request: pytest.FixtureRequest) -> None:
    """A block whose writes were flushed as patches over its base: the punch reads the
    block as base and patches, zeros the range, and stores it again; refcounts follow."""
    fs = Filesystem(store, dirty_limit=16 * B)
    vol = Vol(store, fs, fs.create_volume("vol", block_size=B))
    content = bytearray(random.Random(4).randbytes(3 * B))
    ino = vol.create(b"f", bytes(content), keep_open=True)
    fs.flush(ino)
    for offset in (100, B + 200, B + 3000, 2 * B + 10):
        fs.write(ino, offset, b"p" * 300)
        content[offset:offset + 300] = b"p" * 300
    fs.flush(ino)
    assert all(row.patches for row in block_rows(vol, ino).values())
    fs.write(ino, 2 * B + 500, b"cached")                      # and one write still in the cache
    content[2 * B + 500:2 * B + 506] = b"cached"
    offset, length = 250, 2 * B                                # into a patch of block 0 .. into block 2
    fs.fallocate(ino, PUNCH, offset, length)
    content[offset:offset + length] = bytes(length)
    assert not fs.dirty.has(ino)                               # the cache was stored first
    assert vol.read_all(ino) == bytes(content)
    store.chunk_cache.clear()
    assert vol.read_all(ino) == bytes(content)
    assert vol.inode(ino).stored_units == units(content)
    assert_chunks_consistent(store)
    fs.release(ino)
    check_at_teardown(request, store)


def test_zero_range_zeros_and_reserves(vol: Vol) -> None:
    content = bytearray(random.Random(5).randbytes(3 * B))
    ino = vol.create(b"f", bytes(content), keep_open=True)
    vol.fs.fallocate(ino, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, B - 10, 2 * B + 20)   # to past the end
    content[B - 10:] = bytes(2 * B + 10)
    assert vol.read_all(ino) == bytes(content)
    assert vol.inode(ino).size == 3 * B
    assert reserved_holes(vol, ino) == [1, 2, 3]                # the stored part of block 0 stays as it was
    assert vol.inode(ino).stored_units == 4 * FULL
    vol.fs.fallocate(ino, FALLOC_FL_ZERO_RANGE, 3 * B, 10)      # without KEEP_SIZE: the file grows
    assert vol.inode(ino).size == 3 * B + 10
    assert vol.read_all(ino) == bytes(content) + bytes(10)
    vol.fs.release(ino)


def test_every_mode_moves_mtime_and_ctime(vol: Vol) -> None:
    ino = vol.create(b"f", b"x" * 100, keep_open=True)
    for mode, offset in ((0, 0), (FALLOC_FL_KEEP_SIZE, 5 * B), (PUNCH, 0), (FALLOC_FL_ZERO_RANGE, 0)):
        vol.fs.setattr(ino, SetAttr(mtime_ns=OLD, ctime_ns=OLD))
        vol.fs.fallocate(ino, mode, offset, 10)
        inode = vol.inode(ino)
        assert inode.mtime_ns > OLD and inode.ctime_ns > OLD, mode
    vol.fs.release(ino)


@pytest.mark.parametrize("mode, offset, length, error", [
    (0x08, 0, B, NotSupported),                                 # COLLAPSE_RANGE
    (0x20, 0, B, NotSupported),                                 # INSERT_RANGE
    (0x40, 0, B, NotSupported),                                 # UNSHARE_RANGE
    (FALLOC_FL_PUNCH_HOLE, 0, B, NotSupported),                 # a hole changes no size
    (PUNCH | FALLOC_FL_ZERO_RANGE, 0, B, NotSupported),
    (0, -1, B, InvalidArgument),
    (0, 0, 0, InvalidArgument),
    (0, 2**62, 2**62, FileTooBig),
])
def test_bad_requests_are_refused_and_change_nothing(vol: Vol, mode: int, offset: int, length: int,
                                                     error: type[Exception]) -> None:
    ino = vol.create(b"f", b"data", keep_open=True)
    before = vol.inode(ino)
    with pytest.raises(error):
        vol.fs.fallocate(ino, mode, offset, length)
    assert vol.inode(ino) == before
    vol.fs.release(ino)


def test_a_directory_is_refused(vol: Vol) -> None:
    with pytest.raises(IsADirectory):
        vol.fs.fallocate(vol.mkdir(b"d"), 0, 0, B)


def test_a_volume_this_node_may_not_write_is_read_only(vol: Vol) -> None:
    ino = vol.create(b"f", b"data", keep_open=True)
    vol.store.frozen_slots.add(vol.slot)
    try:
        for mode in (0, PUNCH, FALLOC_FL_ZERO_RANGE):
            with pytest.raises(ReadOnly):
                vol.fs.fallocate(ino, mode, 0, B)
        with pytest.raises(ReadOnly):                          # before the space check, too
            vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 1 << 60)
    finally:
        vol.store.frozen_slots.discard(vol.slot)
    assert vol.read_all(ino) == b"data"
    vol.fs.release(ino)


@pytest.mark.replicated
def test_the_change_log_carries_the_reservations(vol: Vol) -> None:
    """Replicas rebuild a volume from its change log: the reserved rows are in it."""
    ino = vol.create(b"f", b"x", keep_open=True)
    vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 2 * B)
    last = changes(vol.store, vol.slot)[-1][1]
    logged = {bytes(key[8:16]): decode_block(value) for table, _kind, key, value in last.rows
              if table == Table.BLOCKS}
    assert [row.reserved for row in logged.values()] == [B, B]
    vol.fs.release(ino)


# --- size limits ----------------------------------------------------------------------

BS = 512
KiB = 1024


@pytest.fixture(params=[0, 64 * KiB], ids=["through", "cached"])
def sized(request: pytest.FixtureRequest, store: Store) -> Iterator[Vol]:
    """A 32 KiB volume of 512-byte blocks, writes stored at once or through the cache."""
    fs = Filesystem(store, dirty_limit=request.param)
    yield Vol(store, fs, fs.create_volume("sized", block_size=BS, options={"size": "32K"}))
    check_at_teardown(request, store)


def test_reserved_space_is_held_against_the_limit_and_writes_into_it_never_fail(sized: Vol) -> None:
    fs = sized.fs
    db = sized.create(b"db", keep_open=True)
    fs.fallocate(db, FALLOC_FL_KEEP_SIZE, 0, 24 * KiB)          # three quarters of the volume
    assert used(sized) == 24 * KiB and sized.inode(db).size == 0
    other = sized.create(b"other", keep_open=True)
    rng = random.Random(6)
    fs.write(other, 0, rng.randbytes(8 * KiB))                 # the rest
    fs.flush(other)
    with pytest.raises(NoSpace):
        fs.write(other, 8 * KiB, rng.randbytes(BS))
    content = rng.randbytes(24 * KiB)                          # the reservation, written in pieces
    for at in range(0, len(content), 1000):
        fs.write(db, at, content[at:at + 1000])
    fs.flush(db)
    assert sized.read_all(db) == content
    assert used(sized) == 32 * KiB
    fs.fallocate(db, PUNCH, 0, 8 * KiB)                        # punching frees, even at the limit
    assert used(sized) == 24 * KiB
    fs.write(other, 8 * KiB, rng.randbytes(BS))                # so the other file may grow again
    fs.flush(other)
    for ino in (db, other):
        fs.release(ino)


def test_allocating_past_the_limit_fails_whole(sized: Vol) -> None:
    fs = sized.fs
    ino = sized.create(b"f", b"x" * 100, keep_open=True)
    fs.fallocate(ino, 0, 0, 16 * KiB)
    before = (sized.inode(ino), used(sized), len(rows(sized.store, Table.BLOCKS)))
    for mode in (0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE):
        with pytest.raises(NoSpace):
            fs.fallocate(ino, mode, 8 * KiB, 32 * KiB)
    with pytest.raises(NoSpace):
        fs.fallocate(ino, 0, 0, 1 << 50)                       # refused before a row is written
    assert (sized.inode(ino), used(sized), len(rows(sized.store, Table.BLOCKS))) == before
    fs.fallocate(ino, 0, 8 * KiB, 24 * KiB)                    # exactly to the limit: fits
    assert used(sized) == 32 * KiB and sized.inode(ino).size == 32 * KiB
    fs.release(ino)


def test_a_reservation_larger_than_the_disk_is_refused(vol: Vol) -> None:
    ino = vol.create(b"f", keep_open=True)
    with pytest.raises(NoSpace):
        vol.fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 1 << 60)
    assert rows(vol.store, Table.BLOCKS) == []
    vol.fs.release(ino)



def test_a_full_disk_refuses_allocation_and_punching_frees_it(small_disk: Path) -> None:
    """On a 64 MiB disk filled to its reserve: allocating is ENOSPC, whatever it asks for,
    and changes nothing; punching a hole runs (it frees, as unlink and truncate do)."""
    store = Store(small_disk / "store", StoreConfig(reserve_bytes=8 * MiB, commit_bytes=4 * MiB))
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.create_volume("vol", block_size=64 * 1024))
        ino = vol.create(b"f", keep_open=True)
        size = 0
        for piece in (MiB, 64 * 1024):                          # until not even a block fits
            with pytest.raises(NoSpace):
                while True:
                    fs.write(ino, size, random.Random(size).randbytes(piece))
                    size += piece
        before = vol.inode(ino)
        for length in (64 * 1024, 32 * MiB):
            with pytest.raises(NoSpace):
                fs.fallocate(ino, FALLOC_FL_KEEP_SIZE, size, length)
        assert vol.inode(ino) == before
        fs.fallocate(ino, PUNCH, 0, size // 2)
        assert vol.inode(ino).stored_units < before.stored_units
        assert vol.fs.read(ino, 0, 10) == bytes(10)
        fs.release(ino)
        store.commit()
        assert check.check(store).clean
    finally:
        store.close()
