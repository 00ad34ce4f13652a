"""mount(8) and umount(8) on cfs volumes, through the helper (tools/mount_helper.py) and a
real daemon.

mount(8) finds its helpers in /sbin, which every checkout on the machine shares: the
``helper_links`` fixture points /sbin/mount.cfs and /sbin/mount.fuse.cfs at this
checkout's script for the module's tests and puts back what was there (nothing, or
another checkout's link) afterwards. Every mount is under the test's directory, which
the ``node`` fixture detaches whatever happens, after stopping the daemon by its PID.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.node import BIN, Node, mounts_under

HELPER = BIN / "mount.cfs"
LINKS = [Path("/sbin/mount.cfs"), Path("/sbin/mount.fuse.cfs")]


@pytest.fixture(scope="module", autouse=True)
def helper_links() -> Iterator[None]:
    before: dict[Path, str | None] = {}
    for link in LINKS:
        if link.exists() and not link.is_symlink():
            pytest.skip(f"{link} is a file, not a link: not ours to replace")
        before[link] = os.readlink(link) if link.is_symlink() else None
    try:
        for link in LINKS:
            _link(link, str(HELPER))
        yield
    finally:
        for link, target in before.items():
            if target is None:
                link.unlink(missing_ok=True)
            else:
                _link(link, target)


def _link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one step (a rename over it), if it does not already."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    fresh = link.with_name(f".{link.name}.{os.getpid()}")
    fresh.unlink(missing_ok=True)
    fresh.symlink_to(target)
    os.replace(fresh, link)


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=cwd)


def mount(node: Node, volume: str, target: Path, *options: str, fstype: str = "fuse.cfs") -> None:
    """mount(8), which must succeed and print nothing."""
    result = run("mount", "-t", fstype, "-o", ",".join([*options, f"data_dir={node.data_dir}"]), volume, str(target))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result
    assert mounts_under(target) == [str(target.resolve())]


def umount(target: Path) -> None:
    result = run("umount", str(target))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result
    assert not mounts_under(target)


def wait_forgotten(node: Node, volume: str, timeout: float = 5) -> dict[str, Any]:
    """The node's status once it lists no mount and writes no volume: the umount(8) was
    seen, the volume closed and its lease let go."""
    deadline = time.monotonic() + timeout
    while True:
        status = node.api("status")
        if not status["mounts"] and volume not in status["cluster"]["writing"]:
            return status
        assert time.monotonic() < deadline, f"the node still has it after umount: {status}"
        time.sleep(0.05)


@pytest.mark.parametrize("fstype", ["fuse.cfs", "cfs"])
def test_mount_and_umount(node: Node, short_tmp: Path, fstype: str) -> None:
    node.cli("volume", "create", "v")
    target = short_tmp / "m"
    target.mkdir()
    mount(node, "v", target, fstype=fstype)
    (target / "f").write_bytes(b"through mount(8)")
    assert node.api("mount.ls") == [{"path": str(target), "volume": "v", "read_only": False, "mounted": True}]
    assert "v" in node.api("status")["cluster"]["writing"]
    umount(target)
    wait_forgotten(node, "v")
    assert node.api("mount.ls") == []
    assert node.cli("volume", "inspect", "v", json_out=True)["writer"] is None  # the lease is released
    elsewhere = node.mount("v", short_tmp / "elsewhere", create=False)
    assert (elsewhere / "f").read_bytes() == b"through mount(8)"


def test_read_only(node: Node, short_tmp: Path) -> None:
    node.cli("volume", "create", "v")
    target = short_tmp / "m"
    target.mkdir()
    mount(node, "v", target, "rw")
    (target / "f").write_text("kept")
    umount(target)
    mount(node, "v", target, "ro", "noatime")
    assert (target / "f").read_text() == "kept"
    with pytest.raises(OSError) as raised:
        (target / "g").write_text("no")
    assert raised.value.errno == errno.EROFS
    assert node.api("mount.ls")[0]["read_only"] is True
    umount(target)
    wait_forgotten(node, "v")


def test_over_a_non_empty_directory(node: Node, short_tmp: Path) -> None:
    """As every file system's helper: what is there is hidden while mounted, and kept.
    A restart of the daemon binds it there again."""
    node.cli("volume", "create", "v")
    target = short_tmp / "m"
    target.mkdir()
    (target / "under").write_text("the directory's own")
    mount(node, "v", target)
    assert os.listdir(target) == []
    (target / "over").write_text("the volume's")
    assert node.stop() == 0
    assert (target / "under").exists() and not mounts_under(target)
    node.start()
    assert os.listdir(target) == ["over"]
    umount(target)
    wait_forgotten(node, "v")
    assert os.listdir(target) == ["under"]
    assert (target / "under").read_text() == "the directory's own"


def test_again_and_again_on_one_directory(node: Node, short_tmp: Path) -> None:
    """Each mount right after the umount before it: the daemon need not have seen the umount yet."""
    node.cli("volume", "create", "v")
    target = short_tmp / "m"
    target.mkdir()
    for round_ in range(4):
        mount(node, "v", target, fstype="fuse.cfs" if round_ % 2 else "cfs")
        assert sorted(os.listdir(target)) == [f"f{i}" for i in range(round_)]
        for i in range(round_):
            assert (target / f"f{i}").read_text() == f"round {i}"
        (target / f"f{round_}").write_text(f"round {round_}")
        umount(target)
    wait_forgotten(node, "v")


def test_busy_and_lazy_umount(node: Node, short_tmp: Path) -> None:
    """A umount that fails (busy) changes nothing; ``umount -l`` is seen like any other,
    and a file open inside keeps working, as with ``cfs umount --lazy``."""
    node.cli("volume", "create", "v")
    target = short_tmp / "m"
    target.mkdir()
    mount(node, "v", target)
    with open(target / "f", "w") as held:
        held.write("before ")
        held.flush()
        busy = run("umount", str(target))
        assert busy.returncode != 0 and "busy" in busy.stderr
        time.sleep(0.3)  # what the watcher would need to get it wrong
        assert node.api("mount.ls")[0]["mounted"] is True
        lazy = run("umount", "-l", str(target))
        assert (lazy.returncode, lazy.stderr) == (0, "")
        wait_forgotten(node, "v")
        held.write("after")
    again = short_tmp / "again"
    again.mkdir()
    mount(node, "v", again)
    assert (again / "f").read_text() == "before after"
    umount(again)


def test_fstab_line(node: Node, short_tmp: Path) -> None:
    """A line as the README gives it, with what systemd and mount(8) add; a second
    ``mount -a`` finds it mounted and is content. Run where a directory has the volume's
    name, as systemd runs mount(8) in / where /srv may be: mount(8) passes its path."""
    node.cli("volume", "create", "srv")
    target = short_tmp / "srv"
    target.mkdir()
    fstab = short_tmp / "fstab"
    fstab.write_text(f"srv {target} fuse.cfs defaults,_netdev,nofail,x-systemd.requires=cfs.service,"
                     f"data_dir={node.data_dir} 0 0\n")
    for _ in range(2):
        result = run("mount", "-a", "-T", str(fstab), cwd=short_tmp)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), result
        assert mounts_under(target) == [str(target)]
    assert node.api("mount.ls")[0]["volume"] == "srv"
    umount(target)
    wait_forgotten(node, "srv")


@pytest.mark.parametrize("volume, options, status, message", [
    ("v", "colour=blue", 1, "unknown option 'colour=blue'"),
    ("v", "noexec", 1, "noexec"),
    ("nope", "", 32, "no volume named 'nope'"),
])
def test_errors(node: Node, short_tmp: Path, volume: str, options: str, status: int, message: str) -> None:
    node.cli("volume", "create", "v")
    target = short_tmp / "m"
    target.mkdir()
    result = run("mount", "-t", "cfs", "-o", f"{options},data_dir={node.data_dir}".lstrip(","), volume, str(target))
    assert result.returncode == status, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mount.cfs: ") and message in lines[0], result.stderr
    assert not mounts_under(target)
    assert node.api("mount.ls") == []


def test_no_daemon(short_tmp: Path) -> None:
    target = short_tmp / "m"
    target.mkdir()
    result = run("mount", "-t", "fuse.cfs", "-o", f"data_dir={short_tmp / 'nodata'}", "v", str(target))
    assert result.returncode == 32
    assert "the cfs daemon is not running" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not mounts_under(target)
