"""A volume made with ``-o size=`` fills up like a disk of that size, through real syscalls."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from pathlib import Path

import pytest

from tests.node import Node

KiB = 1024
MiB = 1 << 20
SIZE = 2 * MiB
PIECE = 64 * KiB


def fill(path: Path) -> tuple[int, bytes]:
    """Append fresh random data until write(2) says ENOSPC; close(2) must then succeed.
    Returns the bytes written and their digest."""
    digest = hashlib.sha256()
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            piece = os.urandom(PIECE)
            try:
                n = os.write(fd, piece)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
            digest.update(piece[:n])
            written += n
            assert written <= SIZE, "wrote more than the volume's size"
    finally:
        os.close(fd)  # the write-back cache must not fail here: the limit was met at write()
    return written, digest.digest()


def digest_of(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()


def test_a_sized_volume_fills_like_a_disk_and_empties_again(node: Node, short_tmp: Path) -> None:
    failed = node.cli("volume", "create", "bad", "-o", "size=lots", check=False)
    assert failed.returncode == 1 and "option size='lots' is not a size like 10G" in failed.stderr
    node.cli("volume", "create", "sz", "-o", "size=2M", "-o", "block_size=4096")
    mnt = node.mount("sz", short_tmp / "m", create=False)
    info = node.cli("volume", "inspect", "sz", json_out=True)
    assert (info["size_bytes"], info["used_bytes"], info["options"]["size"]) == (SIZE, 0, str(SIZE))

    keep = os.urandom(256 * KiB)
    (mnt / "keep").write_bytes(keep)
    first, first_digest = fill(mnt / "big")
    assert SIZE - len(keep) - 2 * PIECE < first <= SIZE - len(keep)
    assert (mnt / "keep").read_bytes() == keep
    assert digest_of(mnt / "big") == first_digest
    used = node.cli("volume", "inspect", "sz", json_out=True)["used_bytes"]
    assert used == len(keep) + first and used <= SIZE
    assert os.stat(mnt / "big").st_blocks * 512 == first

    with pytest.raises(OSError) as exc:
        (mnt / "more").write_bytes(os.urandom(PIECE))
    assert exc.value.errno == errno.ENOSPC
    assert (mnt / "more").stat().st_size == 0  # created, but nothing stored in it
    fresh = os.urandom(len(keep))
    (mnt / "keep").write_bytes(fresh)  # a rewrite in place fits in a full volume (O_TRUNC frees first)
    assert (mnt / "keep").read_bytes() == fresh
    os.truncate(mnt / "big", first // 2)  # so does shrinking
    assert node.cli("volume", "inspect", "sz", json_out=True)["used_bytes"] == len(keep) + first // 2

    os.unlink(mnt / "big")
    assert node.cli("volume", "inspect", "sz", json_out=True)["used_bytes"] == len(keep)
    again, again_digest = fill(mnt / "big2")
    assert again > first - 2 * PIECE, (first, again)
    assert digest_of(mnt / "big2") == again_digest

    # statfs cannot tell the volumes of the node's one FUSE session apart (pyfuse3 does not
    # hand the filesystem the inode a statfs is for): df shows the store's disk, not the size.
    st, disk = os.statvfs(mnt), os.statvfs(node.data_dir)
    assert st.f_blocks * st.f_frsize == pytest.approx(disk.f_blocks * disk.f_frsize, rel=0.01)

    node.cli("umount", str(mnt))
    report = node.cli("fsck", json_out=True)
    assert report["clean"], report["lines"]


def test_preallocated_space_is_held_for_its_file(node: Node, short_tmp: Path) -> None:
    """fallocate reserves room in a sized volume: others fill the rest and get ENOSPC,
    while writes into the preallocated range (and the close after them) all succeed."""
    node.cli("volume", "create", "pre", "-o", "size=2M", "-o", "block_size=4096")
    mnt = node.mount("pre", short_tmp / "m", create=False)
    fd = os.open(mnt / "db", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        _fallocate(fd, 0x01, 0, 3 * SIZE // 4)                 # KEEP_SIZE: reserved, size 0
        assert os.fstat(fd).st_size == 0
        assert node.cli("volume", "inspect", "pre", json_out=True)["used_bytes"] == 3 * SIZE // 4
        others, _digest = fill(mnt / "other")
        assert others <= SIZE // 4
        with pytest.raises(OSError) as exc:
            _fallocate(fd, 0, 0, SIZE)
        assert exc.value.errno == errno.ENOSPC
        content = os.urandom(3 * SIZE // 4)
        for at in range(0, len(content), PIECE):               # the volume is full, yet these fit
            assert os.pwrite(fd, content[at:at + PIECE], at) == PIECE
        os.fsync(fd)
    finally:
        os.close(fd)
    assert (mnt / "db").read_bytes() == content
    fd = os.open(mnt / "db", os.O_RDWR)
    try:
        _fallocate(fd, 0x02 | 0x01, 0, SIZE // 4)             # a punched hole frees its blocks
    finally:
        os.close(fd)
    assert node.cli("volume", "inspect", "pre", json_out=True)["used_bytes"] == SIZE // 2 + others
    node.cli("umount", str(mnt))
    report = node.cli("fsck", json_out=True)
    assert report["clean"], report["lines"]


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    if libc.fallocate(fd, mode, offset, length) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
