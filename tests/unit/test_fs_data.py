"""File content without FUSE: writes across block boundaries, reads at offsets, holes,
trailing zeros, truncation and O_TRUNC, files over 4 GiB, all checked against a model."""

from __future__ import annotations

import random

import pytest

from cfs.codec import decode_block
from cfs.errors import InvalidArgument, IsADirectory
from cfs.fs import Filesystem, SetAttr
from cfs.store import Store, Table

from unit_support import (
    BLOCK_SIZE, OLD, ROOT, Vol, age, assert_chunks_consistent, block_refs, chunk_refs, rows,
    stored_chunks, units,
)

GiB = 1 << 30


def _payload(rng: random.Random, size: int) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(size)
    if kind == 1:
        return (b"ab" * size)[:size]  # the same blocks again and again: dedup hits
    if kind == 2:
        return rng.randbytes(size // 2) + bytes(size - size // 2)
    return rng.randbytes(size)


@pytest.mark.parametrize("block_size", [512, BLOCK_SIZE])
@pytest.mark.parametrize("seed", range(6))
def test_random_writes_and_truncates_match_a_model(store: Store, fs: Filesystem, seed: int,
                                                   block_size: int) -> None:
    rng = random.Random(seed)
    vol = Vol(store, fs, fs.create_volume("model", block_size=block_size))
    bs = block_size
    ino = vol.create(b"f")
    model = bytearray()
    for _step in range(60):
        if rng.random() < 0.75:
            offset = rng.randrange(0, 6 * bs)
            data = _payload(rng, rng.randrange(0, 3 * bs))
            assert fs.write(ino, offset, data) == len(data)
            if data:
                model.extend(bytes(max(0, offset + len(data) - len(model))))
                model[offset:offset + len(data)] = data
        else:
            size = rng.randrange(0, 7 * bs)
            fs.setattr(ino, SetAttr(size=size))
            model = model[:size] + bytearray(max(0, size - len(model)))
        assert vol.inode(ino).size == len(model)
        assert vol.read_all(ino) == bytes(model)
        assert vol.inode(ino).stored_units == units(model, bs)
        offset, size = rng.randrange(0, 7 * bs), rng.randrange(0, 2 * bs)
        assert fs.read(ino, offset, size) == bytes(model[offset:offset + size])
    assert_chunks_consistent(vol.store)


def test_write_across_block_boundaries_and_read_at_offsets(vol: Vol) -> None:
    fs = vol.fs
    data = random.Random(5).randbytes(3 * BLOCK_SIZE + 123)
    ino = vol.create(b"f")
    assert fs.write(ino, 100, data) == len(data)
    assert vol.inode(ino).size == 100 + len(data)
    assert fs.read(ino, 0, 100) == bytes(100)
    assert fs.read(ino, 100, len(data)) == data
    assert fs.read(ino, BLOCK_SIZE - 1, 2) == data[BLOCK_SIZE - 101:BLOCK_SIZE - 99]
    assert fs.read(ino, 100 + len(data) - 5, 100) == data[-5:]  # short at end of file
    assert fs.read(ino, 100 + len(data), 100) == b""
    assert fs.read(ino, 10 * BLOCK_SIZE, 100) == b""
    assert len(block_refs(vol.store)) == 4                # bytes [100, 3*B + 223): blocks 0 to 3


def test_negative_offsets_are_refused(vol: Vol) -> None:
    ino = vol.create(b"f", b"x")
    with pytest.raises(InvalidArgument):
        vol.fs.read(ino, -1, 1)
    with pytest.raises(InvalidArgument):
        vol.fs.write(ino, -1, b"x")


def test_sparse_file_reads_zeros_in_holes_and_stores_nothing_for_them(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"sparse")
    fs.write(ino, 10 * BLOCK_SIZE + 7, b"x")
    assert vol.inode(ino).size == 10 * BLOCK_SIZE + 8
    assert vol.read_all(ino) == bytes(10 * BLOCK_SIZE + 7) + b"x"
    assert vol.inode(ino).stored_units == 1
    assert len(block_refs(vol.store)) == 1

    fs.setattr(ino, SetAttr(size=20 * BLOCK_SIZE))
    assert vol.inode(ino).stored_units == 1
    assert fs.read(ino, 15 * BLOCK_SIZE, BLOCK_SIZE) == bytes(BLOCK_SIZE)


def test_trailing_zeros_of_a_block_are_not_stored(vol: Vol) -> None:
    ino = vol.create(b"f", b"a" + bytes(BLOCK_SIZE - 1) + b"b" * 600 + bytes(1000))
    assert vol.inode(ino).stored_units == 1 + 2
    assert sorted(decode_block(value)[1] for _key, value in rows(vol.store, Table.BLOCKS)) == [1, 600]
    assert vol.read_all(ino) == b"a" + bytes(BLOCK_SIZE - 1) + b"b" * 600 + bytes(1000)


def test_writing_zeros_over_data_makes_a_hole(vol: Vol) -> None:
    ino = vol.create(b"f", b"q" * (3 * BLOCK_SIZE))
    vol.fs.write(ino, BLOCK_SIZE, bytes(BLOCK_SIZE))
    assert vol.inode(ino).stored_units == 2 * BLOCK_SIZE // 512
    assert len(block_refs(vol.store)) == 1  # one chunk ("q" * B), referenced twice
    assert sum(block_refs(vol.store).values()) == 2
    assert vol.read_all(ino) == b"q" * BLOCK_SIZE + bytes(BLOCK_SIZE) + b"q" * BLOCK_SIZE


def test_truncate_shrinks_and_growing_again_reads_zeros(vol: Vol) -> None:
    fs = vol.fs
    data = random.Random(6).randbytes(3 * BLOCK_SIZE)
    ino = vol.create(b"f", data)
    age(vol, ino)
    keep = BLOCK_SIZE + 100
    fs.setattr(ino, SetAttr(size=keep))
    inode = vol.inode(ino)
    assert inode.size == keep
    assert inode.mtime_ns > OLD and inode.ctime_ns > OLD
    assert vol.read_all(ino) == data[:keep]
    assert inode.stored_units == units(data[:keep])
    assert len(block_refs(vol.store)) == 2

    fs.setattr(ino, SetAttr(size=3 * BLOCK_SIZE))
    assert vol.read_all(ino) == data[:keep] + bytes(3 * BLOCK_SIZE - keep)
    assert vol.inode(ino).stored_units == units(data[:keep])

    fs.setattr(ino, SetAttr(size=keep - 50))             # inside the same block
    fs.write(ino, keep + 10, b"z")                        # grow by writing past the end
    assert vol.read_all(ino) == data[:keep - 50] + bytes(60) + b"z"
    assert_chunks_consistent(vol.store)


def test_truncate_to_zero_frees_every_chunk(vol: Vol) -> None:
    ino = vol.create(b"f", random.Random(7).randbytes(5 * BLOCK_SIZE))
    vol.fs.setattr(ino, SetAttr(size=0))
    assert vol.inode(ino).stored_units == 0
    assert vol.read_all(ino) == b""
    assert chunk_refs(vol.store) == {}
    assert stored_chunks(vol.store) == set()


def test_open_with_o_trunc_empties_the_file(vol: Vol) -> None:
    ino = vol.create(b"f", random.Random(20).randbytes(2 * BLOCK_SIZE))
    age(vol, ino)
    attr = vol.fs.open(ino, write=True, truncate=True)
    assert attr.inode.size == 0 and attr.st_blocks == 0
    assert vol.inode(ino).mtime_ns > OLD
    assert chunk_refs(vol.store) == {}
    vol.fs.release(ino)
    reader = vol.create(b"g", b"gone")
    vol.fs.open(reader, write=False, truncate=True)      # Linux truncates on O_RDONLY | O_TRUNC too
    vol.fs.release(reader)
    assert vol.read_all(reader) == b""


def test_truncate_refuses_directories_and_special_files(vol: Vol) -> None:
    d = vol.mkdir(b"d")
    s = vol.fs.symlink(vol.root, b"s", b"d", ROOT).ino
    with pytest.raises(IsADirectory):
        vol.fs.setattr(d, SetAttr(size=0))
    with pytest.raises(InvalidArgument):
        vol.fs.setattr(s, SetAttr(size=0))


def test_files_over_4_gib(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"big")
    near_5 = 5 * GiB - 100
    payload = random.Random(8).randbytes(300)
    assert fs.write(ino, near_5, payload) == 300
    fs.write(ino, 2**32 - 2, b"abcd")                    # across the 32-bit boundary
    assert vol.inode(ino).size == near_5 + 300
    assert fs.read(ino, near_5, 300) == payload
    assert fs.read(ino, near_5 - 50, 100) == bytes(50) + payload[:50]
    assert fs.read(ino, 2**32 - 4, 8) == b"\0\0abcd\0\0"
    assert fs.read(ino, 3 * GiB, 4096) == bytes(4096)
    assert fs.read(ino, near_5 + 300, 10) == b""
    expected = units(bytes(BLOCK_SIZE - 100) + payload[:100]) + units(payload[100:]) \
        + units(bytes(BLOCK_SIZE - 2) + b"ab") + units(b"cd")
    assert vol.inode(ino).stored_units == expected

    fs.setattr(ino, SetAttr(size=2**32 + 1))
    assert vol.inode(ino).size == 2**32 + 1
    assert fs.read(ino, 2**32 - 2, 10) == b"abc"
    assert vol.inode(ino).stored_units == units(bytes(BLOCK_SIZE - 2) + b"ab") + units(b"c")
    assert len(chunk_refs(vol.store)) == 2
    assert_chunks_consistent(vol.store)
