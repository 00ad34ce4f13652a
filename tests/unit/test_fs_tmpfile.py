"""open(O_TMPFILE) in the core (``Filesystem.tmpfile``): an unnamed file, an orphan from
its birth, destroyed at its last release unless a link gave it a name first."""

from __future__ import annotations

import random
import stat

import pytest

from cfs import check
from cfs.errors import NotADirectory, NotFound
from cfs.fs import Caller, Filesystem, SetAttr
from cfs.store import Store

from unit_support import (
    BLOCK_SIZE, OLD, ROOT, Vol, chunk_refs, has_inode, is_orphan, stored_chunks,
)

USER = Caller(uid=1000, gid=1000)


def test_an_unnamed_file_lives_while_open_and_goes_at_its_release(vol: Vol) -> None:
    fs = vol.fs
    fs.setattr(vol.root, SetAttr(mtime_ns=OLD, ctime_ns=OLD))
    attr = fs.tmpfile(vol.root, 0o600, ROOT)
    ino = attr.ino
    assert stat.S_ISREG(attr.inode.mode) and stat.S_IMODE(attr.inode.mode) == 0o600
    assert attr.inode.nlink == 0
    assert is_orphan(vol.store, ino)                        # a restart frees it (test below)
    assert vol.names(vol.root) == []
    root = vol.inode(vol.root)
    assert (root.mtime_ns, root.ctime_ns) == (OLD, OLD)     # no entry: the directory is unchanged
    content = random.Random(1).randbytes(3 * BLOCK_SIZE)
    fs.write(ino, 0, content)
    assert fs.read(ino, 0, len(content)) == content
    fs.forget(ino, 1)                                       # the kernel's lookup does not keep it
    fs.release(ino)
    assert not has_inode(vol.store, ino) and not is_orphan(vol.store, ino)
    assert chunk_refs(vol.store) == {} and stored_chunks(vol.store) == set()


def test_a_link_names_it_and_it_outlives_its_handle(vol: Vol) -> None:
    fs = vol.fs
    d = vol.mkdir(b"d")
    ino = fs.tmpfile(d, 0o644, ROOT).ino
    fs.write(ino, 0, b"made in private")
    attr = fs.link(ino, vol.root, b"published")             # linkat(fd, "", ..., AT_EMPTY_PATH)
    assert attr.inode.nlink == 1
    assert not is_orphan(vol.store, ino)
    fs.release(ino)
    fs.forget(ino, 2)
    assert vol.names(vol.root) == [b"d", b"published"] and vol.names(d) == []
    assert vol.read_all(vol.find(vol.root, b"published")) == b"made in private"
    fs.unlink(vol.root, b"published")                        # an ordinary file from then on
    assert not has_inode(vol.store, ino)


def test_once_named_and_unlinked_again_it_cannot_come_back(vol: Vol) -> None:
    fs = vol.fs
    ino = fs.tmpfile(vol.root, 0o644, ROOT).ino
    fs.link(ino, vol.root, b"a")
    fs.unlink(vol.root, b"a")
    assert is_orphan(vol.store, ino)
    with pytest.raises(NotFound):
        fs.link(ino, vol.root, b"b")
    fs.release(ino)
    assert not has_inode(vol.store, ino)


def test_o_excl_makes_it_unlinkable(vol: Vol) -> None:
    ino = vol.fs.tmpfile(vol.root, 0o644, ROOT, linkable=False).ino
    with pytest.raises(NotFound):
        vol.fs.link(ino, vol.root, b"name")
    vol.fs.release(ino)
    assert not has_inode(vol.store, ino)


def test_owner_and_set_group_id_follow_the_directory(vol: Vol) -> None:
    fs = vol.fs
    d = vol.mkdir(b"d", mode=0o2777)
    fs.setattr(d, SetAttr(gid=2000))
    attr = fs.tmpfile(d, 0o2755, USER)                      # not in group 2000: the bit goes
    assert (attr.inode.uid, attr.inode.gid) == (1000, 2000)
    assert stat.S_IMODE(attr.inode.mode) == 0o755
    fs.release(attr.ino)


def test_only_in_a_live_directory(vol: Vol) -> None:
    fs = vol.fs
    f = vol.create(b"f")
    with pytest.raises(NotADirectory):
        fs.tmpfile(f, 0o644, ROOT)
    d = vol.mkdir(b"d")
    fs.rmdir(vol.root, b"d")
    with pytest.raises(NotFound):
        fs.tmpfile(d, 0o644, ROOT)
    fs.forget(d, 1)


@pytest.mark.closes_store("it reopens the store, as a restart after a crash would")
def test_a_restart_frees_unnamed_files_left_open(vol: Vol) -> None:
    ino = vol.fs.tmpfile(vol.root, 0o644, ROOT).ino
    vol.fs.write(ino, 0, random.Random(2).randbytes(BLOCK_SIZE))
    vol.store.commit()
    path = vol.store.path
    vol.store.close()                                       # the daemon died with the file open
    store = Store(path)
    try:
        fs = Filesystem(store)
        assert fs.recover() == 1
        assert not has_inode(store, ino) and not is_orphan(store, ino)
        assert chunk_refs(store) == {}
        assert check.check(store).clean
    finally:
        store.close()
