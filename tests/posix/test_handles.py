"""name_to_handle_at(2) and open_by_handle_at(2): a handle names an inode, not a path.

A handle must open its file for as long as the file exists, also after the kernel
dropped the inode from its caches (NFS re-export, fanotify with file handles and
checkpoint/restore tools keep handles for a long time): the tests drop the kernel's
dentry and inode caches between taking a handle and using it, so that on a FUSE mount
the filesystem itself must find the inode again (cfs: docs/CONFORMANCE.md, "File
handles"). A file that is gone gives ESTALE. Directories come back connected: the
kernel walks up to the root through their parents, so the path of a reopened
directory is the one it has.

Run as root (open_by_handle_at needs CAP_DAC_READ_SEARCH, dropping caches root).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.posix.calls import drop_inode_caches, fails, name_to_handle_at, open_by_handle_at
from tests.posix.conftest import Target


@pytest.fixture
def mount_fd(target: Target) -> Iterator[int]:
    """A descriptor of the filesystem under test, for open_by_handle_at."""
    fd = os.open(target.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def _path_of(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def test_a_file_opens_by_handle_after_the_kernel_forgot_it(fsdir: Path, mount_fd: int) -> None:
    path = fsdir / "f"
    path.write_bytes(b"hello")
    ino = os.stat(path).st_ino
    handle = name_to_handle_at(path)
    drop_inode_caches()
    fd = open_by_handle_at(mount_fd, handle, os.O_RDWR)
    try:
        assert os.fstat(fd).st_ino == ino
        assert os.read(fd, 100) == b"hello"
        os.pwrite(fd, b"J", 0)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"Jello"
    assert name_to_handle_at(path).raw() == handle.raw()  # the same inode, the same handle


def test_a_handle_names_the_inode_through_links_and_renames(fsdir: Path, mount_fd: int) -> None:
    first, second = fsdir / "first", fsdir / "second"
    first.write_bytes(b"content")
    os.link(first, second)
    handle = name_to_handle_at(first)
    assert name_to_handle_at(second).raw() == handle.raw()
    os.unlink(first)
    (fsdir / "sub").mkdir()
    os.rename(second, fsdir / "sub" / "third")
    drop_inode_caches()
    fd = open_by_handle_at(mount_fd, handle, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"content"
        assert os.fstat(fd).st_nlink == 1
    finally:
        os.close(fd)


def test_a_removed_file_is_stale(fsdir: Path, mount_fd: int) -> None:
    path = fsdir / "f"
    path.write_bytes(b"x")
    handle = name_to_handle_at(path)
    os.unlink(path)
    drop_inode_caches()
    fails(errno.ESTALE, open_by_handle_at, mount_fd, handle, os.O_RDONLY)


def test_an_unlinked_file_opens_by_handle_while_it_is_open(fsdir: Path, mount_fd: int) -> None:
    """The open descriptor keeps the inode alive (and in the kernel's cache)."""
    path = fsdir / "f"
    path.write_bytes(b"still here")
    handle = name_to_handle_at(path)
    keep = os.open(path, os.O_RDONLY)
    try:
        os.unlink(path)
        drop_inode_caches()
        fd = open_by_handle_at(mount_fd, handle, os.O_RDONLY)
        try:
            assert os.read(fd, 100) == b"still here"
        finally:
            os.close(fd)
    finally:
        os.close(keep)
    # FUSE sends the close's RELEASE in the background, and the kernel holds the inode
    # until it is answered; a statfs always reaches the filesystem, after it.
    os.statvfs(fsdir)
    drop_inode_caches()
    fails(errno.ESTALE, open_by_handle_at, mount_fd, handle, os.O_RDONLY)


def test_a_directory_opens_by_handle_connected_to_its_path(fsdir: Path, mount_fd: int) -> None:
    deep = fsdir / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "x").write_bytes(b"")
    handle = name_to_handle_at(deep)
    drop_inode_caches()
    fd = open_by_handle_at(mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _path_of(fd) == str(deep)
        assert os.listdir(fd) == ["x"]
    finally:
        os.close(fd)


def test_a_moved_directory_opens_at_its_new_path(fsdir: Path, mount_fd: int) -> None:
    (fsdir / "a" / "b").mkdir(parents=True)
    (fsdir / "z").mkdir()
    handle = name_to_handle_at(fsdir / "a" / "b")
    os.rename(fsdir / "a", fsdir / "z" / "a")
    drop_inode_caches()
    fd = open_by_handle_at(mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _path_of(fd) == str(fsdir / "z" / "a" / "b")
    finally:
        os.close(fd)


def test_a_removed_directory_is_stale(fsdir: Path, mount_fd: int) -> None:
    (fsdir / "d").mkdir()
    handle = name_to_handle_at(fsdir / "d")
    os.rmdir(fsdir / "d")
    drop_inode_caches()
    fails(errno.ESTALE, open_by_handle_at, mount_fd, handle, os.O_RDONLY | os.O_DIRECTORY)


def test_a_symlink_opens_by_handle_as_a_path(fsdir: Path, mount_fd: int) -> None:
    link = fsdir / "l"
    link.symlink_to("target")
    handle = name_to_handle_at(link)  # without AT_SYMLINK_FOLLOW: the link itself
    drop_inode_caches()
    fd = open_by_handle_at(mount_fd, handle, os.O_PATH | os.O_NOFOLLOW)
    try:
        assert os.readlink("", dir_fd=fd) == "target"
    finally:
        os.close(fd)
