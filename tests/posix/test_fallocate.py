"""fallocate(2) and posix_fallocate(3), from the man pages.

Both filesystems allocate in 4 KiB units here (tmpfs's pages, the cfs volume's blocks),
so st_blocks of allocated ranges compare exactly; over written data they differ (cfs
counts the 512-byte units of a block's bytes, trailing zeros cut off), so the tests
there compare how st_blocks moves. FALLOC_FL_ZERO_RANGE is the one exception: tmpfs
does not have it (EOPNOTSUPP), ext4 and xfs do, and so does cfs.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tests.posix.calls import OLD_NS, age, fails, fallocate, times
from tests.posix.conftest import Target

BLOCK = 4096
UNITS = BLOCK // 512
KEEP_SIZE = 0x01
PUNCH_HOLE = 0x02
COLLAPSE_RANGE = 0x08
ZERO_RANGE = 0x10
INSERT_RANGE = 0x20
UNSHARE_RANGE = 0x40


def _open(path: Path, content: bytes = b"") -> int:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    if content:
        os.pwrite(fd, content, 0)
    return fd


def test_allocating_extends_the_file_with_zeros(fsdir: Path) -> None:
    fd = _open(fsdir / "f")
    try:
        fallocate(fd, 0, 0, 2 * BLOCK)
        st = os.fstat(fd)
        assert (st.st_size, st.st_blocks) == (2 * BLOCK, 2 * UNITS)
        assert os.pread(fd, 3 * BLOCK, 0) == bytes(2 * BLOCK)
        fallocate(fd, 0, 0, BLOCK)                              # inside the file: nothing changes
        assert (os.fstat(fd).st_size, os.fstat(fd).st_blocks) == (2 * BLOCK, 2 * UNITS)
    finally:
        os.close(fd)


def test_posix_fallocate_is_the_system_call_now(fsdir: Path) -> None:
    """glibc's posix_fallocate tries fallocate(2) first: with it, nothing is written."""
    fd = _open(fsdir / "f")
    try:
        os.posix_fallocate(fd, BLOCK, 3 * BLOCK)
        st = os.fstat(fd)
        assert (st.st_size, st.st_blocks) == (4 * BLOCK, 3 * UNITS)
        assert os.pread(fd, 4 * BLOCK, 0) == bytes(4 * BLOCK)
    finally:
        os.close(fd)


def test_keep_size_allocates_past_the_end_and_writes_land_in_it(fsdir: Path) -> None:
    fd = _open(fsdir / "f", b"head")
    try:
        before = os.fstat(fd).st_blocks
        fallocate(fd, KEEP_SIZE, BLOCK, 2 * BLOCK)
        st = os.fstat(fd)
        assert st.st_size == 4
        assert st.st_blocks == before + 2 * UNITS
        assert os.pread(fd, BLOCK, 0) == b"head"                # the end of file did not move
        os.pwrite(fd, b"x" * BLOCK, BLOCK)                      # into the allocated block
        st = os.fstat(fd)
        assert (st.st_size, st.st_blocks) == (2 * BLOCK, before + 2 * UNITS)
        os.ftruncate(fd, 2 * BLOCK)                             # even to the same size: what lies
        assert os.fstat(fd).st_blocks == before + UNITS         # past the end is freed
        fallocate(fd, KEEP_SIZE, 2 * BLOCK, BLOCK)
        os.ftruncate(fd, 3 * BLOCK)                             # growing keeps it
        assert os.fstat(fd).st_blocks == before + 2 * UNITS
        os.ftruncate(fd, BLOCK)
        assert os.fstat(fd).st_blocks == before
    finally:
        os.close(fd)


def test_punching_a_hole_zeros_the_range_and_frees_whole_blocks(fsdir: Path) -> None:
    content = bytearray(os.urandom(5 * BLOCK))
    fd = _open(fsdir / "f", bytes(content))
    try:
        before = os.fstat(fd).st_blocks
        offset, length = BLOCK + 100, 3 * BLOCK - 200          # partial, whole, partial
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, offset, length)
        content[offset:offset + length] = bytes(length)
        st = os.fstat(fd)
        assert st.st_size == 5 * BLOCK
        assert st.st_blocks <= before - UNITS                  # block 2 is free
        assert os.pread(fd, 5 * BLOCK, 0) == bytes(content)
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 0, 10 * BLOCK)   # all of it, and past the end
        assert (os.fstat(fd).st_size, os.fstat(fd).st_blocks) == (5 * BLOCK, 0)
        assert os.pread(fd, 5 * BLOCK, 0) == bytes(5 * BLOCK)
    finally:
        os.close(fd)
    assert (fsdir / "f").read_bytes() == bytes(5 * BLOCK)    # through another descriptor too


def test_punching_a_hole_in_the_page_cache(fsdir: Path) -> None:
    """What was read (and cached by the kernel) before the punch is not read again."""
    content = os.urandom(2 * BLOCK)
    (fsdir / "f").write_bytes(content)
    reader = os.open(fsdir / "f", os.O_RDONLY)
    fd = os.open(fsdir / "f", os.O_RDWR)
    try:
        assert os.pread(reader, 2 * BLOCK, 0) == content
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 10, BLOCK)
        assert os.pread(reader, 2 * BLOCK, 0) == content[:10] + bytes(BLOCK) + content[BLOCK + 10:]
    finally:
        os.close(fd)
        os.close(reader)


def test_zero_range(fsdir: Path, target: Target) -> None:
    content = bytearray(os.urandom(3 * BLOCK))
    fd = _open(fsdir / "f", bytes(content))
    try:
        if target.kind == "tmpfs":
            # tmpfs has no FALLOC_FL_ZERO_RANGE (shmem_fallocate); ext4, xfs and cfs do.
            fails(errno.EOPNOTSUPP, fallocate, fd, ZERO_RANGE, 0, BLOCK)
            return
        fallocate(fd, ZERO_RANGE | KEEP_SIZE, BLOCK - 10, 2 * BLOCK + 20)   # to past the end
        content[BLOCK - 10:] = bytes(2 * BLOCK + 10)
        st = os.fstat(fd)
        assert st.st_size == 3 * BLOCK
        assert st.st_blocks == 4 * UNITS                       # zeroed, yet allocated (block 3 too)
        assert os.pread(fd, 4 * BLOCK, 0) == bytes(content)
        fallocate(fd, ZERO_RANGE, 3 * BLOCK, 100)              # without KEEP_SIZE: the file grows
        assert os.fstat(fd).st_size == 3 * BLOCK + 100
        assert os.pread(fd, 4 * BLOCK, 0) == bytes(content) + bytes(100)
    finally:
        os.close(fd)


def test_every_mode_moves_mtime_and_ctime(fsdir: Path, target: Target) -> None:
    path = fsdir / "f"
    fd = _open(path, b"x" * 100)
    try:
        modes = [(0, 0), (KEEP_SIZE, 5 * BLOCK), (PUNCH_HOLE | KEEP_SIZE, 0)]
        if target.kind == "cfs":
            modes.append((ZERO_RANGE, 0))
        for mode, offset in modes:
            age(path)
            ctime = times(path)[2]
            fallocate(fd, mode, offset, 10)
            _atime, mtime, new_ctime = times(path)
            assert mtime != OLD_NS and new_ctime > ctime, mode
    finally:
        os.close(fd)


def test_unsupported_modes_and_bad_ranges(fsdir: Path) -> None:
    fd = _open(fsdir / "f", b"data")
    try:
        for mode in (COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE, PUNCH_HOLE, PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE):
            fails(errno.EOPNOTSUPP, fallocate, fd, mode, 0, BLOCK)
        fails(errno.EINVAL, fallocate, fd, 0, 0, 0)
        fails(errno.EINVAL, fallocate, fd, 0, -1, BLOCK)
        fails(errno.EFBIG, fallocate, fd, 0, 2**62, 2**62)
        assert os.pread(fd, 10, 0) == b"data" and os.fstat(fd).st_size == 4
    finally:
        os.close(fd)
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        fails(errno.EBADF, fallocate, fd, 0, 0, BLOCK)          # not open for writing
    finally:
        os.close(fd)


def test_read_only_mount(fsdir: Path, target: Target) -> None:
    (fsdir / "f").write_bytes(b"data")
    fails(errno.EROFS, os.open, target.ro(fsdir / "f"), os.O_RDWR)
    fd = os.open(target.ro(fsdir / "f"), os.O_RDONLY)
    try:
        fails(errno.EBADF, fallocate, fd, 0, 0, BLOCK)
    finally:
        os.close(fd)
