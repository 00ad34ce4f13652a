"""Snapshots and clones through a real daemon: the command line, mounts, the Docker
plugin, and kill -9 at every step of making and removing them."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.node import Node
from tests.plugin_client import plugin_call


def tree(root: Path) -> dict[str, str]:
    out = {}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = Path(top) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def fill(root: Path, seed: int, files: int = 6) -> None:
    (root / "sub").mkdir(exist_ok=True)
    for n in range(files):
        data = bytes([seed + n]) * (1000 + 7000 * n) + os.urandom(3000)
        target = root / ("sub" if n % 2 else "") / f"f{n}"
        with open(target, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())


def test_snapshot_mount_clone_and_remove(node: Node, short_tmp: Path) -> None:
    mnt = node.mount("vol", short_tmp / "m", block_size=4096)
    fill(mnt, 1)
    before = tree(mnt)
    taken = node.cli("snapshot", "create", "vol", "monday", json_out=True)
    assert taken["name"] == "vol@monday" and taken["snapshot_of"] == node.cli(
        "volume", "inspect", "vol", json_out=True)["id"]
    (mnt / "f0").write_bytes(b"changed after the snapshot")
    (mnt / "sub" / "f1").unlink()

    snap = short_tmp / "snap"
    snap.mkdir()
    assert node.cli("mount", "vol@monday", str(snap), json_out=True)["read_only"] is True
    assert tree(snap) == before
    with pytest.raises(OSError) as refused:
        (snap / "new").write_bytes(b"x")
    assert refused.value.errno == errno.EROFS
    assert [s["name"] for s in node.cli("snapshot", "ls", json_out=True)] == ["vol@monday"]
    assert [v["name"] for v in node.cli("volume", "ls", json_out=True)] == ["vol"]   # snapshots apart

    node.cli("volume", "create", "from-snap", "--from-snapshot", "vol@monday")
    node.cli("volume", "create", "from-vol", "--from-volume", "vol", "-o", "size=1G")
    clone = node.mount("from-snap", short_tmp / "c1", create=False)
    live = node.mount("from-vol", short_tmp / "c2", create=False)
    assert tree(clone) == before and tree(live) == tree(mnt)
    (clone / "written-in-the-clone").write_bytes(b"mine")             # clones are writable
    assert tree(snap) == before and not (mnt / "written-in-the-clone").exists()
    assert node.cli("volume", "inspect", "from-snap", json_out=True)["options"]["from"] == "vol@monday"

    node.cli("umount", str(mnt))
    node.cli("volume", "rm", "vol")                                     # the snapshot lives on
    assert tree(snap) == before
    inspect = node.cli("snapshot", "inspect", "vol@monday", json_out=True)
    assert inspect["exclusive_bytes"] == 0                              # the clone shares its chunks
    refused_rm = node.cli("snapshot", "rm", "vol@monday", check=False)
    assert refused_rm.returncode != 0 and "mounted" in refused_rm.stderr
    node.cli("umount", str(snap))
    node.cli("snapshot", "rm", "vol@monday")
    assert node.cli("snapshot", "ls", json_out=True) == []
    assert tree(clone) == {**before, "written-in-the-clone": hashlib.sha256(b"mine").hexdigest()}
    report = node.cli("fsck", json_out=True)
    assert report["clean"], report["lines"]


def test_bad_requests_change_nothing(node: Node, short_tmp: Path) -> None:
    node.mount("vol", short_tmp / "m", block_size=4096)
    for args, message in [
        (("snapshot", "create", "nope", "s"), "no volume named 'nope'"),
        (("snapshot", "create", "vol", "a@b"), "not allowed"),
        (("snapshot", "inspect", "vol"), "not a snapshot name"),
        (("snapshot", "rm", "vol@nope"), "no volume named 'vol@nope'"),
        (("volume", "rm", "vol@x"), "is a snapshot"),
        (("volume", "create", "c", "--from-snapshot", "vol@nope"), "no snapshot named 'vol@nope'"),
        (("volume", "create", "c", "--from-volume", "vol", "-o", "block_size=8192"), "come from the volume"),
    ]:
        result = node.cli(*args, check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    node.cli("snapshot", "create", "vol", "s")
    again = node.cli("snapshot", "create", "vol", "s", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert [v["name"] for v in node.cli("volume", "ls", json_out=True)] == ["vol"]
    assert [s["name"] for s in node.cli("snapshot", "ls", json_out=True)] == ["vol@s"]
    assert node.cli("fsck", json_out=True)["clean"]


def test_docker_clones_from_a_snapshot(short_tmp: Path) -> None:
    node = Node(short_tmp, extra_args=["--plugin-socket", str(short_tmp / "p.sock")])
    try:
        node.start()
        mnt = node.mount("vol", short_tmp / "m", block_size=4096)
        fill(mnt, 3)
        node.cli("snapshot", "create", "vol", "s")
        body = {"Name": "dclone", "Opts": {"from": "vol@s"}}
        assert plugin_call(short_tmp / "p.sock", "/VolumeDriver.Create", body) == (200, {"Err": ""})
        assert plugin_call(short_tmp / "p.sock", "/VolumeDriver.Create", body) == (200, {"Err": ""})  # again: same
        status, reply = plugin_call(short_tmp / "p.sock", "/VolumeDriver.Mount", {"Name": "dclone", "ID": "c1"})
        assert status == 200, reply
        assert tree(Path(reply["Mountpoint"])) == tree(mnt)
        assert plugin_call(short_tmp / "p.sock", "/VolumeDriver.Unmount", {"Name": "dclone", "ID": "c1"})[0] == 200
    finally:
        node.cleanup()


@pytest.mark.parametrize("point, command", [
    ("snapshot-taken", ("snapshot", "create", "vol", "s")),
    ("clone-made", ("volume", "create", "c", "--from-volume", "vol")),
    ("clone-made", ("volume", "create", "c", "--from-snapshot", "vol@base")),
    ("volume-rm-recorded", ("snapshot", "rm", "vol@base")),
    ("volume-rm-uncataloged", ("snapshot", "rm", "vol@base")),
])
def test_kill_9_while_making_or_removing_leaves_nothing_half_made(short_tmp: Path, point: str,
                                                                   command: tuple[str, ...]) -> None:
    """The daemon dies at each step (CFS_CRASH_AT, cfs.faults); the next start finishes
    the job: what was made is in the catalog and whole, what was removed is gone."""
    node = Node(short_tmp)
    try:
        node.start()
        mnt = node.mount("vol", short_tmp / "m", block_size=4096)
        fill(mnt, 5)
        node.cli("snapshot", "create", "vol", "base")
        expected = tree(mnt)
        node.cli("umount", str(mnt))
        assert node.stop() == 0
        node.env = {"CFS_CRASH_AT": point}
        node.start()
        assert node.cli(*command, check=False).returncode != 0
        assert node.proc is not None and node.proc.wait(30) == -signal.SIGKILL
        assert f"crash point {point} reached" in node.log()
        node.env = {}
        node.start()
        finishing = "finishing its removal" if command[1] == "rm" else "entering it in the catalog"
        assert finishing in node.log()
        names = {s["name"] for s in node.cli("snapshot", "ls", json_out=True)}
        volumes = {v["name"] for v in node.cli("volume", "ls", json_out=True)}
        if command[0] == "snapshot" and command[1] == "rm":
            assert names == set()
        elif command[1] == "create" and command[0] == "snapshot":
            assert names == {"vol@base", "vol@s"}
            made = short_tmp / "made"
            made.mkdir()
            node.cli("mount", "vol@s", str(made))
            assert tree(made) == expected
        else:
            assert volumes == {"vol", "c"}
            made = node.mount("c", short_tmp / "made", create=False)
            assert tree(made) == expected
            (made / "writable").write_bytes(b"yes")
        report = node.cli("fsck", json_out=True)
        assert report["clean"], report["lines"]
    finally:
        node.cleanup()
