"""The store: operation atomicity, commit durability, chunk dedup and reclaim, the change log, ENOSPC."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

from cfs.check import check as fsck
from cfs.codec import ROW_DELETE, ROW_PUT, Inode, VolumeState, ino_key, pack_u64
from cfs.errors import CorruptRecord, FsError, LogTrimmed, NoSpace
from cfs.fs import Attr, Filesystem, SetAttr
from cfs.store import Store, StoreConfig, Table, catalog, changelog, replica
from cfs.store.tables import SCHEMA_VERSION
from cfs.types import LOCAL_MASK, InodeId, Slot, make_ino

from unit_support import (
    BLOCK_SIZE, ROOT, Vol, assert_check_finds, assert_chunks_consistent, block_refs, changes, chunk_refs,
    rows, stored_chunks,
)

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]


def meta(store: Store, key: bytes) -> bytes | None:
    return store.batch.get(key, db=store.db(Table.META))


# --- atomicity of one operation ----------------------------------------------------

class Boom(Exception):
    pass


@pytest.mark.replicated  # the test reads the change log
@pytest.mark.damages_store("bare inode rows (locals 100 and 102) that no directory names and no counter knows",
                           finds=("unreachable-inode", "unreachable-inode", "volume-state"))
def test_failed_op_rolls_back_every_row_of_that_op_and_nothing_else(vol: Vol) -> None:
    store, slot = vol.store, vol.slot
    kept = make_ino(slot, 100)
    with store.op() as op:                      # an earlier, still uncommitted operation
        op.put(Table.META, b"test-a", b"1")
        op.put(Table.INODES, ino_key(kept), Inode(0o100644, 0, 0, 1).encode())
    log_before = changes(store, slot)
    chunks_before = chunk_refs(store)

    with pytest.raises(Boom):
        with store.op() as op:
            op.put(Table.META, b"test-a", b"changed")
            op.put(Table.META, b"test-b", b"2")
            op.delete(Table.INODES, ino_key(kept))
            op.put(Table.INODES, ino_key(make_ino(slot, 101)), Inode(0o100644, 0, 0, 1).encode())
            op.put(Table.CHUNKS, b"c" * 16, b"\x01\x00data")
            op.put(Table.CHUNKREFS, b"c" * 16, b"x")
            raise Boom()

    def check() -> None:
        assert meta(store, b"test-a") == b"1"
        assert meta(store, b"test-b") is None
        assert rows(store, Table.INODES, ino_key(kept), ino_key(InodeId(kept + 2))) == [
            (ino_key(kept), Inode(0o100644, 0, 0, 1).encode())]
        assert changes(store, slot) == log_before
        assert chunk_refs(store) == chunks_before

    check()
    store.commit()
    check()
    # The store is usable again, and the next record follows on without a gap.
    with store.op() as op:
        op.put(Table.INODES, ino_key(make_ino(slot, 102)), Inode(0o100644, 0, 0, 1).encode())
    last = log_before[-1][0]
    assert [seq for seq, _ in changes(store, slot)] == [seq for seq, _ in log_before] + [last + 1]


def test_operations_do_not_nest(store: Store) -> None:
    with store.op():
        with pytest.raises(AssertionError):
            with store.op():
                pass
    with store.op():  # and the refusal did not leave the store stuck
        pass


def test_commit_inside_an_operation_is_refused_and_commits_nothing(store_path: Path, store: Store) -> None:
    with pytest.raises(Boom):
        with store.op() as op:
            op.put(Table.META, b"half", b"done")
            with pytest.raises(AssertionError):
                store.commit()                 # e.g. an fsync arriving while a readdir is open
            raise Boom()
    store.close()
    store = Store(store_path)
    try:
        assert meta(store, b"half") is None
    finally:
        store.close()


# --- durability --------------------------------------------------------------------

@pytest.mark.closes_store("closes and reopens the store; checks the reopened store itself")
def test_committed_data_survives_close_and_reopen(store_path: Path, vol: Vol) -> None:
    content = random.Random(1).randbytes(3 * BLOCK_SIZE + 17)
    ino = vol.create(b"file", content)
    vol.fs.setxattr(ino, b"user.k", b"v", 0)
    vol.fs.sync()
    expected_refs = chunk_refs(vol.store)
    vol.store.close()

    store = Store(store_path)
    try:
        fs = Filesystem(store)
        again = Vol(store, fs, fs.volume("vol"))
        assert again.find(again.root, b"file") == ino
        assert again.read_all(ino) == content
        assert fs.getxattr(ino, b"user.k") == b"v"
        assert chunk_refs(store) == expected_refs
        assert_chunks_consistent(store)
        assert_check_finds(store)
    finally:
        store.close()


def test_node_id_is_made_once(store_path: Path) -> None:
    store = Store(store_path)
    node_id = store.node_id()
    assert len(node_id) == 16
    store.close()
    store = Store(store_path)
    try:
        assert store.node_id() == node_id
    finally:
        store.close()


def test_schema_of_another_version_is_refused(store_path: Path) -> None:
    store = Store(store_path)
    with store.op() as op:
        op.put(Table.META, b"schema", pack_u64(99))
    store.close()
    with pytest.raises(CorruptRecord):
        Store(store_path)


@pytest.mark.parametrize("old", [1, 2, 3])
def test_older_schema_is_taken_and_marked_4(store_path: Path, old: int) -> None:
    """Schemas 1 to 3 differ only in row layouts this cfs still reads (readdir-order
    rows with the name alone, block rows without patches or reservations) and lack
    snapshots."""
    store = Store(store_path)
    with store.op() as op:
        op.put(Table.META, b"schema", pack_u64(old))
    store.close()
    store = Store(store_path)
    try:
        assert store.view().get(Table.META, b"schema") == pack_u64(SCHEMA_VERSION) == pack_u64(4)
    finally:
        store.close()


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cfs.fs import Caller, Filesystem
    from cfs.store import Store, StoreConfig
    from cfs.types import NODE_ROOT

    store = Store(Path(sys.argv[1]), StoreConfig(commit_bytes=1 << 30))
    fs = Filesystem(store)
    root = fs.lookup(NODE_ROOT, b"vol").ino
    synced = fs.create(root, b"synced", 0o644, Caller()).ino
    fs.write(synced, 0, b"S" * 10000)
    fs.sync()
    commits = store.commits
    lost = fs.create(root, b"lost", 0o644, Caller()).ino
    fs.write(lost, 0, b"L" * 10000)
    fs.write(synced, 0, b"X" * 5000)
    assert store.commits == commits, "nothing may commit after the sync"
    print("ready", flush=True)
    time.sleep(600)
""")


def test_kill_9_keeps_what_was_synced_and_loses_the_uncommitted_batch(store_path: Path) -> None:
    store = Store(store_path)
    Filesystem(store).create_volume("vol", block_size=BLOCK_SIZE, replicated=True)  # keeps its log
    store.close()

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store_path)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()  # type: ignore[union-attr]
        assert line == "ready\n", child.stderr.read()  # type: ignore[union-attr]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL

    store = Store(store_path)
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.volume("vol"))
        assert [seq for seq, _ in changes(store, vol.slot)] == [1, 2, 3]  # volume, create, write
        assert vol.names(vol.root) == [b"synced"]
        assert vol.read_all(vol.find(vol.root, b"synced")) == b"S" * 10000
        assert_chunks_consistent(store)
    finally:
        store.close()


# --- chunks: dedup and reclaim -----------------------------------------------------

def test_identical_blocks_are_stored_once_with_counted_references(vol: Vol) -> None:
    a, b = b"a" * BLOCK_SIZE, b"b" * 100
    ino1 = vol.create(b"one", a + a + b)            # block 0 and 1 identical, block 2 short
    ino2 = vol.create(b"two", b + bytes(BLOCK_SIZE - 100) + a)
    refs = chunk_refs(vol.store)
    assert sorted(refs.values()) == [2, 3]          # a: 3 references, b: 2
    assert len(stored_chunks(vol.store)) == 2
    assert_chunks_consistent(vol.store)
    # stored_units counts every reference (st_blocks is per file), not unique bytes
    assert vol.inode(ino1).stored_units == 2 * (BLOCK_SIZE // 512) + 1
    assert vol.inode(ino2).stored_units == 1 + BLOCK_SIZE // 512


def test_dedup_across_volumes(vol: Vol) -> None:
    other = Vol(vol.store, vol.fs, vol.fs.create_volume("other", block_size=BLOCK_SIZE))
    content = random.Random(2).randbytes(2 * BLOCK_SIZE)
    vol.create(b"f", content)
    other.create(b"g", content)
    assert sorted(chunk_refs(vol.store).values()) == [2, 2]
    assert len(stored_chunks(vol.store)) == 2
    assert other.read_all(other.find(other.root, b"g")) == content


def test_chunk_is_reclaimed_with_its_last_reference(vol: Vol) -> None:
    fs = vol.fs
    shared = random.Random(3).randbytes(BLOCK_SIZE)
    one = vol.create(b"one", shared)
    two = vol.create(b"two", shared + b"tail")
    for ino in (one, two):
        fs.forget(ino, 1)
    assert sorted(chunk_refs(vol.store).values()) == [1, 2]

    fs.unlink(vol.root, b"one")
    assert sorted(chunk_refs(vol.store).values()) == [1, 1]
    fs.write(two, BLOCK_SIZE, b"TAIL")               # overwriting drops the old tail chunk
    assert sorted(chunk_refs(vol.store).values()) == [1, 1]
    fs.unlink(vol.root, b"two")
    assert chunk_refs(vol.store) == {}
    assert stored_chunks(vol.store) == set()
    assert block_refs(vol.store) == {}


def test_overwriting_a_block_with_zeros_frees_its_chunk(vol: Vol) -> None:
    ino = vol.create(b"f", b"x" * (2 * BLOCK_SIZE))
    vol.fs.write(ino, 0, bytes(BLOCK_SIZE))
    assert vol.inode(ino).stored_units == BLOCK_SIZE // 512
    assert sum(chunk_refs(vol.store).values()) == 1
    vol.fs.write(ino, BLOCK_SIZE, bytes(BLOCK_SIZE))
    assert vol.inode(ino).stored_units == 0
    assert chunk_refs(vol.store) == {}
    assert vol.read_all(ino) == bytes(2 * BLOCK_SIZE)


def test_reuse_after_reclaim_stores_the_chunk_again(vol: Vol) -> None:
    content = b"z" * 1000
    ino = vol.create(b"f", content)
    vol.fs.forget(ino, 1)
    vol.fs.unlink(vol.root, b"f")
    assert stored_chunks(vol.store) == set()
    again = vol.create(b"g", content)
    assert vol.read_all(again) == content
    assert_chunks_consistent(vol.store)


# --- change log --------------------------------------------------------------------

def _mutations(vol: Vol) -> list[tuple[str, Callable[[], object]]]:
    """Every kind of call that changes a volume, in an order where each one succeeds."""
    fs, root = vol.fs, vol.root
    made: dict[str, InodeId] = {}

    def make(key: str, call: Callable[[], Attr]) -> Callable[[], None]:
        def run() -> None:
            made[key] = call().ino
        return run

    def create_and_close() -> None:
        made["f"] = vol.create(b"f")

    return [
        ("create", create_and_close),
        ("create, kept open", make("o", lambda: fs.create(root, b"o", 0o644, ROOT))),
        ("mkdir", make("d", lambda: fs.mkdir(root, b"d", 0o755, ROOT))),
        ("symlink", make("s", lambda: fs.symlink(root, b"s", b"f", ROOT))),
        ("mknod", make("p", lambda: fs.mknod(root, b"p", 0o10644, 0, ROOT))),
        ("write", lambda: fs.write(made["f"], 10, b"x" * (BLOCK_SIZE + 5))),
        ("read updating atime", lambda: fs.read(made["f"], 0, 1)),
        ("truncate", lambda: fs.setattr(made["f"], SetAttr(size=3))),
        ("chmod", lambda: fs.setattr(made["f"], SetAttr(mode=0o600))),
        ("utimes", lambda: fs.setattr(made["f"], SetAttr(atime_ns=1, mtime_ns=2))),
        ("setxattr", lambda: fs.setxattr(made["f"], b"user.a", b"1", 0)),
        ("removexattr", lambda: fs.removexattr(made["f"], b"user.a")),
        ("link", lambda: fs.link(made["f"], made["d"], b"hard")),
        ("rename", lambda: fs.rename(root, b"f", made["d"], b"moved")),
        ("exchange", lambda: fs.rename(made["d"], b"moved", root, b"s", exchange=True)),
        ("unlink of one of two links", lambda: fs.unlink(made["d"], b"hard")),
        ("unlink of an open file", lambda: fs.unlink(root, b"o")),
        ("release destroying the orphan", lambda: fs.release(made["o"])),
        ("unlink of a fifo", lambda: fs.unlink(root, b"p")),
        ("unlink", lambda: fs.unlink(made["d"], b"moved")),
        ("rmdir", lambda: fs.rmdir(root, b"d")),
    ]


@pytest.mark.replicated  # the test reads the change log
def test_every_mutating_operation_appends_exactly_one_record(vol: Vol) -> None:
    log = changes(vol.store, vol.slot)
    assert [seq for seq, _ in log] == [1]  # creating the volume made its root
    for what, mutate in _mutations(vol):
        mutate()
        after = changes(vol.store, vol.slot)
        assert [seq for seq, _ in after] == [seq for seq, _ in log] + [log[-1][0] + 1], what
        assert after[-1][1].rows, what
        log = after
    assert vol.names(vol.root) == [b"s"]


@pytest.mark.replicated  # the test reads the change log
def test_reads_and_failed_operations_append_nothing(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"f", b"data")
    fs.read(ino, 0, 10)                      # the first read after a write updates atime
    list(fs.readdir(vol.root, 0))            # and so does the first listing after a change
    log = changes(vol.store, vol.slot)
    fs.getattr(ino)
    fs.lookup(vol.root, b"f")
    list(fs.readdir(vol.root, 0))
    fs.listxattr(ino)
    fs.opendir(vol.root)
    fs.open(ino, write=True)
    fs.read(ino, 0, 10)                      # atime is newer than mtime now: no update
    fs.statfs()
    for fail in (lambda: fs.mkdir(vol.root, b"f", 0o755, ROOT),
                 lambda: fs.unlink(vol.root, b"nothing"),
                 lambda: fs.rmdir(vol.root, b"f"),
                 lambda: fs.getxattr(ino, b"user.none"),
                 lambda: fs.removexattr(ino, b"user.none")):
        with pytest.raises(FsError):
            fail()
    assert changes(vol.store, vol.slot) == log


def test_change_keys_are_volume_local_and_replay_to_the_volume(vol: Vol) -> None:
    """Replaying a volume's log from the start rebuilds exactly its rows, with local keys."""
    other = Vol(vol.store, vol.fs, vol.fs.create_volume("other", block_size=BLOCK_SIZE, replicated=True))
    assert other.slot == 2  # so node inode numbers carry slot bits the log must drop
    fs = other.fs
    d = other.mkdir(b"dir")
    f = other.create(b"file", random.Random(4).randbytes(2 * BLOCK_SIZE + 1), parent=d)
    fs.setxattr(f, b"user.x", b"y", 0)
    fs.symlink(other.root, b"link", b"dir/file", ROOT)
    fs.setattr(f, SetAttr(size=BLOCK_SIZE + 3))
    g = other.create(b"gone", b"bye")
    fs.forget(g, 1)
    fs.unlink(other.root, b"gone")
    fs.rename(d, b"file", other.root, b"file")
    fs.rmdir(other.root, b"dir")
    vol.create(b"noise-in-another-volume", b"n")

    replayed: dict[tuple[int, bytes], bytes] = {}
    log = changes(other.store, other.slot)
    assert [seq for seq, _ in log] == list(range(1, len(log) + 1))
    for _seq, change in log:
        for table, kind, key, value in change.rows:
            assert int.from_bytes(key[:8], "big") <= LOCAL_MASK, "keys carry no slot"
            if kind == ROW_PUT:
                replayed[(table, key)] = value
            else:
                assert kind == ROW_DELETE
                del replayed[(table, key)]

    lo, hi = catalog.slot_range(other.slot)
    actual: dict[tuple[int, bytes], bytes] = {}
    for table in Table:
        if table.per_volume:
            for key, value in rows(other.store, table, lo, hi):
                local = (int.from_bytes(key[:8], "big") & LOCAL_MASK).to_bytes(8, "big")
                actual[(int(table), local + key[8:])] = value
    assert replayed == actual


def acknowledge(store: Store, slot: Slot, seq: int) -> None:
    """Every replica holds the records up to ``seq``, as the replicator records it."""
    with store.op(adds_data=False) as op:
        replica.acknowledge(op, slot, seq, store.config.changelog_retain)


def test_log_keeps_changelog_retain_records_beyond_the_checkpoint(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", StoreConfig(changelog_retain=5))
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.create_volume("vol", block_size=BLOCK_SIZE, replicated=True))
        ino = vol.create(b"f")
        for i in range(10):
            fs.write(ino, i, b"x")
        # no replica acknowledged anything: every record stays, however many
        assert [seq for seq, _ in changes(store, vol.slot)] == list(range(1, 13))  # volume, create, 10 writes
        acknowledge(store, vol.slot, 12)
        assert [seq for seq, _ in changes(store, vol.slot)] == list(range(8, 13))
        for i in range(10, 20):
            fs.write(ino, i, b"x")
        # each append dropped the checkpointed records more than 5 behind; none unacknowledged
        assert [seq for seq, _ in changes(store, vol.slot)] == list(range(13, 23))
        for seq in range(23, 28):   # replicas keeping up: the log holds the last 5
            fs.write(ino, seq, b"x")
            acknowledge(store, vol.slot, seq)
            assert [s for s, _ in changes(store, vol.slot)] == list(range(seq - 4, seq + 1))
        with store.op(adds_data=False) as op:
            state = changelog.load_state(op, vol.slot)
        assert (state.next_seq, state.checkpoint_seq) == (28, 27)
    finally:
        store.close()


def test_lowering_changelog_retain_trims_the_log(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", StoreConfig(changelog_retain=50))
    fs = Filesystem(store)
    record = fs.create_volume("vol", block_size=BLOCK_SIZE, replicated=True)
    ino = Vol(store, fs, record).create(b"f")
    for i in range(20):
        fs.write(ino, i, b"x")
    acknowledge(store, record.slot, 22)   # all checkpointed, and fewer than 50
    assert len(changes(store, record.slot)) == 22
    store.close()

    store = Store(tmp_path / "store", StoreConfig(changelog_retain=3))
    try:
        fs = Filesystem(store)
        fs.write(ino, 0, b"y")
        assert [seq for seq, _ in changes(store, record.slot)] == [21, 22, 23]
    finally:
        store.close()


@pytest.mark.replicated  # the test reads the change log
def test_each_volume_has_its_own_log(vol: Vol) -> None:
    other = Vol(vol.store, vol.fs, vol.fs.create_volume("other", block_size=BLOCK_SIZE, replicated=True))
    vol.create(b"a")
    vol.create(b"b")
    other.create(b"c")
    assert [seq for seq, _ in changes(vol.store, vol.slot)] == [1, 2, 3]
    assert [seq for seq, _ in changes(vol.store, other.slot)] == [1, 2]
    expected = changes(vol.store, other.slot)
    with vol.store.op(adds_data=False) as op:  # what replication reads
        assert [seq for seq, _ in changelog.read(op, vol.slot)] == [1, 2, 3]
        assert [seq for seq, _ in changelog.read(op, vol.slot, after=1)] == [2, 3]
        assert list(changelog.read(op, vol.slot, after=3)) == []
        assert list(changelog.read(op, other.slot)) == expected


def test_volume_removal_drops_its_log_and_rows(vol: Vol) -> None:
    other = Vol(vol.store, vol.fs, vol.fs.create_volume("other", block_size=BLOCK_SIZE, replicated=True))
    other.create(b"c", b"content")
    assert [seq for seq, _ in changes(vol.store, other.slot)] == [1, 2, 3]  # volume, create, write
    vol.fs.remove_volume("other")
    assert changes(vol.store, other.slot) == []
    lo, hi = catalog.slot_range(other.slot)
    for table in Table:
        if table.per_volume:
            assert rows(vol.store, table, lo, hi) == [], table
    assert [r.name for r in vol.fs.volumes()] == ["vol"]


# --- a volume without replicas keeps no change log -----------------------------------

def volume_state(vol: Vol) -> VolumeState:
    with vol.store.op(adds_data=False) as op:
        return changelog.load_state(op, vol.slot)


def assert_fsck_clean(store: Store) -> None:
    store.commit()
    report = fsck(store)
    assert report.clean, report.lines()


def test_a_volume_without_replicas_keeps_no_records_but_counts_its_changes(vol: Vol) -> None:
    state = volume_state(vol)
    assert (state.next_seq, state.checkpoint_seq) == (2, 1)  # creating the volume was change 1
    for what, mutate in _mutations(vol):
        before = volume_state(vol).next_seq
        mutate()
        state = volume_state(vol)
        assert (state.next_seq, state.checkpoint_seq) == (before + 1, before), what
        assert changes(vol.store, vol.slot) == [], what
    ino = vol.create(b"many")
    before = volume_state(vol).next_seq
    for i in range(300):
        vol.fs.write(ino, 7 * i, b"w" * 9)
    state = volume_state(vol)
    assert (state.next_seq, state.checkpoint_seq) == (before + 300, before + 299)
    assert rows(vol.store, Table.CHANGELOG) == []
    assert_fsck_clean(vol.store)


@pytest.mark.replicated
def test_records_left_from_replicated_times_go_at_the_next_operation(vol: Vol) -> None:
    other = Vol(vol.store, vol.fs, vol.fs.create_volume("other", block_size=BLOCK_SIZE, replicated=True))
    vol.create(b"a", b"1")
    vol.create(b"b", b"2")
    other.create(b"c", b"3")
    assert [seq for seq, _ in changes(vol.store, vol.slot)] == [1, 2, 3, 4, 5]  # volume, 2 x (create, write)
    with vol.store.op() as op:
        replica.set_replicated(op, vol.slot, False)   # its replicas went away
    # no volume row changed: nothing appended, nothing trimmed yet
    assert [seq for seq, _ in changes(vol.store, vol.slot)] == [1, 2, 3, 4, 5]
    vol.mkdir(b"d")
    assert changes(vol.store, vol.slot) == []   # the leftovers, and no record of the mkdir
    state = volume_state(vol)
    assert (state.next_seq, state.checkpoint_seq) == (7, 6)
    assert [seq for seq, _ in changes(vol.store, other.slot)] == [1, 2, 3]   # still replicated
    assert vol.slot not in vol.store.logless                # that trim found records
    vol.mkdir(b"e")
    assert vol.slot in vol.store.logless                    # this one none: no more looking
    with vol.store.op() as op:
        replica.set_replicated(op, vol.slot, True)          # a replica again
    vol.mkdir(b"f")
    assert vol.slot not in vol.store.logless and len(changes(vol.store, vol.slot)) == 1
    with vol.store.op() as op:
        replica.set_replicated(op, vol.slot, False)
    vol.mkdir(b"g")
    assert changes(vol.store, vol.slot) == []
    assert_fsck_clean(vol.store)


def test_whether_a_volume_keeps_its_log_is_remembered_until_its_row_changes(vol: Vol) -> None:
    """Store.replicated remembers the volrepl row; writing it (committed or not) and a
    rolled-back batch make the next operation read it again."""
    vol.mkdir(b"a")
    assert changes(vol.store, vol.slot) == []
    with pytest.raises(RuntimeError):                     # turned on, then rolled back
        with vol.store.op() as op:
            replica.set_replicated(op, vol.slot, True)
            assert vol.store.replicated(op, vol.slot)
            raise RuntimeError("abandoned")
    vol.mkdir(b"b")
    assert changes(vol.store, vol.slot) == []
    with vol.store.op() as op:                            # a replica joins
        replica.set_replicated(op, vol.slot, True)
    vol.mkdir(b"c")
    (_seq, change), = changes(vol.store, vol.slot)
    assert {table for table, *_ in change.rows} == {Table.INODES, Table.DIRENTS, Table.DIRORDER}
    with pytest.raises(AssertionError, match="replication turned on after"):
        with vol.store.op() as op:                        # rows left unrecorded, then turned on
            replica.set_replicated(op, vol.slot, False)
        with vol.store.op() as op:
            op.put(Table.SYMLINKS, ino_key(make_ino(vol.slot, LOCAL_MASK)), b"x")
            replica.set_replicated(op, vol.slot, True)
    assert not vol.store.replicated(vol.store.view(), vol.slot)
    assert_fsck_clean(vol.store)


def test_a_volume_without_replicas_emptied_of_files_leaves_the_store_as_it_was(vol: Vol) -> None:
    """Every table holds as many rows as right after the volume was created: no change-log
    records, no chunks, no counts, no orphans left behind; and the LMDB pages in use
    (Store.used_pages) are back to within 10% of what they were."""
    fs, root = vol.fs, vol.root

    def counts() -> dict[Table, int]:
        return {table: len(rows(vol.store, table)) for table in Table}

    empty, used, pages = counts(), volume_state(vol).used_bytes, vol.store.used_pages()
    assert empty[Table.CHANGELOG] == empty[Table.CHUNKS] == empty[Table.CHUNKREFS] == 0
    data = random.Random(8).randbytes(5 * BLOCK_SIZE + 3)
    d = vol.mkdir(b"d")
    sub = vol.mkdir(b"sub", parent=d)
    f = vol.create(b"f", data, parent=d)
    g = vol.create(b"g", data[:BLOCK_SIZE] + b"tail")          # shares a chunk with f
    fs.setxattr(f, b"user.k", b"v", 0)
    fs.forget(fs.link(f, root, b"hard").ino, 1)
    sym = fs.symlink(root, b"sym", b"d/f", ROOT).ino
    fifo = fs.mknod(sub, b"fifo", 0o10644, 0, ROOT).ino
    opened = vol.create(b"open", b"o" * 3000, keep_open=True)
    for i in range(50):                                        # many operations, many sequences
        fs.write(g, i * 100, bytes([i]) * 100)
    full = counts()
    assert full[Table.CHUNKS] > 0 and full[Table.CHUNKREFS] > 0 and full[Table.XATTRS] == 1
    assert full[Table.CHANGELOG] == 0
    assert vol.store.used_pages() > 1.1 * pages

    fs.unlink(root, b"open")                                   # open: an orphan until released
    assert counts()[Table.ORPHANS] == empty[Table.ORPHANS] + 1
    fs.release(opened)
    for parent, name in ((d, b"f"), (root, b"hard"), (root, b"g"), (root, b"sym"), (sub, b"fifo")):
        fs.unlink(parent, name)
    fs.rmdir(d, b"sub")
    fs.rmdir(root, b"d")
    for ino in (d, sub, f, g, sym, fifo, opened):              # the kernel forgets them last
        fs.forget(ino, 1)
    assert vol.names(root) == []
    after = counts()
    assert after == empty, {table.name: (empty[table], n) for table, n in after.items() if n != empty[table]}
    assert after[Table.CHANGELOG] == after[Table.CHUNKS] == after[Table.CHUNKREFS] == 0
    assert volume_state(vol).used_bytes == used
    assert vol.store.used_pages() <= 1.1 * pages, (pages, vol.store.used_pages())
    assert_fsck_clean(vol.store)


def test_a_later_replica_of_a_volume_without_replicas_must_copy_it_whole(vol: Vol) -> None:
    with vol.store.op(adds_data=False) as op, pytest.raises(LogTrimmed):   # even its creation,
        replica.records_after(op, vol.slot, 0, 1 << 20)                     # change 1, left no record
    vol.create(b"f", b"data")
    vol.mkdir(b"d")
    state = volume_state(vol)
    head = state.next_seq - 1
    assert head == 4   # volume, create, write, mkdir
    with vol.store.op(adds_data=False) as op:
        for after in range(head):
            with pytest.raises(LogTrimmed):
                replica.records_after(op, vol.slot, after, 1 << 20)
        assert replica.records_after(op, vol.slot, head, 1 << 20) == []   # up to date: nothing to send
        assert replica.copy_origin(op, vol.slot) == (head, state.next_local)   # a whole copy of it, as of now


# --- a full disk -------------------------------------------------------------------

def _fill(vol: Vol, limit: int = 200) -> dict[bytes, tuple[InodeId, bytes]]:
    """Write 1 MiB files until the store refuses one; return name -> (inode, content) of all files.

    The file whose write was refused stays, empty: the refused write changed nothing.
    """
    written: dict[bytes, tuple[InodeId, bytes]] = {}
    for i in range(limit):
        name = b"f%03d" % i
        content = random.Random(i).randbytes(MiB)
        try:
            ino = vol.create(name)
        except NoSpace:
            return written
        try:
            vol.fs.write(ino, 0, content)
        except NoSpace:
            written[name] = (ino, b"")
            return written
        written[name] = (ino, content)
    pytest.fail(f"the store took {limit} MiB on a 64 MiB disk without refusing")


def test_full_disk_refuses_writes_keeps_committed_data_and_frees_space(small_disk: Path) -> None:
    config = StoreConfig(reserve_bytes=8 * MiB, commit_bytes=4 * MiB)
    store = Store(small_disk / "store", config)
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.create_volume("vol", block_size=64 * 1024))
        written = _fill(vol)
        assert sum(1 for _ino, content in written.values() if content) >= 20, \
            "most of the disk should have been usable"
        some_ino = next(iter(written.values()))[0]
        with pytest.raises(NoSpace):
            fs.write(some_ino, MiB, random.Random(-1).randbytes(MiB))
        # Reads, and the data written before, are unaffected.
        for ino, content in written.values():
            assert vol.read_all(ino) == content
        assert fs.getattr(some_ino).inode.size == MiB
        assert_chunks_consistent(store)

        for name in list(written)[:10]:
            fs.unlink(vol.root, name)
            fs.forget(written.pop(name)[0], 1)
        fresh = random.Random(-2).randbytes(MiB)
        ino = vol.create(b"fresh", fresh)
        written[b"fresh"] = (ino, fresh)
        fs.sync()
    finally:
        store.close()

    store = Store(small_disk / "store", config)
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.volume("vol"))
        assert sorted(vol.names(vol.root)) == sorted(written)
        for name, (ino, content) in written.items():
            assert vol.find(vol.root, name) == ino
            assert vol.read_all(ino) == content
        assert_chunks_consistent(store)
    finally:
        store.close()


def _fill_one_file(vol: Vol, name: bytes, seed: int) -> tuple[InodeId, int]:
    """Append 1 MiB pieces to one file until the store refuses one; return (inode, size taken)."""
    ino = vol.create(name)
    size = 0
    while True:
        try:
            vol.fs.write(ino, size, random.Random(seed + size).randbytes(MiB))
        except NoSpace:
            return ino, size
        size += MiB
        assert size < 200 * MiB, "a 64 MiB disk took 200 MiB"


def test_space_freed_by_a_delete_is_used_again_without_losing_writes(small_disk: Path) -> None:
    """LMDB reuses freed pages only a couple of commits later; until then a batch grows the file.

    Every write the store accepted after the delete must still be there: a commit that
    fails for space must not take acknowledged writes with it, nor surface as a bug.
    """
    store = Store(small_disk / "store", StoreConfig(reserve_bytes=4 * MiB))
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.create_volume("vol", block_size=64 * 1024))
        first, first_size = _fill_one_file(vol, b"first", 0)
        assert first_size >= 30 * MiB
        fs.forget(first, 1)
        fs.unlink(vol.root, b"first")

        second, second_size = _fill_one_file(vol, b"second", 1000)
        assert second_size >= first_size // 2
        assert vol.inode(second).size == second_size
        for offset in range(0, second_size, MiB):
            assert fs.read(second, offset, MiB) == random.Random(1000 + offset).randbytes(MiB), offset
        assert_chunks_consistent(store)
    finally:
        store.close()


def test_the_disk_keeps_the_reserve_and_deletes_work_after_freed_space_is_reused(small_disk: Path) -> None:
    """Data may land in the store's free pages or grow the file (LMDB cannot always reuse
    them), so a store with no free pages stops while the disk still holds the reserve,
    and one that reuses freed pages stops while they still hold it: either way a delete,
    whose copied B-tree pages need room, works."""
    reserve = 4 * MiB
    store = Store(small_disk / "store", StoreConfig(reserve_bytes=reserve))
    try:
        fs = Filesystem(store)
        vol = Vol(store, fs, fs.create_volume("vol", block_size=64 * 1024))
        for turn in range(3):
            name = b"file-%d" % turn
            ino, size = _fill_one_file(vol, name, turn * 1000)
            assert size >= 20 * MiB
            if turn == 0:
                st = os.statvfs(small_disk)
                assert st.f_bavail * st.f_frsize >= reserve
            fs.forget(ino, 1)
            fs.unlink(vol.root, name)
            fs.sync()
        assert vol.names(vol.root) == []
        assert_chunks_consistent(store)
    finally:
        store.close()
