"""Snapshots and clones in the core (cfs.store.snapshots, Filesystem.snapshot/clone).

A snapshot is a read-only copy of a volume's rows at one instant, in a slot of its own,
sharing every chunk; a clone is the same copy made writable. These tests build volumes
through the real core on a real store, and read what a snapshot holds back through the
core as the kernel would: its tree is the source's tree as it was, whatever the source
does afterwards. The ``vol`` fixture runs fsck at teardown, which counts references
over every slot.
"""

from __future__ import annotations

import hashlib
import random
import stat

import pytest

from cfs.codec import Change
from cfs.errors import InvalidName, ReadOnly, VolumeExists
from cfs.fs import SetAttr
from cfs.store import Table, catalog, snapshots
from cfs.types import NODE_ROOT, InodeId, volume_root

from test_replica import Node, make_replicated, nodes, ship, volume_rows, workload  # noqa: F401 (nodes: a fixture)
from unit_support import ROOT, Vol, assert_chunks_consistent, changes, chunk_refs, rows, stored_chunks


def tree(vol: Vol, directory: InodeId | None = None, prefix: str = "") -> dict[str, tuple[int, str]]:
    """path -> (mode, content hash, link target or xattrs) of everything under ``directory``."""
    out: dict[str, tuple[int, str]] = {}
    directory = vol.root if directory is None else directory
    for name, attr, _cookie in vol.fs.readdir(directory, 0):
        vol.fs.forget(attr.ino, 1)
        path = f"{prefix}/{name.decode()}"
        mode = attr.inode.mode
        if stat.S_ISDIR(mode):
            out[path] = (mode, "")
            out.update(tree(vol, attr.ino, path))
        elif stat.S_ISLNK(mode):
            out[path] = (mode, vol.fs.readlink(attr.ino).decode())
        else:
            data = vol.fs.read(attr.ino, 0, attr.inode.size + 1, mark_atime=False)
            xattrs = sorted((n, vol.fs.getxattr(attr.ino, n)) for n in vol.fs.listxattr(attr.ino))
            out[path] = (mode, hashlib.sha256(data + repr(xattrs).encode()).hexdigest())
    return out


def snapshot_vol(vol: Vol, name: str) -> Vol:
    return Vol(vol.store, vol.fs, vol.fs.snapshot(vol.record.name, name))


def test_a_snapshot_holds_the_volume_as_it_was_and_copies_no_chunk(vol: Vol) -> None:
    workload(vol)
    big = vol.create(b"big", bytes(range(256)) * 100)              # 25,600 bytes: 7 blocks
    vol.fs.write(big, 100, b"patched")                             # a patch over a stored block
    open_file = vol.create(b"cached", keep_open=True)
    vol.fs.write(open_file, 0, b"still in the write-back cache")    # cached writes are in it too
    before, chunks_before = tree(vol), stored_chunks(vol.store)
    refs_before = chunk_refs(vol.store)

    snap = snapshot_vol(vol, "s1")
    assert snap.record.name == "vol@s1" and snapshots.is_snapshot(snap.record)
    assert snapshots.snapshot_of(snap.record) == vol.record.volume_id
    assert tree(snap) == before
    assert stored_chunks(vol.store) == chunks_before                # no chunk copied
    assert all(chunk_refs(vol.store)[cid] == 2 * n for cid, n in refs_before.items())

    vol.fs.write(big, 0, b"changed after the snapshot")            # the source goes on
    vol.fs.unlink(vol.root, b"same")
    vol.fs.setattr(vol.find(vol.root, b"moved"), SetAttr(size=0))
    vol.fs.release(open_file)
    assert tree(vol) != before
    assert tree(snap) == before
    assert_chunks_consistent(vol.store)


def test_a_snapshot_is_read_only_and_reading_it_changes_nothing(vol: Vol) -> None:
    f = vol.create(b"f", b"data")
    snap = snapshot_vol(vol, "ro")
    g = snap.find(snap.root, b"f")
    rows_before = rows(vol.store, Table.INODES, *catalog.slot_range(snap.slot))
    for attempt in (lambda: snap.fs.create(snap.root, b"new", 0o644, ROOT),
                    lambda: snap.fs.mkdir(snap.root, b"d", 0o755, ROOT),
                    lambda: snap.fs.open(g, write=True),
                    lambda: snap.fs.open(g, write=False, truncate=True),
                    lambda: snap.fs.setattr(g, SetAttr(mode=0o600)),
                    lambda: snap.fs.setxattr(g, b"user.x", b"y", 0),
                    lambda: snap.fs.unlink(snap.root, b"f"),
                    lambda: snap.fs.rename(snap.root, b"f", snap.root, b"g"),
                    lambda: snap.fs.link(g, snap.root, b"h")):
        with pytest.raises(ReadOnly):
            attempt()
    assert snap.fs.read(g, 0, 10) == b"data"                       # reads mark no atime
    assert rows(vol.store, Table.INODES, *catalog.slot_range(snap.slot)) == rows_before
    assert vol.fs.read(f, 0, 10) == b"data"


def test_a_snapshot_outlives_its_volume_and_its_deletion_frees_what_it_held_alone(vol: Vol) -> None:
    vol.create(b"shared", random.Random(1).randbytes(10_000))
    replaced = vol.create(b"replaced", random.Random(2).randbytes(10_000))  # 3 distinct chunks
    snap = snapshot_vol(vol, "keep")
    assert snapshots.exclusive_bytes(vol.store.view(), snap.record) == 0
    vol.fs.write(replaced, 0, random.Random(3).randbytes(10_000))   # the old blocks are the snapshot's alone
    assert snapshots.exclusive_bytes(vol.store.view(), snap.record) == 10_000
    expected = tree(snap)

    vol.fs.remove_volume("vol")
    assert tree(snap) == expected                                    # it lives on
    assert_chunks_consistent(vol.store)
    vol.fs.remove_volume("vol@keep")
    assert stored_chunks(vol.store) == set() and chunk_refs(vol.store) == {}
    # the fixture's teardown check finds a store without volumes, and clean


def test_clones_are_independent_writable_volumes(vol: Vol) -> None:
    workload(vol)
    snap = snapshot_vol(vol, "base")
    expected = tree(snap)
    clone = Vol(vol.store, vol.fs, vol.fs.clone("vol@base", "copy", options={"size": "1G"}))
    assert not snapshots.is_snapshot(clone.record) and clone.record.options == {"size": "1G"}
    assert tree(clone) == expected
    assert vol.fs.volume_space("copy")["used_bytes"] == vol.fs.volume_space("vol@base")["used_bytes"] > 0
    clone.create(b"only-in-the-clone", b"c" * 5000)
    clone.fs.unlink(clone.root, b"same")
    direct = Vol(vol.store, vol.fs, vol.fs.clone("vol", "direct"))  # a clone of a volume as it is
    assert tree(direct) == tree(vol)
    assert tree(snap) == expected and tree(vol) == expected         # nothing else moved
    assert not clone.exists(clone.root, b"same") and clone.exists(clone.root, b"only-in-the-clone")
    assert vol.fs.volume_space("copy")["used_bytes"] > vol.fs.volume_space("vol@base")["used_bytes"]
    assert_chunks_consistent(vol.store)


def test_open_unlinked_files_are_left_out(vol: Vol) -> None:
    vol.create(b"kept", b"k")
    held = vol.create(b"held", b"h" * 9000, keep_open=True)
    vol.fs.unlink(vol.root, b"held")
    snap = snapshot_vol(vol, "s")
    assert list(tree(snap)) == ["/kept"]
    assert rows(vol.store, Table.ORPHANS, *catalog.slot_range(snap.slot)) == []
    vol.fs.release(held)


def test_names_and_refusals(vol: Vol) -> None:
    snapshot_vol(vol, "s")
    with pytest.raises(VolumeExists):
        vol.fs.snapshot("vol", "s")
    for bad in ("", "a/b", "x@y", ".."):
        with pytest.raises(InvalidName):
            vol.fs.snapshot("vol", bad)
    with pytest.raises(InvalidName):
        vol.fs.snapshot("vol@s", "again")                           # no snapshots of snapshots
    assert vol.fs.volume("vol@s").name == "vol@s"
    names = {r.name for r in vol.fs.volumes()}
    assert names == {"vol", "vol@s"}
    assert vol.fs.lookup(NODE_ROOT, b"vol@s").ino == volume_root(vol.fs.volume("vol@s").slot)


def test_a_snapshot_is_an_event_of_the_log_and_replicas_take_it_too(nodes) -> None:  # noqa: F811
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    ship(a, vol.slot, b, brec)
    snap = a.fs.snapshot("vol", "s1")
    vol.create(b"after", b"a" * 5000)                                 # not in the snapshot
    (seq, change), = [(s, c) for s, c in changes(a.store, vol.slot) if any(r[0] == snapshots.SNAPSHOT_EVENT
                                                                           for r in c.rows)]
    assert change.rows == [(snapshots.SNAPSHOT_EVENT, 1, b"s1", change.rows[0][3])]
    assert ship(a, vol.slot, b, brec) > 0
    with b.store.op(adds_data=False) as op:
        copy = catalog.by_id(op, snap.volume_id)
    assert copy is not None and copy.name == "vol@s1" and copy.slot != snap.slot
    assert volume_rows(a.store, snap.slot) == volume_rows(b.store, copy.slot)
    assert a.applied(vol.slot) == b.applied(brec.slot)
    assert isinstance(Change.decode(dict(changes(b.store, brec.slot))[seq].encode()), Change)
    assert_chunks_consistent(b.store)
