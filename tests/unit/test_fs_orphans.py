"""Unlinked but still held: orphans of open files and of the kernel's lookups, forget,
and recovery of the orphans a previous run left."""

from __future__ import annotations

import random
import stat
from pathlib import Path

import pytest

from cfs.errors import NotFound
from cfs.fs import Filesystem
from cfs.store import Store, Table

from unit_support import (
    BLOCK_SIZE, ROOT, Vol, assert_check_finds, assert_chunks_consistent, chunk_refs, has_inode, is_orphan,
    rows, stored_chunks,
)


def test_unlinked_file_stays_readable_while_it_is_open(vol: Vol) -> None:
    fs = vol.fs
    data = random.Random(9).randbytes(2 * BLOCK_SIZE + 5)
    ino = vol.create(b"f", data, keep_open=True)          # one handle from create
    fs.open(ino, write=False)                             # and a second one
    fs.unlink(vol.root, b"f")
    assert vol.names(vol.root) == []
    assert is_orphan(vol.store, ino)
    assert vol.inode(ino).nlink == 0
    assert vol.read_all(ino) == data
    fs.write(ino, 0, b"still writable")
    assert fs.read(ino, 0, 14) == b"still writable"
    with pytest.raises(NotFound):
        fs.link(ino, vol.root, b"again")                  # no resurrection

    fs.forget(ino, 1)                                     # the kernel's lookups do not keep it
    fs.release(ino)
    assert has_inode(vol.store, ino)
    fs.release(ino)
    assert not has_inode(vol.store, ino)
    assert not is_orphan(vol.store, ino)
    assert chunk_refs(vol.store) == {}
    assert stored_chunks(vol.store) == set()
    with pytest.raises(NotFound):
        fs.getattr(ino)


def test_unlinked_file_that_is_not_open_goes_at_once_though_the_kernel_holds_lookups(vol: Vol) -> None:
    """The kernel may hold a lookup for long after unlink; the space must be free when unlink returns."""
    ino = vol.create(b"f", random.Random(19).randbytes(BLOCK_SIZE))
    vol.fs.lookup(vol.root, b"f")
    vol.fs.unlink(vol.root, b"f")
    assert not has_inode(vol.store, ino)
    assert chunk_refs(vol.store) == {}
    vol.fs.forget(ino, 2)                                 # the forgets that follow find nothing to do
    assert_chunks_consistent(vol.store)


def test_unlink_of_a_file_nobody_holds_destroys_it_at_once(vol: Vol) -> None:
    ino = vol.create(b"f", b"data")
    vol.fs.setxattr(ino, b"user.a", b"b", 0)
    vol.fs.forget(ino, 1)
    vol.fs.unlink(vol.root, b"f")
    assert not has_inode(vol.store, ino)
    assert not is_orphan(vol.store, ino)
    assert chunk_refs(vol.store) == {}
    lo, hi = ino.to_bytes(8, "big"), (ino + 1).to_bytes(8, "big")
    assert rows(vol.store, Table.XATTRS, lo, hi) == []


def test_removed_directory_held_by_the_kernel_is_an_orphan_until_forgotten(vol: Vol) -> None:
    d = vol.mkdir(b"d")
    vol.fs.rmdir(vol.root, b"d")
    assert is_orphan(vol.store, d)
    assert vol.inode(d).nlink == 0
    with pytest.raises(NotFound):
        vol.fs.create(d, b"x", 0o644, ROOT)              # nothing is created in a removed directory
    vol.fs.forget(d, 1)
    assert not has_inode(vol.store, d)


def test_unlinked_fifo_held_by_the_kernel_is_an_orphan_until_forgotten(vol: Vol) -> None:
    """The kernel opens a FIFO without an open reaching us; fstat on it must still work."""
    fifo = vol.fs.mknod(vol.root, b"p", stat.S_IFIFO | 0o644, 0, ROOT).ino
    vol.fs.unlink(vol.root, b"p")
    assert is_orphan(vol.store, fifo)
    assert vol.fs.getattr(fifo).inode.nlink == 0
    vol.fs.forget(fifo, 1)
    assert not has_inode(vol.store, fifo)


def test_forget_never_destroys_a_linked_file(vol: Vol) -> None:
    ino = vol.create(b"f", b"data")
    vol.fs.forget(ino, 1)
    assert vol.read_all(ino) == b"data"
    assert not is_orphan(vol.store, ino)


@pytest.mark.closes_store("closes and reopens the store; checks the reopened store itself")
def test_recover_destroys_the_orphans_of_a_previous_run(store_path: Path, vol: Vol) -> None:
    ino = vol.create(b"f", random.Random(10).randbytes(BLOCK_SIZE), keep_open=True)
    kept = vol.create(b"kept", b"kept")
    vol.fs.unlink(vol.root, b"f")
    assert is_orphan(vol.store, ino)
    vol.store.close()

    store = Store(store_path)
    try:
        fs = Filesystem(store)
        assert fs.recover() == 1
        assert not has_inode(store, ino)
        assert not is_orphan(store, ino)
        assert len(chunk_refs(store)) == 1
        assert_chunks_consistent(store)
        assert fs.read(kept, 0, 10) == b"kept"
        assert fs.recover() == 0
        assert_check_finds(store)
    finally:
        store.close()
