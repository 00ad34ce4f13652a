"""Record layouts: every record round-trips, and damaged or unknown-version bytes raise CorruptRecord."""

from __future__ import annotations

import errno
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfs import codec
from cfs.codec import (
    ROW_DELETE, ROW_PUT, Change, Inode, VolumeRecord, VolumeState,
)
from cfs.errors import Corrupted, CorruptRecord
from cfs.hashing import chunk_id
from cfs.store import chunks
from cfs.types import ChunkId, InodeId, LocalIno, Slot, VolumeId

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)

inodes = st.builds(Inode, mode=u32, uid=u32, gid=u32, nlink=u32, size=u64, atime_ns=i64,
                   mtime_ns=i64, ctime_ns=i64, rdev=u64, stored_units=u64, next_cookie=u64)

rows = st.lists(st.tuples(st.integers(0, 255), st.sampled_from([ROW_PUT, ROW_DELETE]),
                          st.binary(max_size=300), st.binary(max_size=300)), max_size=8)

volume_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
options = st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=4)


# --- round trips -------------------------------------------------------------------

@given(inodes)
def test_inode_round_trip(inode: Inode) -> None:
    assert Inode.decode(inode.encode()) == inode


@given(volume_names, st.binary(min_size=16, max_size=16), u32, u32, i64, options)
def test_volume_record_round_trip(name: str, vid: bytes, slot: int, block_size: int,
                                  created: int, opts: dict[str, str]) -> None:
    record = VolumeRecord(name, VolumeId(vid), Slot(slot), block_size, created, opts)
    assert VolumeRecord.decode(record.encode()) == record


@given(u64, u64, u64)
def test_volume_state_round_trip(next_local: int, next_seq: int, checkpoint: int) -> None:
    state = VolumeState(next_local, next_seq, checkpoint)
    assert VolumeState.decode(state.encode()) == state


@given(i64, rows)
def test_change_round_trip(time_ns: int, change_rows: list[tuple[int, int, bytes, bytes]]) -> None:
    change = Change(time_ns, change_rows)
    assert Change.decode(change.encode()) == change


@given(u64, u64)
def test_dirent_round_trip(child: int, cookie: int) -> None:
    assert codec.decode_dirent(codec.encode_dirent(LocalIno(child), cookie)) == (child, cookie)


file_names = st.binary(min_size=1, max_size=255).filter(lambda n: b"\0" not in n and b"/" not in n)
file_types = st.sampled_from([stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK,
                              stat.S_IFCHR, stat.S_IFBLK])


@given(st.integers(0, 2**40 - 1), file_types, st.integers(0, 0o7777), file_names)
def test_order_row_round_trip(child: int, kind: int, permissions: int, name: bytes) -> None:
    row = codec.encode_order(LocalIno(child), kind | permissions, name)
    assert codec.decode_order(row) == (child, kind >> 12, name)


@given(file_names)
def test_order_row_of_schema_1_is_the_name(name: bytes) -> None:
    assert codec.decode_order(name) == (None, 0, name)


@pytest.mark.parametrize("raw", [b"", b"\0", b"\0" * 9])
def test_damaged_order_row_is_refused(raw: bytes) -> None:
    with pytest.raises(CorruptRecord):
        codec.decode_order(raw)


@given(st.binary(min_size=16, max_size=16), u32)
def test_block_entry_round_trip(chunk: bytes, length: int) -> None:
    raw = codec.encode_block(ChunkId(chunk), length)
    assert len(raw) == 20                                  # the layout rows had before patches
    assert codec.decode_block(raw) == (chunk, length, (), 0)


patches = st.lists(st.builds(codec.Patch, u32, st.binary(min_size=16, max_size=16),
                             st.integers(min_value=1, max_value=2**32 - 1)), min_size=1, max_size=20)


@given(st.binary(min_size=16, max_size=16), u32, patches)
def test_patched_block_entry_round_trip(chunk: bytes, length: int, patches: list[codec.Patch]) -> None:
    row = codec.decode_block(codec.encode_block(ChunkId(chunk), length, patches))
    assert row == (chunk, length, tuple(patches), 0)
    assert row.chunks() == [(chunk, length), *((p.chunk, p.length) for p in patches)]
    assert row.end == max([length, *(p.at + p.length for p in patches)])


def test_damaged_patched_block_entry_is_refused() -> None:
    raw = codec.encode_block(ChunkId(bytes(16)), 10, [codec.Patch(5, ChunkId(bytes(16)), 3)])
    codec.decode_block(raw)
    for damaged in (raw[:-1], raw + b"\0", b"\x04" + raw[1:], raw[:-4] + bytes(4)):  # the last: an empty patch
        with pytest.raises(CorruptRecord):
            codec.decode_block(damaged)


reserved = st.integers(min_value=1, max_value=2**32 - 1)


@given(st.binary(min_size=16, max_size=16), u32, st.just([]) | patches, reserved)
def test_reserved_block_entry_round_trip(chunk: bytes, length: int, patches: list[codec.Patch],
                                         reserved: int) -> None:
    raw = codec.encode_block(ChunkId(chunk), length, patches, reserved)
    assert raw[0] == codec.BLOCK_RESERVED and len(raw) != 20
    row = codec.decode_block(raw)
    assert row == (chunk, length, tuple(patches), reserved)
    assert row.units == max(sum(codec.units_of(n) for _c, n in row.chunks()), codec.units_of(reserved))


@given(reserved)
def test_reserved_hole_round_trip(reserved: int) -> None:
    """A reserved block that stores nothing: no chunk, no references, the reservation's units."""
    row = codec.decode_block(codec.encode_block(None, 0, (), reserved))
    assert row == (None, 0, (), reserved)
    assert row.chunks() == [] and row.end == 0 and row.units == codec.units_of(reserved)


def test_damaged_reserved_block_entry_is_refused() -> None:
    hole = codec.encode_block(None, 0, (), 4096)
    stored = codec.encode_block(ChunkId(bytes(16)), 10, [codec.Patch(5, ChunkId(bytes(16)), 3)], 4096)
    codec.decode_block(hole)
    codec.decode_block(stored)
    for damaged in (hole[:-1], hole + b"\0", stored[:-1], b"\x03" + bytes(4) + stored[5:]):  # the last: reserves 0
        with pytest.raises(CorruptRecord):
            codec.decode_block(damaged)


@given(u64, u32)
def test_chunkref_round_trip(refcount: int, length: int) -> None:
    assert codec.decode_chunkref(codec.encode_chunkref(refcount, length)) == (refcount, length)


@given(u64, u64, st.binary(max_size=255))
def test_keys_split_back(ino: int, n: int, name: bytes) -> None:
    assert codec.split_ino_u64(codec.ino_u64_key(InodeId(ino), n)) == (ino, n)
    assert codec.split_ino_name(codec.ino_name_key(InodeId(ino), name)) == (ino, name)
    assert codec.unpack_u64(codec.pack_u64(ino)) == ino


@given(u64, u64, u64, u64)
def test_key_byte_order_is_numeric_order(a: int, an: int, b: int, bn: int) -> None:
    """LMDB sorts keys byte-wise; range scans over inodes and blocks rely on this being numeric."""
    key_a, key_b = codec.ino_u64_key(InodeId(a), an), codec.ino_u64_key(InodeId(b), bn)
    assert (key_a < key_b) == ((a, an) < (b, bn))


@given(st.binary(min_size=1, max_size=5000))
def test_chunk_verify_returns_the_payload(data: bytes) -> None:
    assert chunks.verify(chunk_id(data), codec.CHUNK_HEADER + data) == data


# --- damaged records ---------------------------------------------------------------

def _inode_raw() -> bytes:
    return Inode(0o100644, 1, 2, 1, size=10).encode()


def _volume_raw() -> bytes:
    return VolumeRecord("v", VolumeId(bytes(16)), Slot(1), 4096, 0, {"a": "b"}).encode()


def _change_raw() -> bytes:
    return Change(5, [(1, ROW_PUT, b"k" * 8, b"value"), (2, ROW_DELETE, b"x" * 9, b"")]).encode()


def _bump_version(raw: bytes) -> bytes:
    return bytes([raw[0] + 1]) + raw[1:]


@pytest.mark.parametrize("decode, raw", [
    (Inode.decode, _inode_raw()),
    (VolumeRecord.decode, _volume_raw()),
    (VolumeState.decode, VolumeState().encode()),
    (Change.decode, _change_raw()),
    (codec.decode_chunkref, codec.encode_chunkref(1, 10)),
], ids=["inode", "volume", "volstate", "change", "chunkref"])
def test_unknown_version_is_refused(decode, raw: bytes) -> None:
    decode(raw)  # the undamaged record decodes
    with pytest.raises(CorruptRecord):
        decode(_bump_version(raw))
    with pytest.raises(CorruptRecord):
        decode(b"\0" + raw[1:])


@pytest.mark.parametrize("decode, raw", [
    (Inode.decode, _inode_raw()),
    (VolumeState.decode, VolumeState().encode()),
    (Change.decode, _change_raw()),
    (codec.decode_chunkref, codec.encode_chunkref(1, 10)),
    (codec.decode_dirent, codec.encode_dirent(LocalIno(5), 7)),
    (codec.decode_block, codec.encode_block(ChunkId(bytes(16)), 10)),
    (codec.unpack_u64, codec.pack_u64(3)),
    (codec.split_ino_u64, codec.ino_u64_key(InodeId(3), 4)),
], ids=["inode", "volstate", "change", "chunkref", "dirent", "block", "u64", "ino_u64_key"])
def test_wrong_length_is_refused(decode, raw: bytes) -> None:
    decode(raw)
    for damaged in (raw[:-1], raw + b"\0", b""):
        with pytest.raises(CorruptRecord):
            decode(damaged)


@pytest.mark.parametrize("tail", [
    b"", b"{", b"\xff\xfe", b"[]", b'"v"', b'{"name": "v"}', b'{"options": {}}',
    b'{"name": "v", "options": 5}', b'{"name": "v", "options": ["ab"]}',
    b'{"name": "v", "options": {"a": 1}}', b'{"name": 5, "options": {}}',
])
def test_volume_record_with_a_bad_tail_is_refused(tail: bytes) -> None:
    head = _volume_raw()[:codec._VOLUME.size]
    with pytest.raises(CorruptRecord):
        VolumeRecord.decode(head + tail)


def test_volume_record_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(CorruptRecord):
        VolumeRecord.decode(_volume_raw()[:codec._VOLUME.size - 1])


def test_split_ino_name_refuses_a_short_key() -> None:
    with pytest.raises(CorruptRecord):
        codec.split_ino_name(b"1234567")


@pytest.mark.parametrize("cut", range(1, 40))
def test_truncated_change_is_refused(cut: int) -> None:
    raw = _change_raw()
    assert cut < len(raw)
    with pytest.raises(CorruptRecord):
        Change.decode(raw[:-cut])


def test_change_with_an_unknown_row_kind_is_refused() -> None:
    raw = bytearray(_change_raw())
    kind_at = codec._CHANGE_HEAD.size + 1  # (table, kind, klen, vlen) of the first row
    assert raw[kind_at] == ROW_PUT
    raw[kind_at] = 7
    with pytest.raises(CorruptRecord):
        Change.decode(bytes(raw))


def test_change_claiming_more_rows_than_it_holds_is_refused() -> None:
    raw = bytearray(_change_raw())
    raw[9:13] = (3).to_bytes(4, "big")  # the row count of the header
    with pytest.raises(CorruptRecord):
        Change.decode(bytes(raw))


def test_change_with_a_row_longer_than_the_record_is_refused() -> None:
    raw = bytearray(_change_raw())
    vlen_at = codec._CHANGE_HEAD.size + 4
    raw[vlen_at:vlen_at + 4] = (10_000).to_bytes(4, "big")
    with pytest.raises(CorruptRecord):
        Change.decode(bytes(raw))


@pytest.mark.parametrize("raw", [b"", b"\x01", b"\x02\x00abc", b"\x01\x01abc"])
def test_chunk_with_a_bad_header_is_refused(raw: bytes) -> None:
    with pytest.raises(CorruptRecord):
        chunks.verify(chunk_id(raw[2:]), raw)


def test_chunk_whose_bytes_do_not_match_the_key_is_refused() -> None:
    data = b"some chunk bytes"
    damaged = codec.CHUNK_HEADER + b"some chunk bytez"
    with pytest.raises(Corrupted) as caught:
        chunks.verify(chunk_id(data), damaged)
    assert caught.value.errno == errno.EIO  # reported as an I/O error, never as wrong bytes
