"""Inode times without FUSE: what moves mtime, ctime and atime (relatime style), noatime
handles, and times outside the stored range."""

from __future__ import annotations

from cfs.fs import SetAttr

from unit_support import OLD, Vol, age, page


def test_write_updates_mtime_and_ctime_and_read_updates_atime_relatime_style(vol: Vol) -> None:
    fs = vol.fs
    ino = vol.create(b"f", b"x")
    age(vol, ino)
    fs.write(ino, 1, b"y")
    inode = vol.inode(ino)
    assert inode.mtime_ns > OLD and inode.ctime_ns > OLD and inode.atime_ns == OLD
    fs.read(ino, 0, 2)                                    # atime older than mtime: refreshed
    refreshed = vol.inode(ino).atime_ns
    assert refreshed > OLD
    fs.setattr(ino, SetAttr(mtime_ns=OLD, ctime_ns=OLD))  # atime newer than both, and recent
    fs.read(ino, 0, 2)
    assert vol.inode(ino).atime_ns == refreshed


# --- found by the POSIX suite (tests/posix), where cfs differed from tmpfs ----------------------

def test_read_through_a_noatime_handle_leaves_atime(vol: Vol) -> None:
    ino = vol.create(b"f", b"content")
    age(vol, ino)
    assert vol.fs.read(ino, 0, 3, mark_atime=False) == b"con"
    assert vol.inode(ino).atime_ns == OLD


def test_readdir_marks_atime_when_a_listing_starts(vol: Vol) -> None:
    d = vol.mkdir(b"d")
    for name in (b"a", b"b"):
        vol.create(name, parent=d)
    age(vol, d)
    first = page(vol.fs, d, 0, 1)
    assert vol.inode(d).atime_ns > OLD
    age(vol, d)
    page(vol.fs, d, first[-1][2], 1)  # a later page of the same listing
    assert vol.inode(d).atime_ns == OLD


def test_times_outside_the_stored_range_are_clamped(vol: Vol) -> None:
    ino = vol.create(b"f")
    vol.fs.setattr(ino, SetAttr(atime_ns=1 << 70, mtime_ns=-(1 << 70)))
    inode = vol.inode(ino)
    assert (inode.atime_ns, inode.mtime_ns) == ((1 << 63) - 1, -(1 << 63))
