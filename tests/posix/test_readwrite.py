"""read(2), write(2), pread(2), pwrite(2), lseek(2), mmap and friends on regular files.

The volumes of this suite have 4 KiB blocks, so the offsets below cross block
boundaries, start and end inside blocks, and leave holes.
"""

from __future__ import annotations

import errno
import mmap
import os
import random
from pathlib import Path

from tests.posix.calls import OLD_NS, age, fails, fdatasync, fsync, times
from tests.posix.conftest import Target

BLOCK = 4096


def test_pieces_land_where_written(fsdir: Path) -> None:
    rng = random.Random(7)
    model = bytearray()
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        for _ in range(60):
            offset = rng.randrange(0, 5 * BLOCK)
            piece = rng.randbytes(rng.choice([1, 100, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK]))
            assert os.pwrite(fd, piece, offset) == len(piece)
            if offset > len(model):
                model.extend(bytes(offset - len(model)))
            model[offset:offset + len(piece)] = piece
        assert os.fstat(fd).st_size == len(model)
        for size in (1, 511, BLOCK, 3 * BLOCK + 5):
            os.lseek(fd, 0, os.SEEK_SET)
            got = bytearray()
            while chunk := os.read(fd, size):
                got += chunk
            assert got == model
    finally:
        os.close(fd)
    assert (fsdir / "f").read_bytes() == model


def test_reads_at_and_past_end(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"0123456789")
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 4) == b"456789"
        assert os.pread(fd, 100, 10) == b""
        assert os.pread(fd, 100, 1 << 40) == b""
        assert os.pread(fd, 0, 0) == b""
    finally:
        os.close(fd)


def test_offsets_move_with_read_and_write_not_with_pread_and_pwrite(fsdir: Path) -> None:
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"abcdef")
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6
        os.pwrite(fd, b"XY", 1)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6
        assert os.pread(fd, 3, 0) == b"aXY"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 6
        os.lseek(fd, 2, os.SEEK_SET)
        assert os.read(fd, 2) == b"Yd"
        assert os.lseek(fd, 0, os.SEEK_CUR) == 4
        assert os.lseek(fd, -1, os.SEEK_END) == 5
        assert os.read(fd, 10) == b"f"
    finally:
        os.close(fd)


def test_writing_past_end_leaves_zeros(fsdir: Path) -> None:
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"start")
        os.lseek(fd, 3 * BLOCK + 10, os.SEEK_SET)
        os.write(fd, b"end")
        os.pwrite(fd, b"mid", BLOCK + 7)
        assert os.fstat(fd).st_size == 3 * BLOCK + 13
    finally:
        os.close(fd)
    expected = bytearray(3 * BLOCK + 13)
    expected[0:5] = b"start"
    expected[BLOCK + 7:BLOCK + 10] = b"mid"
    expected[3 * BLOCK + 10:] = b"end"
    assert (fsdir / "f").read_bytes() == expected


def test_seek_errors(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abc")
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        fails(errno.EINVAL, os.lseek, fd, -1, os.SEEK_SET)
        fails(errno.EINVAL, os.lseek, fd, -10, os.SEEK_END)
        fails(errno.EINVAL, os.lseek, fd, 0, 17)
        fails(errno.EINVAL, os.pread, fd, 1, -1)
        assert os.lseek(fd, 1 << 40, os.SEEK_SET) == 1 << 40
    finally:
        os.close(fd)


def test_seek_data_and_hole(fsdir: Path, target: Target) -> None:
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"x" * 100, 8 * BLOCK)
        assert os.lseek(fd, 8 * BLOCK, os.SEEK_DATA) == 8 * BLOCK
        fails(errno.ENXIO, os.lseek, fd, 8 * BLOCK + 100, os.SEEK_DATA)
        assert os.lseek(fd, 8 * BLOCK + 50, os.SEEK_HOLE) == 8 * BLOCK + 100
        if target.kind == "cfs":
            # Divergence: pyfuse3 has no lseek handler (FUSE_LSEEK), so the kernel gives the
            # generic answer: all data, the only hole at end of file. Correct, not precise.
            assert os.lseek(fd, 0, os.SEEK_DATA) == 0
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 8 * BLOCK + 100
        else:
            assert os.lseek(fd, 0, os.SEEK_DATA) == 8 * BLOCK
            assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
    finally:
        os.close(fd)


def test_wrong_access_mode_is_ebadf(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abc")
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        fails(errno.EBADF, os.write, fd, b"x")
        fails(errno.EBADF, os.pwrite, fd, b"x", 0)
    finally:
        os.close(fd)
    fd = os.open(fsdir / "f", os.O_WRONLY)
    try:
        fails(errno.EBADF, os.read, fd, 1)
    finally:
        os.close(fd)
    fd = os.open(fsdir / "f", os.O_PATH)
    try:
        fails(errno.EBADF, os.read, fd, 1)
    finally:
        os.close(fd)


def test_directory_reads_are_eisdir(fsdir: Path) -> None:
    fd = os.open(fsdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fails(errno.EISDIR, os.read, fd, 10)
        fails(errno.EISDIR, os.pread, fd, 10, 0)
        fails(errno.EBADF, os.write, fd, b"x")
    finally:
        os.close(fd)


def test_largest_file(fsdir: Path) -> None:
    """Files may reach 2**63 - 1 bytes (MAX_LFS_FILESIZE); a write that would end past
    that is EINVAL (its end overflows the offset type)."""
    last = (1 << 63) - 2
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fails(errno.EINVAL, os.pwrite, fd, b"x", last + 1)
        fails(errno.EINVAL, os.pwrite, fd, b"xy", last)
        assert os.fstat(fd).st_size == 0
        assert os.pwrite(fd, b"x", last) == 1
        st = os.fstat(fd)
        assert st.st_size == last + 1 and st.st_blocks <= 8
        assert os.pread(fd, 2, last - 1) == b"\0x"
    finally:
        os.close(fd)


def test_write_marks_mtime_and_ctime_not_atime(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abc")
    age(fsdir / "f")
    before = times(fsdir / "f")
    fd = os.open(fsdir / "f", os.O_WRONLY)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    after = times(fsdir / "f")
    assert after[0] == before[0]
    assert after[1] == after[2] > before[2]


def test_writes_of_an_open_file_show_and_later_changes_win(fsdir: Path) -> None:
    """While the writer keeps the file open (cfs holds the writes in its cache), stat and
    a listing show their size and mtime; a utimes and a truncate after them win over them."""
    path = fsdir / "f"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        age(path)
        before = times(path)
        os.pwrite(fd, b"x" * 10, 3 * BLOCK)
        st = os.fstat(fd)
        assert st.st_size == 3 * BLOCK + 10 and st.st_mtime_ns > before[1]
        listed = {entry.name: entry.stat(follow_symlinks=False) for entry in os.scandir(fsdir)}
        assert (listed["f"].st_size, listed["f"].st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        os.pwrite(fd, b"z", 0)
        os.utime(path, ns=(OLD_NS, OLD_NS))
        assert times(path)[1] == OLD_NS
        os.pwrite(fd, b"y" * 3, 1)
        os.ftruncate(fd, 5)
        assert os.fstat(fd).st_size == 5
    finally:
        os.close(fd)
    assert path.read_bytes() == b"zyyy\0"
    st = os.stat(path)
    assert st.st_size == 5 and st.st_mtime_ns > OLD_NS


def test_empty_write_changes_nothing(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"abc")
    age(fsdir / "f")
    before = times(fsdir / "f")
    fd = os.open(fsdir / "f", os.O_WRONLY)
    try:
        assert os.write(fd, b"") == 0
    finally:
        os.close(fd)
    assert times(fsdir / "f") == before
    assert (fsdir / "f").read_bytes() == b"abc"


def test_read_marks_atime_relatime_style(fsdir: Path) -> None:
    """The mounts are relatime: a read marks atime when it is not newer than mtime or ctime."""
    (fsdir / "f").write_bytes(b"abc")
    age(fsdir / "f")  # atime == mtime: the next read marks it
    _, mtime, ctime = times(fsdir / "f")
    assert (fsdir / "f").read_bytes() == b"abc"
    atime, mtime2, ctime2 = times(fsdir / "f")
    assert atime > ctime and (mtime2, ctime2) == (mtime, ctime)
    assert (fsdir / "f").read_bytes() == b"abc"
    assert times(fsdir / "f")[0] == atime  # newer than both, and less than a day old


def test_two_descriptors_see_each_others_writes(fsdir: Path) -> None:
    writer = os.open(fsdir / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    reader = os.open(fsdir / "f", os.O_RDONLY)
    try:
        os.write(writer, b"first")
        assert os.read(reader, 100) == b"first"
        os.pwrite(writer, b"X" * 2 * BLOCK, 2)
        assert os.pread(reader, 3, 1) == b"iXX"
        assert os.fstat(reader).st_size == 2 + 2 * BLOCK
    finally:
        os.close(writer)
        os.close(reader)


def test_shared_mmap_writes_reach_the_file(fsdir: Path) -> None:
    size = 3 * BLOCK
    (fsdir / "f").write_bytes(bytes(size))
    fd = os.open(fsdir / "f", os.O_RDWR)
    try:
        with mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
            m[BLOCK - 2:BLOCK + 2] = b"mmap"
            m.flush()
        assert os.pread(fd, 4, BLOCK - 2) == b"mmap"
    finally:
        os.close(fd)
    assert (fsdir / "f").read_bytes()[BLOCK - 2:BLOCK + 2] == b"mmap"


def test_copy_file_range(fsdir: Path) -> None:
    payload = random.Random(3).randbytes(3 * BLOCK + 17)
    (fsdir / "src").write_bytes(payload)
    src = os.open(fsdir / "src", os.O_RDONLY)
    dst = os.open(fsdir / "dst", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        copied = 0
        while copied < len(payload):
            n = os.copy_file_range(src, dst, len(payload) - copied, copied, copied + 5)
            assert n > 0
            copied += n
    finally:
        os.close(src)
        os.close(dst)
    assert (fsdir / "dst").read_bytes() == bytes(5) + payload


def _size_and_times(fd: int) -> tuple[int, int, int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


def test_fsync_and_fdatasync_keep_what_was_written(fsdir: Path, target: Target) -> None:
    """fsync and fdatasync return 0 and change nothing a program can see: not the bytes,
    not the size, not a time stamp. What was written through one descriptor and synced
    is what a second descriptor, the read-only view of the file and a later open read;
    a descriptor opened read-only may be synced too (Linux allows it)."""
    path = fsdir / "f"
    expected = bytearray(random.Random(11).randbytes(3 * BLOCK + 17))
    writer = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert os.write(writer, expected) == len(expected)
        assert os.pwrite(writer, b"tail", 5 * BLOCK + 3) == 4  # leaves a hole
        expected += bytes(5 * BLOCK + 3 - len(expected)) + b"tail"
        before = _size_and_times(writer)
        assert before[0] == len(expected)
        assert fsync(writer) == 0
        assert _size_and_times(writer) == before
        assert os.pwrite(writer, b"MID", BLOCK - 1) == 3  # across a block boundary
        expected[BLOCK - 1:BLOCK + 2] = b"MID"
        before = _size_and_times(writer)
        assert fdatasync(writer) == 0
        assert _size_and_times(writer) == before

        reader = os.open(path, os.O_RDONLY)
        try:
            assert os.pread(reader, len(expected) + 10, 0) == expected
            assert fsync(reader) == 0 and fdatasync(reader) == 0
            assert os.pread(reader, len(expected) + 10, 0) == expected
        finally:
            os.close(reader)
        viewer = os.open(target.ro(path), os.O_RDONLY)
        try:
            assert fsync(viewer) == 0 and fdatasync(viewer) == 0
            assert os.pread(viewer, len(expected) + 10, 0) == expected
        finally:
            os.close(viewer)
    finally:
        os.close(writer)
    assert path.read_bytes() == expected
    assert os.stat(path).st_size == len(expected)


def test_fsync_of_an_unlinked_open_file(fsdir: Path) -> None:
    """A file unlinked while open is still a file: fsync and fdatasync succeed on it and
    leave its bytes readable through the descriptor."""
    path = fsdir / "f"
    data = random.Random(12).randbytes(2 * BLOCK + 5)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert os.write(fd, data) == len(data)
        path.unlink()
        assert fsync(fd) == 0 and fdatasync(fd) == 0
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, len(data) + 1, 0) == data
        assert os.pwrite(fd, b"more", len(data)) == 4
        assert fsync(fd) == 0
        assert os.pread(fd, len(data) + 10, 0) == data + b"more"
    finally:
        os.close(fd)
    assert os.listdir(fsdir) == []


def test_fsync_of_directories(fsdir: Path, target: Target) -> None:
    """A directory opened read-only syncs with 0 (fsyncdir on cfs), through the
    read-write and the read-only mount, and the entries made before it stay as made;
    the sync changes none of the directory's time stamps."""
    d = fsdir / "d"
    d.mkdir()
    (d / "a").write_bytes(b"a")
    (d / "sub").mkdir()
    os.rename(d / "a", d / "b")
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        before = _size_and_times(dfd)
        assert fsync(dfd) == 0 and fdatasync(dfd) == 0
        assert _size_and_times(dfd) == before
    finally:
        os.close(dfd)
    rofd = os.open(target.ro(d), os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fsync(rofd) == 0 and fdatasync(rofd) == 0
    finally:
        os.close(rofd)
    assert sorted(os.listdir(d)) == ["b", "sub"]
    assert (d / "b").read_bytes() == b"a"


def test_fsync_errors(fsdir: Path) -> None:
    """EBADF for a descriptor that cannot be synced (O_PATH, also of a symlink) or is
    closed; EINVAL for a FIFO on the filesystem (the pipe code has no sync)."""
    (fsdir / "f").write_bytes(b"abc")
    os.symlink("f", fsdir / "l")
    for path, flags in ((fsdir / "f", os.O_PATH), (fsdir, os.O_PATH | os.O_DIRECTORY),
                        (fsdir / "l", os.O_PATH | os.O_NOFOLLOW)):
        fd = os.open(path, flags)
        try:
            fails(errno.EBADF, fsync, fd)
            fails(errno.EBADF, fdatasync, fd)
        finally:
            os.close(fd)
    fd = os.open(fsdir / "f", os.O_RDONLY)
    os.close(fd)
    fails(errno.EBADF, fsync, fd)
    fails(errno.EBADF, fdatasync, fd)

    os.mkfifo(fsdir / "p", 0o644)
    fd = os.open(fsdir / "p", os.O_RDWR | os.O_NONBLOCK)
    try:
        fails(errno.EINVAL, fsync, fd)
        fails(errno.EINVAL, fdatasync, fd)
    finally:
        os.close(fd)

