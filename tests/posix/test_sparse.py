"""Sparse files, holes, and files larger than 4 GiB.

Bytes never written read as zeros and take no space: st_blocks counts what is stored
(tmpfs counts whole pages, cfs the 512-byte units of its trimmed blocks, so the bounds
below allow either). Offsets past 2**32 behave like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCK = 4096
GiB = 1 << 30


def test_file_over_4_gib(fsdir: Path) -> None:
    fd = os.open(fsdir / "big", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        assert os.pwrite(fd, b"across", 4 * GiB - 3) == 6
        assert os.pwrite(fd, b"end", 5 * GiB) == 3
        st = os.fstat(fd)
        assert st.st_size == 5 * GiB + 3
        assert st.st_blocks <= 3 * BLOCK // 512
        assert os.pread(fd, 10, 4 * GiB - 5) == b"\0\0across\0\0"
        assert os.pread(fd, 10, 5 * GiB - 2) == b"\0\0end"
        assert os.pread(fd, BLOCK, 3 * GiB) == bytes(BLOCK)
        assert os.lseek(fd, 0, os.SEEK_END) == 5 * GiB + 3
        os.ftruncate(fd, 4 * GiB)
        assert os.pread(fd, 10, 4 * GiB - 3) == b"acr"
        os.ftruncate(fd, 6 * GiB)
        assert os.pread(fd, 10, 4 * GiB - 3) == b"acr" + bytes(7)
        assert os.fstat(fd).st_size == 6 * GiB
    finally:
        os.close(fd)
    assert os.stat(fsdir / "big").st_size == 6 * GiB


def test_holes_read_as_zeros_and_take_no_blocks(fsdir: Path) -> None:
    fd = os.open(fsdir / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"a" * BLOCK, 0)
        os.pwrite(fd, b"b" * BLOCK, 10 * BLOCK)
        st = os.fstat(fd)
        assert st.st_size == 11 * BLOCK
        assert 2 * BLOCK // 512 <= st.st_blocks <= 2 * BLOCK // 512 + 8
        assert os.pread(fd, 9 * BLOCK, BLOCK) == bytes(9 * BLOCK)
        assert os.pread(fd, 3, BLOCK - 1) == b"a\0\0"
        assert os.pread(fd, 3, 10 * BLOCK - 2) == b"\0\0b"
    finally:
        os.close(fd)


def test_hole_made_by_seeking_past_the_end(fsdir: Path) -> None:
    with open(fsdir / "f", "wb") as f:
        f.write(b"head")
        f.seek(100 * BLOCK)
        f.write(b"tail")
    st = os.stat(fsdir / "f")
    assert st.st_size == 100 * BLOCK + 4
    assert st.st_blocks <= 2 * BLOCK // 512 + 8
    data = (fsdir / "f").read_bytes()
    assert data[:4] == b"head" and data[-4:] == b"tail" and data[4:-4] == bytes(100 * BLOCK - 4)


def test_filling_a_hole(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.truncate(fsdir / "f", 8 * BLOCK)
    assert os.stat(fsdir / "f").st_blocks == 0
    fd = os.open(fsdir / "f", os.O_WRONLY)
    try:
        os.pwrite(fd, b"x" * 100, 3 * BLOCK + 50)  # inside one block, neither end aligned
    finally:
        os.close(fd)
    st = os.stat(fsdir / "f")
    assert 1 <= st.st_blocks <= BLOCK // 512
    data = (fsdir / "f").read_bytes()
    assert data == bytes(3 * BLOCK + 50) + b"x" * 100 + bytes(5 * BLOCK - 150)
