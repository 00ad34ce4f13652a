"""rename without FUSE: replacing files and directories, link counts and times across
directories, RENAME_NOREPLACE and RENAME_EXCHANGE, renames that must change nothing."""

from __future__ import annotations

import errno

import pytest

from cfs.errors import Exists, InvalidArgument, IsADirectory, NotADirectory, NotEmpty, NotFound

from unit_support import OLD, Vol, age, assert_chunks_consistent, changes, chunk_refs, has_inode, is_orphan


def test_rename_over_a_file_replaces_it_and_frees_it(vol: Vol) -> None:
    fs = vol.fs
    a = vol.create(b"a", b"A" * 100)
    b = vol.create(b"b", b"B" * 100)
    fs.forget(b, 1)
    fs.rename(vol.root, b"a", vol.root, b"b")
    assert vol.names(vol.root) == [b"b"]
    assert vol.find(vol.root, b"b") == a
    assert vol.read_all(a) == b"A" * 100
    assert not has_inode(vol.store, b)
    assert len(chunk_refs(vol.store)) == 1
    assert_chunks_consistent(vol.store)


def test_rename_over_an_open_file_leaves_an_orphan(vol: Vol) -> None:
    vol.create(b"a")
    b = vol.create(b"b", b"data", keep_open=True)
    vol.fs.rename(vol.root, b"a", vol.root, b"b")
    assert is_orphan(vol.store, b)
    assert vol.read_all(b) == b"data"
    vol.fs.release(b)
    assert not has_inode(vol.store, b)
    assert chunk_refs(vol.store) == {}


def test_rename_directory_over_an_empty_directory(vol: Vol) -> None:
    fs = vol.fs
    src = vol.mkdir(b"src")
    vol.create(b"inside", parent=src)
    dst = vol.mkdir(b"dst")
    assert vol.inode(vol.root).nlink == 4
    fs.rename(vol.root, b"src", vol.root, b"dst")
    assert vol.names(vol.root) == [b"dst"]
    assert vol.find(vol.root, b"dst") == src
    assert vol.names(src) == [b"inside"]
    assert vol.inode(vol.root).nlink == 3
    assert vol.inode(dst).nlink == 0
    fs.forget(dst, 1)
    assert not has_inode(vol.store, dst)


def test_rename_over_a_non_empty_directory_is_refused(vol: Vol) -> None:
    src = vol.mkdir(b"src")
    dst = vol.mkdir(b"dst")
    vol.create(b"x", parent=dst)
    with pytest.raises(NotEmpty) as caught:
        vol.fs.rename(vol.root, b"src", vol.root, b"dst")
    assert caught.value.errno == errno.ENOTEMPTY
    assert vol.find(vol.root, b"src") == src
    assert vol.find(vol.root, b"dst") == dst
    assert vol.names(dst) == [b"x"]


def test_rename_file_over_directory_and_directory_over_file_are_refused(vol: Vol) -> None:
    vol.create(b"file")
    vol.mkdir(b"dir")
    with pytest.raises(IsADirectory):
        vol.fs.rename(vol.root, b"file", vol.root, b"dir")
    with pytest.raises(NotADirectory):
        vol.fs.rename(vol.root, b"dir", vol.root, b"file")
    assert sorted(vol.names(vol.root)) == [b"dir", b"file"]


def test_rename_across_directories_moves_the_link_counts(vol: Vol) -> None:
    fs = vol.fs
    d1, d2 = vol.mkdir(b"d1"), vol.mkdir(b"d2")
    sub = vol.mkdir(b"sub", parent=d1)
    f = vol.create(b"f", b"data", parent=d1)
    for ino in (d1, d2, sub, f):
        age(vol, ino)
    fs.rename(d1, b"sub", d2, b"sub")
    fs.rename(d1, b"f", d2, b"g")
    assert vol.names(d1) == []
    assert vol.names(d2) == [b"sub", b"g"]
    assert (vol.inode(d1).nlink, vol.inode(d2).nlink, vol.inode(sub).nlink) == (2, 3, 2)
    assert vol.inode(f).nlink == 1
    for ino in (d1, d2):
        assert vol.inode(ino).mtime_ns > OLD and vol.inode(ino).ctime_ns > OLD
    for ino in (sub, f):
        assert vol.inode(ino).ctime_ns > OLD and vol.inode(ino).mtime_ns == OLD
    assert vol.read_all(vol.find(d2, b"g")) == b"data"


def test_rename_noreplace_refuses_an_existing_target(vol: Vol) -> None:
    a, b = vol.create(b"a", b"a"), vol.create(b"b", b"b")
    with pytest.raises(Exists):
        vol.fs.rename(vol.root, b"a", vol.root, b"b", noreplace=True)
    assert (vol.find(vol.root, b"a"), vol.find(vol.root, b"b")) == (a, b)
    vol.fs.rename(vol.root, b"a", vol.root, b"c", noreplace=True)
    assert sorted(vol.names(vol.root)) == [b"b", b"c"]


def test_rename_exchange_of_a_file_and_a_directory_across_directories(vol: Vol) -> None:
    fs = vol.fs
    d1, d2 = vol.mkdir(b"d1"), vol.mkdir(b"d2")
    f = vol.create(b"f", b"data", parent=d1)
    sub = vol.mkdir(b"sub", parent=d2)
    vol.create(b"in-sub", parent=sub)
    for ino in (f, sub):
        age(vol, ino)
    assert (vol.inode(d1).nlink, vol.inode(d2).nlink) == (2, 3)
    fs.rename(d1, b"f", d2, b"sub", exchange=True)
    assert vol.find(d1, b"f") == sub
    assert vol.find(d2, b"sub") == f
    assert (vol.inode(d1).nlink, vol.inode(d2).nlink) == (3, 2)
    assert (vol.inode(sub).nlink, vol.inode(f).nlink) == (2, 1)
    assert vol.inode(f).ctime_ns > OLD and vol.inode(sub).ctime_ns > OLD
    assert vol.names(sub) == [b"in-sub"]


def test_rename_exchange_needs_both_names(vol: Vol) -> None:
    vol.create(b"a")
    with pytest.raises(NotFound):
        vol.fs.rename(vol.root, b"a", vol.root, b"missing", exchange=True)
    with pytest.raises(InvalidArgument):
        vol.fs.rename(vol.root, b"a", vol.root, b"a", exchange=True, noreplace=True)
    with pytest.raises(NotFound):
        vol.fs.rename(vol.root, b"missing", vol.root, b"a")


@pytest.mark.replicated  # the test reads the change log
def test_rename_onto_a_hard_link_of_itself_does_nothing(vol: Vol) -> None:
    ino = vol.create(b"a", b"data")
    vol.fs.link(ino, vol.root, b"b")
    vol.names(vol.root)  # the first listing after a change marks the directory's atime
    before = changes(vol.store, vol.slot)
    vol.fs.rename(vol.root, b"a", vol.root, b"b")
    vol.fs.rename(vol.root, b"a", vol.root, b"a")
    assert vol.names(vol.root) == [b"a", b"b"]
    assert vol.inode(ino).nlink == 2
    assert changes(vol.store, vol.slot) == before
