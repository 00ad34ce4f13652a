"""statfs(2)/statvfs(3): numbers that agree with each other and follow what is stored.

Free never exceeds total, available never exceeds free, used inodes (files - ffree) go
up by one per new inode and down again when it is freed, and free blocks go down by
about the size of data written (once it is on disk: after fsync) and back up when it is
deleted. cfs reports the disk its store lives on, which in this suite is a private tmpfs,
so nothing but the test moves the numbers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MiB = 1 << 20


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def used_inodes(st: os.statvfs_result) -> int:
    return st.f_files - st.f_ffree


def test_numbers_are_consistent(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"x")
    st = os.statvfs(fsdir)
    assert st.f_bsize > 0 and st.f_frsize > 0
    assert st.f_blocks > 0
    assert 0 <= st.f_bavail <= st.f_bfree <= st.f_blocks
    assert 0 <= st.f_ffree <= st.f_files and used_inodes(st) >= 2
    assert st.f_favail <= st.f_ffree
    assert st.f_namemax == 255
    assert os.statvfs(fsdir / "f")[:4] == st[:4]  # any path of the filesystem answers the same
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        assert os.fstatvfs(fd).f_blocks == st.f_blocks
    finally:
        os.close(fd)


def test_inodes_are_counted(fsdir: Path) -> None:
    """(Hard links are left out: tmpfs charges each against its inode limit.)"""
    before = used_inodes(os.statvfs(fsdir))
    (fsdir / "f").write_bytes(b"")
    os.mkdir(fsdir / "d")
    os.symlink("f", fsdir / "l")
    os.mkfifo(fsdir / "p")
    assert used_inodes(os.statvfs(fsdir)) == before + 4
    for name in ("f", "l", "p"):
        os.unlink(fsdir / name)
    assert used_inodes(os.statvfs(fsdir)) == before + 1
    os.rmdir(fsdir / "d")
    # A removed directory may be a process's working directory, so cfs frees it when the
    # kernel forgets it, and FUSE sends that forget asynchronously, just after rmdir.
    deadline = time.monotonic() + 5
    while used_inodes(os.statvfs(fsdir)) != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert used_inodes(os.statvfs(fsdir)) == before


def test_free_blocks_follow_data(fsdir: Path) -> None:
    size = 16 * MiB
    start = os.statvfs(fsdir)
    with open(fsdir / "f", "wb") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    written = os.statvfs(fsdir)
    taken = (start.f_bfree - written.f_bfree) * written.f_frsize
    # At most twice the data: LMDB stores a 4 KiB chunk (this suite's block size) in two
    # pages, its overflow page header taking a little of the first.
    assert size <= taken <= size * 2.5
    assert start.f_blocks == written.f_blocks
    os.unlink(fsdir / "f")
    sync_dir(fsdir)
    freed = os.statvfs(fsdir)
    back = (freed.f_bfree - written.f_bfree) * freed.f_frsize
    assert back >= size * 0.9


def test_unlinked_open_file_keeps_its_space_until_closed(fsdir: Path) -> None:
    size = 8 * MiB
    with open(fsdir / "f", "wb") as f:
        f.write(os.urandom(size))
        os.fsync(f.fileno())
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        os.unlink(fsdir / "f")
        sync_dir(fsdir)
        held = os.statvfs(fsdir)
        assert len(os.pread(fd, size, 0)) == size
    finally:
        os.close(fd)
    sync_dir(fsdir)
    freed = os.statvfs(fsdir)
    assert (freed.f_bfree - held.f_bfree) * freed.f_frsize >= size * 0.9
