"""The namespace without FUSE: hard links, mkdir and rmdir link counts, the errors of
namespace calls, mknod, set-group-ID directories, symbolic links."""

from __future__ import annotations

import os
import stat

import pytest

from cfs.errors import (
    Exists, InvalidArgument, IsADirectory, NameTooLong, NotADirectory, NotEmpty, NotFound, NotPermitted,
)
from cfs.fs import Caller, SetAttr
from cfs.store import Table
from cfs.types import NODE_ROOT

from unit_support import OLD, ROOT, Vol, age, is_orphan, rows


# --- links and directories ---------------------------------------------------------------

def test_link_and_unlink_count_links_and_touch_ctime(vol: Vol) -> None:
    fs = vol.fs
    d = vol.mkdir(b"d")
    ino = vol.create(b"f", b"data")
    for i in (ino, d):
        age(vol, i)
    fs.link(ino, d, b"g")
    inode = vol.inode(ino)
    assert inode.nlink == 2
    assert inode.ctime_ns > OLD and inode.mtime_ns == OLD
    assert vol.inode(d).mtime_ns > OLD and vol.inode(d).ctime_ns > OLD
    assert vol.find(d, b"g") == ino
    assert vol.inode(d).nlink == 2                        # a file link is not a subdirectory

    age(vol, ino)
    fs.unlink(vol.root, b"f")
    assert vol.inode(ino).nlink == 1
    assert vol.inode(ino).ctime_ns > OLD
    assert not is_orphan(vol.store, ino)
    assert vol.read_all(ino) == b"data"


def test_link_errors(vol: Vol) -> None:
    fs = vol.fs
    f = vol.create(b"f")
    d = vol.mkdir(b"d")
    with pytest.raises(NotPermitted):
        fs.link(d, vol.root, b"dirlink")
    with pytest.raises(Exists):
        fs.link(f, vol.root, b"d")
    with pytest.raises(NotADirectory):
        fs.link(f, f, b"x")
    assert vol.inode(f).nlink == 1


def test_mkdir_and_rmdir_count_links(vol: Vol) -> None:
    fs = vol.fs
    assert vol.inode(vol.root).nlink == 2
    d = vol.mkdir(b"d")
    assert vol.inode(d).nlink == 2
    assert vol.inode(vol.root).nlink == 3
    vol.mkdir(b"e", parent=d)
    vol.create(b"f", parent=d)
    assert vol.inode(d).nlink == 3
    with pytest.raises(NotEmpty):
        fs.rmdir(vol.root, b"d")
    fs.rmdir(d, b"e")
    fs.unlink(d, b"f")
    assert vol.inode(d).nlink == 2
    age(vol, vol.root)
    fs.rmdir(vol.root, b"d")
    assert vol.inode(vol.root).nlink == 2
    assert vol.inode(vol.root).mtime_ns > OLD


def test_namespace_errors(vol: Vol) -> None:
    fs = vol.fs
    f = vol.create(b"f")
    vol.mkdir(b"d")
    cases = [
        (Exists, lambda: fs.create(vol.root, b"f", 0o644, ROOT)),
        (Exists, lambda: fs.mkdir(vol.root, b"d", 0o755, ROOT)),
        (NotFound, lambda: fs.lookup(vol.root, b"nothing")),
        (NotADirectory, lambda: fs.create(f, b"x", 0o644, ROOT)),
        (NotADirectory, lambda: fs.lookup(f, b"x")),
        (IsADirectory, lambda: fs.unlink(vol.root, b"d")),
        (NotADirectory, lambda: fs.rmdir(vol.root, b"f")),
        (NotFound, lambda: fs.unlink(vol.root, b"nothing")),
        (InvalidArgument, lambda: fs.rmdir(vol.root, b".")),
        (NameTooLong, lambda: fs.create(vol.root, b"n" * 256, 0o644, ROOT)),
        (IsADirectory, lambda: fs.open(vol.root, write=True)),
        (IsADirectory, lambda: fs.read(vol.root, 0, 10)),
        (NotPermitted, lambda: fs.mkdir(NODE_ROOT, b"x", 0o755, ROOT)),
        (InvalidArgument, lambda: fs.mknod(vol.root, b"x", stat.S_IFDIR | 0o755, 0, ROOT)),
        (NotADirectory, lambda: fs.opendir(f)),
        (NotADirectory, lambda: list(fs.readdir(f, 0))),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
    assert sorted(vol.names(vol.root)) == [b"d", b"f"]
    vol.create(b"n" * 255)


def test_mknod_keeps_rdev_only_for_devices(vol: Vol) -> None:
    fifo = vol.fs.mknod(vol.root, b"fifo", stat.S_IFIFO | 0o600, 1234, ROOT)
    dev = vol.fs.mknod(vol.root, b"dev", stat.S_IFCHR | 0o600, os.makedev(1, 3), ROOT)
    assert stat.S_ISFIFO(fifo.mode) and fifo.inode.rdev == 0
    assert stat.S_ISCHR(dev.mode) and dev.inode.rdev == os.makedev(1, 3)
    assert stat.S_ISCHR(vol.inode(dev.ino).mode)


# --- set-group-ID directories --------------------------------------------------------------

def test_set_group_id_directory_hands_its_group_down(vol: Vol) -> None:
    fs = vol.fs
    user = Caller(uid=1000, gid=1000)
    member = Caller(uid=1001, gid=1001, supplementary_groups=lambda _pid: [1234])
    shared = vol.mkdir(b"shared", mode=0o2775)
    fs.setattr(shared, SetAttr(gid=1234))
    assert vol.inode(shared).mode & stat.S_ISGID

    f = fs.create(shared, b"f", 0o664, user)
    assert (f.inode.uid, f.inode.gid) == (1000, 1234)
    assert not f.mode & stat.S_ISGID

    sub = fs.mkdir(shared, b"sub", 0o755, user)
    assert sub.inode.gid == 1234
    assert sub.mode & stat.S_ISGID                        # directories inherit the bit itself

    outsider = fs.create(shared, b"outsider", 0o2755, user)
    assert outsider.inode.gid == 1234
    assert not outsider.mode & stat.S_ISGID               # not in the group: the bit is dropped
    insider = fs.create(shared, b"insider", 0o2755, member)
    assert insider.mode & stat.S_ISGID

    plain = vol.mkdir(b"plain")
    g = fs.create(plain, b"g", 0o644, user)
    d = fs.mkdir(plain, b"d", 0o755, user)
    assert g.inode.gid == 1000 and d.inode.gid == 1000
    assert not d.mode & stat.S_ISGID


# --- symbolic links ------------------------------------------------------------------------

def test_symlink_and_readlink(vol: Vol) -> None:
    fs = vol.fs
    target = b"../some/where \xff odd"
    link = fs.symlink(vol.root, b"l", target, Caller(uid=7, gid=8))
    assert stat.S_ISLNK(link.mode)
    assert stat.S_IMODE(link.mode) == 0o777
    assert (link.inode.uid, link.inode.gid, link.inode.size) == (7, 8, len(target))
    assert fs.readlink(link.ino) == target
    assert vol.find(vol.root, b"l") == link.ino
    with pytest.raises(InvalidArgument):
        fs.readlink(vol.create(b"f"))
    fs.forget(link.ino, 1)
    fs.unlink(vol.root, b"l")
    with pytest.raises(NotFound):
        fs.readlink(link.ino)
    assert rows(vol.store, Table.SYMLINKS) == []
