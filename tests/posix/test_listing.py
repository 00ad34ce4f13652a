"""What a listing says of each entry: d_ino and d_type, as lstat sees the entry; and what
one directory stream returns while the directory changes.

cfs answers the first reply of a listing with attributes and later ones with names only
unless the listing process looks entries up as it goes (cfs.fuse.names); these
directories are several replies long, and every reply must describe its entries
rightly either way. Entries listed without attributes give the kernel no inode to hold,
so a directory removed after a listing is still freed at once; "." and ".." give it
none either.

A stream ends, and returns no entry twice, however the directory's files are renamed
while it is read (xfstests generic/736); rewinddir makes it see the directory as it is
now; seekdir goes back to a position telldir gave.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from tests.posix.calls import DirStream, dirents, listing
from tests.posix.conftest import Target
from tests.posix.test_statfs import used_inodes

DT_DIR = stat.S_IFDIR >> 12

PER_KIND = 300
"""Entries of each kind: 1,500 in all, several replies of the kernel's listing buffer."""


def _fill(directory: Path) -> None:
    for i in range(PER_KIND):
        (directory / f"file-{i}").write_bytes(b"")
        os.mkdir(directory / f"dir-{i}")
        os.symlink(f"file-{i}", directory / f"link-{i}")
        os.mkfifo(directory / f"fifo-{i}")
        os.link(directory / f"file-{i}", directory / f"hard-{i}")


def _expected(directory: Path) -> dict[bytes, tuple[int, int]]:
    out = {}
    for name in os.listdir(directory):
        st = os.lstat(directory / name)
        out[os.fsencode(name)] = (st.st_ino, stat.S_IFMT(st.st_mode) >> 12)
    return out


def test_listing_gives_each_entry_its_inode_and_type(fsdir: Path) -> None:
    _fill(fsdir)
    listed = dirents(fsdir)
    assert len(listed) == 5 * PER_KIND
    assert listed == _expected(fsdir)
    assert listed[b"file-7"][0] == listed[b"hard-7"][0]


def test_listing_while_looking_entries_up(fsdir: Path) -> None:
    """``ls -l``: every entry is looked up as soon as it is read."""
    _fill(fsdir)
    seen: dict[bytes, tuple[int, int]] = {}

    def look(name: bytes) -> None:
        st = os.lstat(os.path.join(os.fsencode(fsdir), name))
        seen[name] = (st.st_ino, stat.S_IFMT(st.st_mode) >> 12)

    listed = dirents(fsdir, look)
    assert len(listed) == 5 * PER_KIND
    assert listed == seen


def test_listed_directories_are_freed_when_removed(fsdir: Path) -> None:
    before = used_inodes(os.statvfs(fsdir))
    for i in range(1000):
        os.mkdir(fsdir / f"d{i}")
    listed = dirents(fsdir)
    assert all(kind == stat.S_IFDIR >> 12 for _ino, kind in listed.values())
    assert len(listed) == 1000
    for name in listed:
        os.rmdir(os.path.join(os.fsencode(fsdir), name))
    # cfs frees a removed directory when the kernel forgets it (see test_statfs); one
    # counted as held that the kernel never held would stay forever.
    deadline = time.monotonic() + 10
    while used_inodes(os.statvfs(fsdir)) != before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert used_inodes(os.statvfs(fsdir)) == before


def _wait_for_used_inodes(path: Path, count: int) -> None:
    """cfs frees a removed directory when the kernel forgets it (see test_statfs)."""
    deadline = time.monotonic() + 10
    while used_inodes(os.statvfs(path)) != count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert used_inodes(os.statvfs(path)) == count


def test_dot_and_dotdot_come_first_once(fsdir: Path) -> None:
    """Every Linux filesystem lists "." (the directory) and ".." (its parent) first, as
    directories; a listing several replies long has them once."""
    os.mkdir(fsdir / "sub")
    for i in range(600):
        (fsdir / "sub" / f"f{i}").write_bytes(b"")
    listed = listing(fsdir / "sub")
    assert listed[:2] == [(b".", os.stat(fsdir / "sub").st_ino, DT_DIR),
                          (b"..", os.stat(fsdir).st_ino, DT_DIR)]
    names = [name for name, _ino, _type in listed]
    assert len(names) == len(set(names)) == 602
    assert listing(fsdir)[:2] == [(b".", os.stat(fsdir).st_ino, DT_DIR),
                                  (b"..", os.stat(fsdir / "..").st_ino, DT_DIR)]


def test_dotdot_of_the_filesystem_root_is_the_root(target: Target) -> None:
    """The root of a filesystem is its own parent (ext4, tmpfs). A cfs volume is
    bind-mounted from below the node root, whose entries the kernel would name for a
    bind-mounted subdirectory; cfs lists a volume's root as a filesystem root instead."""
    for root in (target.root, target.ro_root):
        root_ino = os.stat(root).st_ino
        assert listing(root)[:2] == [(b".", root_ino, DT_DIR), (b"..", root_ino, DT_DIR)]


def test_dotdot_follows_a_rename(fsdir: Path) -> None:
    """A directory moved to another parent lists its new parent as "..", also when the
    kernel has not looked it up again since (its cached entry moved with the rename)."""
    for path in ("a", "b", "a/sub"):
        os.mkdir(fsdir / path)
    assert listing(fsdir / "a" / "sub")[1] == (b"..", os.stat(fsdir / "a").st_ino, DT_DIR)
    fd = os.open(fsdir / "a" / "sub", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.rename(fsdir / "a" / "sub", fsdir / "b" / "moved")
        assert listing(f"/proc/self/fd/{fd}")[1] == (b"..", os.stat(fsdir / "b").st_ino, DT_DIR)
    finally:
        os.close(fd)
    os.rename(fsdir / "b", fsdir / "c")
    assert listing(fsdir / "c" / "moved")[1] == (b"..", os.stat(fsdir / "c").st_ino, DT_DIR)


def test_listed_dots_are_not_held(fsdir: Path) -> None:
    """The kernel links no inode for "." and ".." of a listing with attributes (it skips
    them): a lookup counted for one would keep a removed directory forever."""
    before = used_inodes(os.statvfs(fsdir))
    for i in range(50):
        os.mkdir(fsdir / f"d{i}")
        (fsdir / f"d{i}" / "f").write_bytes(b"")
        assert [name for name, _ino, _type in listing(fsdir / f"d{i}")] == [b".", b"..", b"f"]
    assert len(listing(fsdir)) == 52
    for i in range(50):
        os.unlink(fsdir / f"d{i}" / "f")
        os.rmdir(fsdir / f"d{i}")
    _wait_for_used_inodes(fsdir, before)


RENAMED = 2000
"""Files of the rename-while-reading test: many replies of the kernel's listing buffer."""


def test_renaming_each_entry_read_ends_the_stream(fsdir: Path) -> None:
    """A reader that renames every file it reads (xfstests generic/736; what find,
    rsync and backup tools meet) gets to the end, having read each file once: a renamed
    entry is not met again, an entry not yet read is not lost. Without an end the loop
    never finishes: it gives up at three times the files."""
    for i in range(RENAMED):
        (fsdir / f"a{i}").write_bytes(b"")
    files = {os.stat(fsdir / f"a{i}").st_ino for i in range(RENAMED)}
    seen: list[int] = []
    renamed = 0
    with DirStream(fsdir) as stream:
        while len(seen) < 3 * RENAMED and (entry := stream.read()) is not None:
            name, ino, _type = entry
            if name in (b".", b".."):
                continue
            seen.append(ino)
            os.rename(os.path.join(os.fsencode(fsdir), name), fsdir / f"r{renamed}")
            renamed += 1
    assert len(seen) < 3 * RENAMED, "the stream did not end"
    assert len(seen) == len(set(seen)), f"{len(seen) - len(set(seen))} files returned twice"
    assert set(seen) == files


def test_rewinddir_sees_the_directory_as_it_is_now(fsdir: Path) -> None:
    """After rewinddir the stream refers to the directory's current state, "as a call to
    opendir() would have done" (POSIX): files created and renamed since are listed."""
    for i in range(300):
        (fsdir / f"f{i}").write_bytes(b"")
    with DirStream(fsdir) as stream:
        assert len([name for name, _ino, _type in stream.rest() if name not in (b".", b"..")]) == 300
        (fsdir / "new").write_bytes(b"")
        os.rename(fsdir / "f7", fsdir / "g7")
        stream.rewind()
        again = [name for name, _ino, _type in stream.rest() if name not in (b".", b"..")]
    assert sorted(again) == sorted(os.fsencode(n) for n in os.listdir(fsdir))
    assert b"new" in again and b"g7" in again and b"f7" not in again


def test_seekdir_goes_back_to_a_telldir_position(fsdir: Path) -> None:
    """Every position telldir gives, "." and ".." included, leads back to the same next
    entries."""
    for i in range(500):
        (fsdir / f"f{i}").write_bytes(b"")
    with DirStream(fsdir) as stream:
        positions = []
        entries = []
        while True:
            positions.append(stream.tell())
            entry = stream.read()
            if entry is None:
                break
            entries.append(entry)
        assert len(entries) == 502
        for at in (0, 1, 2, 3, 250, 501, 502):
            stream.seek(positions[at])
            assert stream.rest() == entries[at:], at
