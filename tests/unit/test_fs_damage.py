"""Damaged chunks without FUSE: a damaged chunk reads as EIO and never as wrong bytes, a
write into a damaged block fails whole, storing the same bytes again heals a chunk."""

from __future__ import annotations

import errno
import logging
import random
from pathlib import Path

import pytest

from cfs.errors import Corrupted
from cfs.fs import Filesystem
from cfs.store import Store, Table

from unit_support import (
    BLOCK_SIZE, Vol, assert_check_finds, assert_chunks_consistent, changes, chunk_of_block, chunk_refs,
    corrupt, stored_chunks,
)


@pytest.mark.damages_store("a chunk of /dir/file flipped, to be read as EIO", finds=("corrupt-chunk",))
def test_damaged_chunk_reads_as_eio_and_never_as_wrong_bytes(
        vol: Vol, caplog: pytest.LogCaptureFixture) -> None:
    fs = vol.fs
    d = vol.mkdir(b"dir")
    data = random.Random(12).randbytes(3 * BLOCK_SIZE)
    ino = vol.create(b"file", data, parent=d)
    cid = chunk_of_block(vol.store, ino, 1)
    good = vol.store.batch.get(cid, db=vol.store.db(Table.CHUNKS))
    flipped = bytearray(good)
    flipped[100] ^= 0x01
    corrupt(vol.store, cid, bytes(flipped))

    assert fs.read(ino, 0, BLOCK_SIZE) == data[:BLOCK_SIZE]
    assert fs.read(ino, 2 * BLOCK_SIZE, BLOCK_SIZE) == data[2 * BLOCK_SIZE:]
    with caplog.at_level(logging.ERROR):
        for offset, size in [(BLOCK_SIZE, 1), (0, 3 * BLOCK_SIZE), (BLOCK_SIZE + 100, 1)]:
            with pytest.raises(Corrupted) as caught:
                fs.read(ino, offset, size)
            assert caught.value.errno == errno.EIO
    assert any("volume vol" in r.getMessage() and "/dir/file" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("damage", [
    pytest.param("bad header",
                 marks=pytest.mark.damages_store("a chunk with an unknown header", finds=("corrupt-chunk",))),
    pytest.param("cut short", marks=pytest.mark.damages_store("a chunk cut short", finds=("corrupt-chunk",))),
    pytest.param("missing", marks=pytest.mark.damages_store("a chunk deleted", finds=("missing-chunk",))),
])
def test_other_chunk_damage_reads_as_eio(vol: Vol, damage: str) -> None:
    ino = vol.create(b"f", b"x" * 1000)
    cid = chunk_of_block(vol.store, ino, 0)
    if damage == "bad header":
        corrupt(vol.store, cid, b"\x09\x00" + b"x" * 1000)
    elif damage == "cut short":
        corrupt(vol.store, cid, b"\x01\x00" + b"x" * 999)
    else:
        vol.store.batch.delete(cid, db=vol.store.db(Table.CHUNKS))
    with pytest.raises(Corrupted) as caught:
        vol.fs.read(ino, 0, 10)
    assert caught.value.errno == errno.EIO


@pytest.mark.closes_store("flips bits in data.mdb between a close and a reopen; checks the reopened store itself")
def test_bit_rot_in_the_data_file_reads_as_eio(store_path: Path, vol: Vol) -> None:
    data = random.Random(13).randbytes(BLOCK_SIZE)
    ino = vol.create(b"f", data)
    vol.store.close()
    mdb = store_path / "data.mdb"
    raw = bytearray(mdb.read_bytes())
    # The chunk's page, and stale copies LMDB leaves in unused page space (meminit=False):
    # flip one bit in each, so the live copy is certainly among them.
    at = raw.find(data[1000:1100])
    assert at > 0
    while at != -1:
        raw[at + 50] ^= 0x80
        at = raw.find(data[1000:1100], at + 1)
    mdb.write_bytes(bytes(raw))

    store = Store(store_path)
    try:
        with pytest.raises(Corrupted):
            Filesystem(store).read(ino, 0, BLOCK_SIZE)
        assert_check_finds(store, "corrupt-chunk")
    finally:
        store.close()


@pytest.mark.replicated  # the test reads the change log
def test_write_into_a_damaged_block_fails_whole(vol: Vol) -> None:
    fs = vol.fs
    data = random.Random(14).randbytes(2 * BLOCK_SIZE)
    ino = vol.create(b"f", data)
    cid = chunk_of_block(vol.store, ino, 1)
    corrupt(vol.store, cid, b"\x01\x00" + b"junk")
    refs, log, inode = chunk_refs(vol.store), changes(vol.store, vol.slot), vol.inode(ino)

    with pytest.raises(Corrupted):
        fs.write(ino, 0, b"N" * (BLOCK_SIZE + 10))        # block 0 whole, then a piece of block 1
    assert changes(vol.store, vol.slot) == log
    assert chunk_refs(vol.store) == refs
    assert vol.inode(ino).size == inode.size and vol.inode(ino).mtime_ns == inode.mtime_ns
    assert fs.read(ino, 0, BLOCK_SIZE) == data[:BLOCK_SIZE]

    fs.write(ino, BLOCK_SIZE, b"W" * BLOCK_SIZE)          # a whole block needs no old bytes
    assert vol.read_all(ino) == data[:BLOCK_SIZE] + b"W" * BLOCK_SIZE
    assert cid not in stored_chunks(vol.store)
    assert_chunks_consistent(vol.store)


def test_storing_the_same_bytes_again_heals_a_damaged_chunk(vol: Vol) -> None:
    data = random.Random(15).randbytes(BLOCK_SIZE)
    ino = vol.create(b"f", data)
    cid = chunk_of_block(vol.store, ino, 0)
    corrupt(vol.store, cid, b"\x01\x00" + bytes(reversed(data)))
    with pytest.raises(Corrupted):
        vol.fs.read(ino, 0, 10)
    vol.create(b"copy", data)
    assert vol.read_all(ino) == data
    assert chunk_refs(vol.store) == {cid: 2}
