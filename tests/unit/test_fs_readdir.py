"""Directory listings without FUSE: resuming from a cookie while entries come and go, large
directories, the names-only listing, the node root's list of volumes, where a listing ends
(``opendir``'s end) and what ``..`` lists (``Filesystem.parent``)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cfs.errors import NotADirectory, NotFound
from cfs.fs import Filesystem
from cfs.store import Store
from cfs.types import NODE_ROOT, volume_root

from unit_support import BLOCK_SIZE, ROOT, Vol, assert_check_finds, page


def test_readdir_resumes_from_a_cookie_while_entries_come_and_go(vol: Vol) -> None:
    fs = vol.fs
    names = [b"e%03d" % i for i in range(60)]
    for name in names:
        vol.create(name)
    first = page(fs, vol.root, 0, 20)
    assert [name for name, _attr, _cookie in first] == names[:20]

    gone = names[:20:2] + names[20::3]                   # some already listed, some not yet
    added = [b"new%d" % i for i in range(10)]
    for name in gone:
        fs.unlink(vol.root, name)
    for name in added:
        vol.create(name)
    rest = []
    cookie = first[-1][2]
    while batch := page(fs, vol.root, cookie, 7):
        rest.extend(batch)
        cookie = batch[-1][2]

    assert [name for name, _a, _c in rest] == [n for n in names[20:] if n not in gone] + added
    cookies = [c for _n, _a, c in first + rest]
    assert cookies == sorted(set(cookies))
    for name, attr, _cookie in rest:
        assert attr.ino == vol.find(vol.root, name)


def test_readdir_of_100000_entries(vol: Vol) -> None:
    fs = vol.fs
    count = 100_000
    for i in range(count):
        fs.mknod(vol.root, b"%06d" % i, stat.S_IFREG | 0o644, 0, ROOT)
    seen: list[bytes] = []
    cookie = 0
    while batch := page(fs, vol.root, cookie, 4096):
        seen.extend(name for name, _attr, _cookie in batch)
        cookie = batch[-1][2]
    assert seen == [b"%06d" % i for i in range(count)]
    assert vol.inode(vol.root).nlink == 2


def test_readdir_names_match_readdir(vol: Vol) -> None:
    """The names-only listing gives each entry's number and file type, as the full one does."""
    fs = vol.fs
    vol.create(b"f")
    fs.mkdir(vol.root, b"d", 0o700, ROOT)
    fs.symlink(vol.root, b"l", b"f", ROOT)
    fs.mknod(vol.root, b"p", stat.S_IFIFO | 0o600, 0, ROOT)
    fs.link(vol.find(vol.root, b"f"), vol.root, b"h")
    fs.unlink(vol.root, b"f")
    full = [(name, attr.ino, stat.S_IFMT(attr.mode), cookie) for name, attr, cookie in fs.readdir(vol.root, 0)]
    assert [name for name, *_rest in full] == [b"d", b"l", b"p", b"h"]
    assert list(fs.readdir_names(vol.root, 0)) == full
    assert list(fs.readdir_names(vol.root, full[1][3])) == full[2:]
    assert list(fs.readdir_names(NODE_ROOT, 0)) == [
        (b"vol", vol.root, stat.S_IFDIR, fs.volume("vol").slot)]
    with pytest.raises(NotADirectory):
        fs.readdir_names(vol.find(vol.root, b"h"), 0)


@pytest.mark.closes_store("closes and reopens the store; checks the reopened store itself")
def test_node_root_lists_volumes_in_cookie_order(store_path: Path, vol: Vol) -> None:
    fs = vol.fs
    for name in ("zeta", "alpha", "mid"):
        fs.create_volume(name, block_size=BLOCK_SIZE)
    vol.store.close()

    store = Store(store_path)                             # a fresh Filesystem: nothing cached
    try:
        fs = Filesystem(store)
        listed = []
        cookie = 0
        while batch := page(fs, NODE_ROOT, cookie, 1):    # one entry per call, as a tiny buffer would
            listed.extend(batch)
            cookie = batch[-1][2]
        assert sorted(name for name, _a, _c in listed) == [b"alpha", b"mid", b"vol", b"zeta"]
        assert [c for _n, _a, c in listed] == sorted(c for _n, _a, c in listed)
        for name, attr, _cookie in listed:
            assert attr.ino == volume_root(fs.volume(name.decode()).slot)
            assert attr.is_dir
        assert fs.getattr(NODE_ROOT).inode.nlink == 2 + 4
        assert [name for name, _a, _c in Filesystem(store).readdir(volume_root(1), 0)] == []
        assert_check_finds(store)
    finally:
        store.close()


@pytest.mark.closes_store("closes and reopens the store; checks the reopened store itself")
def test_readdir_of_a_fresh_filesystem_reports_block_size(store_path: Path, vol: Vol) -> None:
    vol.create(b"f")
    vol.store.close()
    store = Store(store_path)
    try:
        entries = list(Filesystem(store).readdir(volume_root(1), 0))
        assert [(name, attr.block_size) for name, attr, _c in entries] == [(b"f", BLOCK_SIZE)]
        assert_check_finds(store)
    finally:
        store.close()


def test_a_listing_ends_where_opendir_said(vol: Vol) -> None:
    """A rename adds its entry anew, past the end ``opendir`` gave: a reader that renames
    each entry it reads gets to the end and has read each entry once. Entries added after
    ``opendir`` are past the end too; a new ``opendir`` lists them."""
    fs = vol.fs
    names = [b"e%03d" % i for i in range(50)]
    for name in names:
        vol.create(name)
    end = fs.opendir(vol.root)
    seen: list[bytes] = []
    cookie = 0
    while len(seen) < 3 * len(names) and (batch := fs.readdir(vol.root, cookie, 7, end)):
        for name, _attr, cookie in batch:
            seen.append(name)
            fs.rename(vol.root, name, vol.root, b"r%03d" % len(seen))
    assert seen == names
    vol.create(b"late")
    assert list(fs.readdir_names(vol.root, 0, end)) == []
    assert fs.readdir(vol.root, 0, end=end) == []
    now = [name for name, _attr, _cookie in fs.readdir(vol.root, 0, end=fs.opendir(vol.root))]
    assert now == [b"r%03d" % i for i in range(1, 51)] + [b"late"]


def test_names_only_listing_ends_where_opendir_said(vol: Vol) -> None:
    fs = vol.fs
    for i in range(10):
        vol.create(b"e%d" % i)
    end = fs.opendir(vol.root)
    first = next(fs.readdir_names(vol.root, 0, end))
    fs.rename(vol.root, b"e0", vol.root, b"z0")                 # read already: not again
    fs.rename(vol.root, b"e5", vol.root, b"z5")                 # not read yet: gone from this stream
    rest = [name for name, _ino, _kind, _cookie in fs.readdir_names(vol.root, first[3], end)]
    assert first[0] == b"e0"
    assert rest == [b"e%d" % i for i in range(1, 10) if i != 5]


def test_node_root_listing_ends_where_opendir_said(vol: Vol) -> None:
    fs = vol.fs
    end = fs.opendir(NODE_ROOT)
    fs.create_volume("later", block_size=BLOCK_SIZE)
    assert [name for name, _a, _c in fs.readdir(NODE_ROOT, 0, end=end)] == [b"vol"]
    assert [name for name, *_rest in fs.readdir_names(NODE_ROOT, 0, end)] == [b"vol"]
    assert [name for name, _a, _c in fs.readdir(NODE_ROOT, 0, end=fs.opendir(NODE_ROOT))] == [b"vol", b"later"]


def test_parent_is_the_directory_that_names_it(vol: Vol) -> None:
    """``..``: remembered where the kernel found a directory (mkdir, lookup, a listing with
    attributes) and moved by rename; volume roots and the node root are their own."""
    fs = vol.fs
    a = fs.mkdir(vol.root, b"a", 0o755, ROOT).ino
    b = fs.mkdir(vol.root, b"b", 0o755, ROOT).ino
    sub = fs.mkdir(a, b"sub", 0o755, ROOT).ino
    assert (fs.parent(sub), fs.parent(a)) == (a, vol.root)
    assert fs.parent(vol.root) == vol.root
    assert fs.parent(NODE_ROOT) == NODE_ROOT
    fs.rename(a, b"sub", b, b"moved")
    assert fs.parent(sub) == b
    fs.rename(vol.root, b"a", b, b"moved", exchange=True)      # a is now b/moved, sub is root/a
    assert (fs.parent(a), fs.parent(sub)) == (b, vol.root)
    with pytest.raises(NotADirectory):
        fs.parent(vol.create(b"file"))


def test_parent_of_a_directory_found_elsewhere(vol: Vol) -> None:
    """A directory this Filesystem was not told of, or that moved behind its back, is
    looked for in the store: ``..`` never lists a place the directory has left."""
    fs = vol.fs
    a = fs.mkdir(vol.root, b"a", 0o755, ROOT).ino
    sub = fs.mkdir(a, b"sub", 0o755, ROOT).ino
    other = Filesystem(vol.store)                              # knows of nothing
    assert other.parent(sub) == a
    other.rename(a, b"sub", vol.root, b"sub")                  # fs remembers a/sub
    assert fs.parent(sub) == vol.root
    entries = {name: attr for name, attr, _cookie in other.readdir(vol.root, 0)}
    other.count_lookup(vol.root, b"sub", entries[b"sub"])      # the kernel took it from a listing
    assert other.parent(sub) == vol.root
    other.forget(sub, 1)


def test_parent_of_a_removed_directory_is_not_found(vol: Vol) -> None:
    fs = vol.fs
    d = fs.mkdir(vol.root, b"d", 0o755, ROOT).ino                # held: stays as an orphan
    fs.rmdir(vol.root, b"d")
    with pytest.raises(NotFound):
        fs.parent(d)
    fs.forget(d, 1)
