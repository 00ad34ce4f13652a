"""A full disk gives the writer ENOSPC, keeps what was written, and recovers when space is freed."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.node import Node
from tests.plugin_client import plugin_call


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
        # The reserve file was given up in the first fill and the disk never had room to take
        # it back; its blocks must still be free for the delete below (they were eaten to the
        # last one by data landing beyond the map's free pages, and the delete then failed
        # with ENOSPC now and then).
        assert shutil.disk_usage(small_disk).free >= (4 << 20) // 2
        os.unlink(mnt / "big2")
        (mnt / "after").write_bytes(b"fine")
        assert (mnt / "keep").read_bytes() == keep
        assert node.api("status")["pid"] == node.pid
        report = node.cli("fsck", json_out=True)
        assert report["clean"], report
    finally:
        node.cleanup()


@pytest.fixture
def loop_disk(short_tmp: Path) -> Iterator[Path]:
    """A 160 MiB ext4 on a loop device, mounted where ``Node(short_tmp)`` keeps its data
    directory, with no blocks reserved for root, so that the disk under the store can
    really reach 0 bytes free. Unmounted (the loop device with it) after the test, after
    the node's own cleanup, which detaches every mount under ``short_tmp``."""
    image, disk = short_tmp / "disk.img", short_tmp / "data"
    with open(image, "wb") as f:
        f.truncate(160 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
    disk.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)
        image.unlink(missing_ok=True)


def fill_disk(path: Path, leave: int = 0) -> None:
    """Take the disk's free blocks but ``leave`` bytes with a plain file, as another
    program would; with ``leave`` 0, every last one."""
    disk = path.parent
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 64 << 10, 4096, 512):
            try:
                while free_bytes(disk) - size >= leave:
                    f.write(b"\xa5" * size)
                    os.fsync(f.fileno())
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_every_control_operation_works_with_0_bytes_free(loop_disk: Path, short_tmp: Path) -> None:
    """Filled through a mount until ENOSPC, then to the last block by another program: the
    control plane still answers, mounts and unmounts, restarts, serves Docker's calls,
    and removing a volume frees its space (issue #17)."""
    plugin = short_tmp / "p.sock"
    node = Node(short_tmp, extra_args=["--plugin-socket", str(plugin)])
    assert node.data_dir == loop_disk
    try:
        node.start()
        mnt = node.mount("full", short_tmp / "m")
        node.cli("volume", "create", "spare")
        assert plugin_call(plugin, "/VolumeDriver.Create", {"Name": "dock", "Opts": {}})[0] == 200
        status, reply = plugin_call(plugin, "/VolumeDriver.Mount", {"Name": "dock", "ID": "c1"})
        assert status == 200, reply
        keep = os.urandom(1 << 20)
        (mnt / "keep").write_bytes(keep)
        fill_disk(loop_disk / "other-program", leave=56 << 20)
        assert fill(mnt / "big") > 24 << 20          # cfs stops at its reserve
        fill_disk(loop_disk / "filler")              # and another program takes the rest
        assert free_bytes(loop_disk) < 64 << 10

        status = node.cli("status", json_out=True)
        assert status["store"]["low_space"] is True
        assert {v["name"] for v in node.cli("volume", "ls", json_out=True)} == {"full", "spare", "dock"}
        assert node.cli("volume", "inspect", "full", json_out=True)["used_bytes"] > 24 << 20
        assert node.cli("fsck", json_out=True)["clean"]
        other = node.mount("spare", short_tmp / "other", create=False)
        assert (other / "nothing").exists() is False
        node.cli("umount", str(other))
        assert plugin_call(plugin, "/VolumeDriver.List", {})[0] == 200
        assert plugin_call(plugin, "/VolumeDriver.Get", {"Name": "dock"})[0] == 200
        assert plugin_call(plugin, "/VolumeDriver.Unmount", {"Name": "dock", "ID": "c1"}) == (200, {"Err": ""})
        assert plugin_call(plugin, "/VolumeDriver.Remove", {"Name": "dock"}) == (200, {"Err": ""})

        assert node.stop() == 0
        node.start()                                  # a restart on the full disk
        assert (mnt / "keep").read_bytes() == keep   # the mount came back
        node.cli("umount", str(mnt))
        before = node.cli("status", json_out=True)["store"]["free_bytes"]
        node.cli("volume", "rm", "full")
        freed = node.cli("status", json_out=True)["store"]["free_bytes"] - before
        assert freed > 24 << 20, freed
        other = node.mount("spare", short_tmp / "other", create=False)
        data = os.urandom(16 << 20)                   # the freed space takes new data
        (other / "new").write_bytes(data)
        assert (other / "new").read_bytes() == data
        assert "gave up the" in node.log()            # the reserve file served the deletes

        (loop_disk / "filler").unlink()               # the other program's files go:
        (loop_disk / "other-program").unlink()
        (other / "more").write_bytes(b"x")            # the reserve is taken back
        assert node.cli("status", json_out=True)["store"]["reserve_file_bytes"] > 0
        assert node.cli("fsck", json_out=True)["clean"]
    finally:
        node.cleanup()
