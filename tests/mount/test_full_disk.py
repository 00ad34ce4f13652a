"""A full disk gives the writer ENOSPC, keeps what was written, and recovers when space is freed."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.node import Node


@pytest.fixture
def small_disk(short_tmp: Path) -> Iterator[Path]:
    disk = short_tmp / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path: Path) -> int:
    """Write fresh random data (nothing to deduplicate) until ENOSPC; return bytes written.
    Any other error fails the test."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(os.urandom(1 << 20))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                return written


def test_enospc_then_recovery(small_disk: Path) -> None:
    node = Node(small_disk, extra_args=["--reserve", str(4 << 20)])
    try:
        node.start()
        mnt = node.mount("v", small_disk / "m")
        keep = os.urandom(1 << 20)
        (mnt / "keep").write_bytes(keep)
        fd = os.open(mnt / "keep", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        first = fill(mnt / "big")
        assert first > 20 << 20
        assert (mnt / "keep").read_bytes() == keep
        with pytest.raises(OSError) as exc:
            (mnt / "more").write_bytes(os.urandom(4 << 20))
        assert exc.value.errno == errno.ENOSPC
        os.unlink(mnt / "big")
        (mnt / "more").unlink(missing_ok=True)  # its create may have been refused already
        again = fill(mnt / "big2")
        assert again > first // 2, (first, again)
        os.unlink(mnt / "big2")
        (mnt / "after").write_bytes(b"fine")
        assert (mnt / "keep").read_bytes() == keep
        assert node.api("status")["pid"] == node.pid
        report = node.cli("fsck", json_out=True)
        assert report["clean"], report
    finally:
        node.cleanup()
