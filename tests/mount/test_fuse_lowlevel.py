"""fallocate(2) and O_TMPFILE reach cfs through cfs.fuse.lowlevel; when its wrappers of
libfuse cannot be in place, the daemon starts all the same, says so, and the kernel
answers EOPNOTSUPP as before (glibc's posix_fallocate then writes zeros)."""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from tests.node import Node

KEEP_SIZE = 0x01
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    """fallocate(2) itself; 0 or the errno."""
    return 0 if _libc.fallocate(fd, mode, offset, length) == 0 else ctypes.get_errno()


def test_the_daemon_says_they_are_served(node: Node, short_tmp: Path) -> None:
    mnt = node.mount("vol", short_tmp / "mnt", block_size=4096)
    fd = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert fallocate(fd, KEEP_SIZE, 0, 8192) == 0
        assert os.fstat(fd).st_blocks == 16
    finally:
        os.close(fd)
    os.close(os.open(mnt, os.O_TMPFILE | os.O_RDWR, 0o600))
    assert "fallocate(2) and O_TMPFILE are served" in node.log()


def test_without_the_wrappers_the_daemon_serves_the_rest_and_answers_eopnotsupp(short_tmp: Path) -> None:
    """libfuse preloaded comes first in the global symbol scope, so pyfuse3 binds to it and
    the extension's wrappers are never reached: one way the mechanism fails for real."""
    node = Node(short_tmp)
    node.env["LD_PRELOAD"] = "libfuse3.so.3"
    try:
        node.start()
        assert "fallocate(2) and O_TMPFILE not served, the kernel answers EOPNOTSUPP" in node.log()
        mnt = node.mount("vol", short_tmp / "mnt", block_size=4096)
        fd = os.open(mnt / "f", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            assert fallocate(fd, 0, 0, 8192) == errno.EOPNOTSUPP
            assert fallocate(fd, KEEP_SIZE | 0x02, 0, 10) == errno.EOPNOTSUPP
            os.posix_fallocate(fd, 0, 8192)                 # glibc writes zeros instead
            assert os.fstat(fd).st_size == 8192
            assert os.pwrite(fd, b"still a filesystem", 100) == 18
        finally:
            os.close(fd)
        with pytest.raises(OSError) as exc:
            os.open(mnt, os.O_TMPFILE | os.O_RDWR, 0o600)
        assert exc.value.errno == errno.EOPNOTSUPP
        assert (mnt / "f").read_bytes()[100:118] == b"still a filesystem"
        assert "no problems" in node.cli("fsck").stdout
    finally:
        node.cleanup()
