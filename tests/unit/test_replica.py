"""Replaying a writer's change log on a replica store (cfs.store.replica), without a network.

Two real stores stand for two nodes. Records travel the way the replicator sends them:
chunks first (staged), then the encoded records in order. After every shipment the
replica's volume tables must equal the writer's, row for row (keys compared with the
slot bits cleared), its chunk counts must match its block maps, and fsck must be clean
on both sides.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cfs.check import check
from cfs.codec import ROW_PUT, Change, decode_block
from cfs.errors import CorruptRecord, LogGap, LogTrimmed, RemoteChunk, StaleEpoch
from cfs.fs import Filesystem, SetAttr
from cfs.fs.core import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
from cfs.store import Store, StoreConfig, Table, catalog, chunks, replica
from cfs.types import LOCAL_MASK, Slot, volume_root

from unit_support import BLOCK_SIZE, ROOT, Vol, changes, rows

PER_VOLUME = (Table.INODES, Table.DIRENTS, Table.DIRORDER, Table.BLOCKS, Table.XATTRS, Table.SYMLINKS)
RETAIN = 10_000


def volume_rows(store: Store, slot: Slot) -> dict[Table, list[tuple[bytes, bytes]]]:
    lo, hi = catalog.slot_range(slot)
    out = {}
    for table in PER_VOLUME:
        out[table] = [((int.from_bytes(k[:8], "big") & LOCAL_MASK).to_bytes(8, "big") + k[8:], v)
                      for k, v in rows(store, table, lo, hi)]
    return out


class Node:
    def __init__(self, path: Path) -> None:
        self.store = Store(path, StoreConfig(changelog_retain=RETAIN))
        self.fs = Filesystem(self.store)

    def record(self, name: str = "vol"):
        with self.store.op(adds_data=False) as op:
            return catalog.get(op, name)

    def applied(self, slot: Slot) -> int:
        with self.store.op(adds_data=False) as op:
            return replica.applied_seq(op, slot)


@pytest.fixture
def nodes(tmp_path: Path):
    a, b = Node(tmp_path / "a"), Node(tmp_path / "b")
    yield a, b
    a.store.close()
    b.store.close()


def make_replicated(a: Node, b: Node) -> tuple[Vol, object]:
    """A volume replicated from its creation on ``a`` (its log starts at record 1, the
    root directory), and an empty copy of it on ``b``."""
    rec = a.fs.create_volume("vol", block_size=BLOCK_SIZE, replicated=True)
    with a.store.op() as op:
        replica.admit_epoch(op, rec, 1)
    # another slot on purpose: rows must be rewritten into the replica's own slot
    b.fs.create_volume("other", block_size=BLOCK_SIZE)
    with b.store.op() as op:
        brec = catalog.create(op, "vol", BLOCK_SIZE, {}, volume_id=rec.volume_id, created_ns=rec.created_ns)
    assert brec.slot != rec.slot
    return Vol(a.store, a.fs, rec), brec


def ship(src: Node, slot: Slot, dst: Node, dst_record, epoch: int = 1, *, push_chunks: bool = True) -> int:
    """Send what ``dst`` lacks; return how many records it applied."""
    after = dst.applied(dst_record.slot)
    with src.store.op(adds_data=False) as op:
        records = replica.records_after(op, slot, after, 1 << 30)
        pushed = {}
        for _seq, raw in records:
            for table, kind, _key, value in Change.decode(raw).rows:
                if push_chunks and table == Table.BLOCKS and kind == ROW_PUT:
                    for cid, _length in decode_block(value).chunks():
                        if chunks.has_bytes(op, cid):
                            pushed[cid] = chunks.get(op, cid)
    with dst.store.op() as op:
        for cid, data in pushed.items():
            chunks.stage(op, cid, data, time.time_ns())
    applied = 0
    with dst.store.op() as op:
        for seq, raw in records:
            applied += replica.apply(op, dst_record, epoch, seq, raw, RETAIN)
    return applied


def assert_same(a: Node, slot: Slot, b: Node, bslot: Slot) -> None:
    assert volume_rows(a.store, slot) == volume_rows(b.store, bslot)
    assert a.applied(slot) == b.applied(bslot)
    for node in (a, b):
        node.store.commit()
        report = check(node.store)
        assert report.clean, report.lines()


def workload(vol: Vol) -> None:
    d = vol.mkdir(b"dir")
    f = vol.create(b"file", bytes(range(256)) * 40, parent=d)          # 10 KiB: 3 blocks
    vol.create(b"same", bytes(range(256)) * 40)                          # dedup with file
    vol.fs.write(f, 5000, b"x" * 3000)                                    # partial-block rewrite
    vol.fs.setattr(f, SetAttr(size=6000))                                 # truncate down
    vol.fs.symlink(vol.root, b"link", b"dir/file", ROOT)
    vol.fs.setxattr(f, b"user.k", b"v", 0)
    vol.fs.rename(d, b"file", vol.root, b"moved")
    gone = vol.create(b"gone", b"z" * 9000)
    vol.fs.unlink(vol.root, b"gone")
    vol.fs.forget(gone, 1)
    vol.fs.link(vol.find(vol.root, b"same"), d, b"hard")


def test_replay_rebuilds_the_volume_row_for_row(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    assert ship(a, vol.slot, b, brec) == a.applied(vol.slot)
    assert_same(a, vol.slot, b, brec.slot)
    # every chunk was pushed ahead of its record: none is left remote, none staged
    assert rows(b.store, Table.REMOTE) == [] and rows(b.store, Table.STAGED) == []


@pytest.mark.parametrize("push_chunks", [True, False], ids=["pushed", "remote"])
def test_patched_blocks_replay_with_every_chunk_referenced(nodes, push_chunks: bool) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    a.fs.dirty.limit_bytes = 16 * BLOCK_SIZE              # the write-back cache, whose flush patches
    f = vol.create(b"f", bytes(range(256)) * 48)          # 3 blocks
    a.fs.flush(f)
    expected = bytearray(bytes(range(256)) * 48)
    for round_ in range(12):                              # patches, hidden patches, then a fold
        for offset in (100 + 7 * round_, BLOCK_SIZE + 300, 2 * BLOCK_SIZE + 50 * round_):
            piece = bytes([round_ + 1]) * 20
            a.fs.write(f, offset, piece)
            expected[offset:offset + 20] = piece
        a.fs.flush(f)
        ship(a, vol.slot, b, brec, push_chunks=push_chunks)
        assert_same(a, vol.slot, b, brec.slot)
    patched = [decode_block(v) for _k, v in volume_rows(b.store, brec.slot)[Table.BLOCKS]]
    assert any(row.patches for row in patched)
    assert (rows(b.store, Table.REMOTE) == []) == push_chunks
    bfs = Filesystem(b.store)
    ino_b = bfs.lookup(volume_root(brec.slot), b"f").ino
    if push_chunks:
        assert bfs.read(ino_b, 0, 1 << 20, mark_atime=False) == bytes(expected)
    else:
        with pytest.raises(RemoteChunk):
            bfs.read(ino_b, 0, 1 << 20, mark_atime=False)


def test_reserved_blocks_and_punched_holes_replay(nodes) -> None:
    """fallocate's rows (reserved holes, past the end too; reservations on stored blocks;
    punched blocks gone) travel in the log like any other, and the replica's volume
    counts the reservations in its bytes in use, as the writer's does."""
    a, b = nodes
    vol, brec = make_replicated(a, b)
    f = vol.create(b"f", bytes(range(256)) * 48, keep_open=True)        # 3 blocks
    vol.fs.fallocate(f, FALLOC_FL_KEEP_SIZE, BLOCK_SIZE, 4 * BLOCK_SIZE)
    vol.fs.fallocate(f, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 100, BLOCK_SIZE)
    vol.fs.fallocate(f, FALLOC_FL_ZERO_RANGE, 2 * BLOCK_SIZE, 10)
    vol.fs.release(f)
    ship(a, vol.slot, b, brec)
    assert_same(a, vol.slot, b, brec.slot)
    assert any(decode_block(v).reserved for _k, v in volume_rows(b.store, brec.slot)[Table.BLOCKS])
    assert (a.fs.volume_space("vol")["used_bytes"] == b.fs.volume_space("vol")["used_bytes"]
            == a.fs.getattr(f).inode.stored_units * 512)


def test_the_replica_reads_the_same_bytes_through_its_own_filesystem(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    ship(a, vol.slot, b, brec)
    bfs = Filesystem(b.store)
    broot = volume_root(brec.slot)
    for name in (b"moved", b"same"):
        ino_a, ino_b = vol.find(vol.root, name), bfs.lookup(broot, name).ino
        assert bfs.read(ino_b, 0, 1 << 20, mark_atime=False) == a.fs.read(ino_a, 0, 1 << 20)


def test_records_without_their_chunks_leave_them_remote_and_reads_ask_for_them(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    ino_a = vol.create(b"f", b"q" * 5000)
    ship(a, vol.slot, b, brec, push_chunks=False)
    assert len(rows(b.store, Table.REMOTE)) == 2
    assert check(b.store).clean
    bfs = Filesystem(b.store)
    ino = bfs.lookup(volume_root(brec.slot), b"f").ino
    # a replica's volume is never written locally, not even an access time
    with pytest.raises(RemoteChunk) as caught:
        bfs.read(ino, 0, 100, mark_atime=False)
    cid = caught.value.chunk_id
    with a.store.op(adds_data=False) as op:
        data = chunks.get(op, cid)
    with b.store.op() as op:
        chunks.fill(op, cid, data)
    assert bfs.read(ino, 0, 100, mark_atime=False) == b"q" * 100
    # deleting the file drops the remote marks with the last reference
    vol.fs.unlink(vol.root, b"f")
    vol.fs.forget(ino_a, 1)
    ship(a, vol.slot, b, brec, push_chunks=False)
    assert rows(b.store, Table.REMOTE) == []
    assert_same(a, vol.slot, b, brec.slot)


def test_resent_records_are_ignored_and_gaps_refused(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    vol.create(b"one", b"1")
    vol.create(b"two", b"2")
    with a.store.op(adds_data=False) as op:
        records = replica.records_after(op, vol.slot, 0, 1 << 30)
    with b.store.op() as op:
        assert replica.apply(op, brec, 1, *records[0], RETAIN)
    with b.store.op() as op:
        assert not replica.apply(op, brec, 1, *records[0], RETAIN)
    with pytest.raises(LogGap) as gap:
        with b.store.op() as op:
            replica.apply(op, brec, 1, *records[2], RETAIN)
    assert gap.value.expected == 2
    ship(a, vol.slot, b, brec)
    assert_same(a, vol.slot, b, brec.slot)


def test_a_fenced_writer_changes_nothing(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    vol.create(b"before", b"1")
    ship(a, vol.slot, b, brec, epoch=1)
    with b.store.op() as op:
        replica.admit_epoch(op, brec, 2)      # a new writer took the lease
    vol.create(b"late", b"2")
    before = volume_rows(b.store, brec.slot)
    with pytest.raises(StaleEpoch) as stale:
        ship(a, vol.slot, b, brec, epoch=1)
    assert stale.value.current == 2
    assert volume_rows(b.store, brec.slot) == before


def test_bad_records_are_refused_whole(nodes) -> None:
    a, b = nodes
    _vol, brec = make_replicated(a, b)
    bad = [
        Change(0, [(Table.CHUNKS, ROW_PUT, b"k" * 16, b"v")]).encode(),            # node table
        Change(0, [(Table.INODES, ROW_PUT, (0).to_bytes(8, "big"), b"x")]).encode(),  # inode 0
        Change(0, [(Table.INODES, ROW_PUT, (5).to_bytes(8, "big"), b"junk")]).encode(),
        Change(0, [(99, ROW_PUT, (5).to_bytes(8, "big"), b"")]).encode(),
        b"\x07garbage",
    ]
    for raw in bad:
        with pytest.raises(CorruptRecord):
            with b.store.op() as op:
                replica.apply(op, brec, 1, 1, raw, RETAIN)
    assert b.applied(brec.slot) == 0
    assert volume_rows(b.store, brec.slot) == {t: [] for t in PER_VOLUME}


def test_checkpoint_waits_for_acknowledgement_and_trimmed_logs_say_so(tmp_path: Path) -> None:
    a = Node(tmp_path / "a")
    a.store.config = StoreConfig(changelog_retain=2)
    vol = Vol(a.store, a.fs, a.fs.create_volume("vol", block_size=BLOCK_SIZE))
    with a.store.op() as op:
        replica.set_replicated(op, vol.slot, True)
    for i in range(6):
        vol.create(b"f%d" % i)
    # record 1 (the volume's creation) predates replication; since then nothing was acked
    assert [seq for seq, _c in changes(a.store, vol.slot)] == list(range(2, 8))
    with a.store.op() as op:
        replica.acknowledge(op, vol.slot, 5, 2)
    assert [seq for seq, _c in changes(a.store, vol.slot)] == [6, 7]
    with a.store.op(adds_data=False) as op:
        with pytest.raises(LogTrimmed):
            replica.records_after(op, vol.slot, 2, 1 << 20)
        assert [s for s, _r in replica.records_after(op, vol.slot, 5, 1)] == [6]   # at least one
    a.store.close()


def test_a_replica_becomes_the_writer_and_ships_back(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    ship(a, vol.slot, b, brec, epoch=1)
    # the volume moves to b with epoch 2; a becomes its replica
    with b.store.op() as op:
        replica.admit_epoch(op, brec, 2)
        replica.set_replicated(op, brec.slot, True)
    bvol = Vol(b.store, Filesystem(b.store), brec)
    bvol.create(b"new-on-b", b"n" * 7000)
    bvol.fs.unlink(bvol.root, b"same")
    with a.store.op(adds_data=False) as op:
        arec = catalog.get(op, "vol")
    missing = b.applied(brec.slot) - a.applied(arec.slot)
    assert missing > 0 and ship(b, brec.slot, a, arec, epoch=2) == missing
    assert_same(a, vol.slot, b, brec.slot)


def test_a_fence_seen_before_the_copy_exists_still_refuses_the_old_writer(nodes) -> None:
    a, b = nodes
    vol, _ = make_replicated(a, b)
    with b.store.op() as op:
        replica.remember_fence(op, vol.record.volume_id, 5)
        replica.remember_fence(op, vol.record.volume_id, 3)   # never lowered
        assert replica.fence_of(op, vol.record.volume_id) == 5
    with b.store.op(adds_data=False) as op:
        brec = catalog.by_id(op, vol.record.volume_id)
    with pytest.raises(StaleEpoch) as stale:
        ship(a, vol.slot, b, brec, epoch=4)
    assert stale.value.current == 5
    assert b.applied(brec.slot) == 0
    assert ship(a, vol.slot, b, brec, epoch=5) > 0


def test_an_epoch_first_seen_as_a_fence_is_kept_with_the_copy(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    with b.store.op() as op:
        replica.remember_fence(op, vol.record.volume_id, 1)
    ship(a, vol.slot, b, brec, epoch=1)
    with b.store.op(adds_data=False) as op:
        assert replica.state(op, brec.slot).epoch == 1
