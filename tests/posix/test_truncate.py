"""truncate(2) and ftruncate(2).

Growing adds zeros (a hole, no blocks); shrinking drops the bytes past the new end for
good, so growing again shows zeros, not the old bytes. Both mark mtime and ctime, on
Linux also when the size stays the same (POSIX requires it only when it changes).
"""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

from tests.posix.calls import age, errnos_as, fails, times

BLOCK = 4096


def test_grow_adds_zeros_without_blocks(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.truncate(fsdir / "f", 10 * BLOCK + 3)
    st = os.stat(fsdir / "f")
    assert (st.st_size, st.st_blocks) == (10 * BLOCK + 3, 0)
    assert (fsdir / "f").read_bytes() == bytes(10 * BLOCK + 3)


def test_shrink_then_grow_shows_zeros(fsdir: Path) -> None:
    payload = random.Random(1).randbytes(3 * BLOCK)
    (fsdir / "f").write_bytes(payload)
    for new_size in (2 * BLOCK + 100, 2 * BLOCK, BLOCK - 1, 0):
        os.truncate(fsdir / "f", new_size)
        assert (fsdir / "f").read_bytes() == payload[:new_size]
        os.truncate(fsdir / "f", 3 * BLOCK)
        assert (fsdir / "f").read_bytes() == payload[:new_size] + bytes(3 * BLOCK - new_size)
        (fsdir / "f").write_bytes(payload)


def test_truncate_to_zero_frees_blocks(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(random.Random(2).randbytes(5 * BLOCK))
    assert os.stat(fsdir / "f").st_blocks >= 5 * BLOCK // 512
    os.truncate(fsdir / "f", 0)
    st = os.stat(fsdir / "f")
    assert (st.st_size, st.st_blocks) == (0, 0)


def test_ftruncate_through_a_descriptor(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"0123456789")
    fd = os.open(fsdir / "f", os.O_RDWR)
    try:
        os.ftruncate(fd, 4)
        assert os.fstat(fd).st_size == 4
        assert os.pread(fd, 100, 0) == b"0123"
        os.ftruncate(fd, 6)
        assert os.pread(fd, 100, 0) == b"0123\0\0"
    finally:
        os.close(fd)


def test_errors(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abc")
    (fsdir / "d").mkdir()
    os.mkfifo(fsdir / "fifo")
    fails(errno.EINVAL, os.truncate, fsdir / "f", -1)
    fails(errno.EISDIR, os.truncate, fsdir / "d", 0)
    fails(errno.EINVAL, os.truncate, fsdir / "fifo", 0)
    fails(errno.ENOENT, os.truncate, fsdir / "missing", 0)
    fails(errno.ENOTDIR, os.truncate, fsdir / "f" / "x", 0)
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        fails(errno.EINVAL, os.ftruncate, fd, 0)  # not open for writing
    finally:
        os.close(fd)
    fd = os.open(fsdir / "f", os.O_WRONLY)
    try:
        fails(errno.EINVAL, os.ftruncate, fd, -1)
    finally:
        os.close(fd)
    assert (fsdir / "f").read_bytes() == b"abc"


def test_truncate_follows_symlinks(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abcdef")
    os.symlink("f", fsdir / "link")
    os.truncate(fsdir / "link", 2)
    assert (fsdir / "f").read_bytes() == b"ab"


def test_permissions_as_user(fsdir: Path) -> None:
    for name, mode in (("ro", 0o644), ("rw", 0o666)):
        (fsdir / name).write_bytes(b"abc")
        os.chmod(fsdir / name, mode)
    assert errnos_as(["os.truncate(D + '/ro', 1)", "os.truncate(D + '/rw', 1)"], D=str(fsdir)) == [
        "EACCES", "success"]
    assert os.stat(fsdir / "ro").st_size == 3
    assert os.stat(fsdir / "rw").st_size == 1


def test_size_change_marks_mtime_and_ctime(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abc")
    for new_size in (10, 1):
        age(fsdir / "f")
        before = times(fsdir / "f")
        os.truncate(fsdir / "f", new_size)
        after = times(fsdir / "f")
        assert after[0] == before[0]
        assert after[1] == after[2] > before[2]


def test_same_size_marks_mtime_and_ctime(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abc")
    fd = os.open(fsdir / "f", os.O_WRONLY)
    try:
        for call in (lambda: os.truncate(fsdir / "f", 3), lambda: os.ftruncate(fd, 3)):
            age(fsdir / "f")
            before = times(fsdir / "f")
            call()
            after = times(fsdir / "f")
            assert after[0] == before[0]
            assert after[1] == after[2] > before[2]
    finally:
        os.close(fd)
