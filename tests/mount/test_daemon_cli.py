"""The node daemon and the ``cfs`` command line, through real processes and mounts."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.node import CFS, Node, as_user, mounts_under


def fails_with(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cfs: error: "), lines
    for word in words:
        assert word in lines[0], lines[0]


def test_volume_lifecycle(node: Node, short_tmp: Path) -> None:
    node.cli("volume", "create", "v1")
    listed = node.cli("volume", "ls", json_out=True)
    assert [v["name"] for v in listed] == ["v1"]
    mnt = node.mount("v1", short_tmp / "m1", create=False)
    payload = os.urandom(200_000)
    (mnt / "a").write_bytes(payload)
    (mnt / "b").write_bytes(payload)  # the same blocks again: deduplicated
    info = node.cli("volume", "inspect", "v1", json_out=True)
    assert info["mountpoints"] == [str(mnt)]
    usage = info["usage"]
    assert usage["apparent_bytes"] == 400_000
    assert usage["dedup_ratio"] >= 1.9
    fails_with(node.cli("volume", "rm", "v1", check=False), "mounted")
    assert (mnt / "a").read_bytes() == payload
    node.cli("umount", str(mnt))
    assert not mounts_under(mnt)
    node.cli("volume", "rm", "v1")
    assert node.cli("volume", "ls", json_out=True) == []
    fails_with(node.cli("volume", "inspect", "v1", check=False), "no volume named 'v1'")


@pytest.mark.parametrize("name,why", [
    ("", "empty"), ("a/b", "'/'"), ("..", "reserved"), ("x" * 256, "255"),
    ("_x", "not allowed"), ("a b", "not allowed"),
])
def test_invalid_volume_names(node: Node, name: str, why: str) -> None:
    fails_with(node.cli("volume", "create", name, check=False), why)
    assert node.cli("volume", "ls", json_out=True) == []


def test_nul_in_name_refused_by_daemon(node: Node) -> None:
    with pytest.raises(Exception, match="NUL"):
        node.api("volume.create", name="a\0b")


def test_unknown_volume_and_option(node: Node, short_tmp: Path) -> None:
    (short_tmp / "m").mkdir()
    fails_with(node.cli("mount", "nope", str(short_tmp / "m"), check=False), "no volume named 'nope'")
    fails_with(node.cli("volume", "create", "v", "-o", "colour=blue", check=False), "unknown volume option", "colour")
    fails_with(node.cli("volume", "create", "v", "-o", "block_size=1000", check=False), "power of two")


def test_mount_point_errors(node: Node, short_tmp: Path) -> None:
    node.cli("volume", "create", "v")
    fails_with(node.cli("mount", "v", str(short_tmp / "missing"), check=False), "does not exist")
    (short_tmp / "file").write_text("x")
    fails_with(node.cli("mount", "v", str(short_tmp / "file"), check=False), "not a directory")
    target = node.mount("v", short_tmp / "m", create=False)
    fails_with(node.cli("mount", "v", str(target), check=False), "already a mount point")
    (short_tmp / "full").mkdir()
    fails_with(node.cli("umount", str(short_tmp / "full"), check=False), "not a cfs mount")


def test_mount_over_a_non_empty_directory(node: Node, short_tmp: Path) -> None:
    """As mount(8) does for every file system: what is there is hidden, and back after umount."""
    node.cli("volume", "create", "v")
    (short_tmp / "full").mkdir()
    (short_tmp / "full" / "x").write_text("under")
    target = node.mount("v", short_tmp / "full", create=False)
    assert os.listdir(target) == []
    node.cli("umount", str(target))
    assert (target / "x").read_text() == "under"


def test_daemon_not_running(short_tmp: Path) -> None:
    result = subprocess.run([CFS, "--data-dir", str(short_tmp / "nodata"), "status"],
                            capture_output=True, text=True)
    fails_with(result, "not running")


def test_second_daemon_refused(node: Node, short_tmp: Path) -> None:
    other = Node(short_tmp)
    with pytest.raises(RuntimeError, match="another cfs daemon"):
        other.start(timeout=10)
    assert node.api("status")["pid"] == node.pid


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_and_restart_remounts(node: Node, short_tmp: Path, signum: int) -> None:
    mnt = node.mount("v", short_tmp / "m")
    (mnt / "kept").write_bytes(b"data")
    held = open(mnt / "kept", "rb")  # an open file must not keep a dead mount around
    node.proc.send_signal(signum)
    assert node.proc.wait(30) == 0
    with pytest.raises(OSError) as gone:
        held.close()  # its server is gone: the kernel answers ENOTCONN, as for any FUSE mount
    assert gone.value.errno == errno.ENOTCONN
    assert mounts_under(short_tmp) == []
    node.start()
    assert str(mnt) in mounts_under(short_tmp)
    assert (mnt / "kept").read_bytes() == b"data"


def test_kill9_then_restart_cleans_stale_mounts(node: Node, short_tmp: Path) -> None:
    mnt = node.mount("v", short_tmp / "m")
    fd = os.open(mnt / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.close(fd)
    node.kill()
    with pytest.raises(OSError) as dead:
        os.stat(mnt)
    assert dead.value.errno == errno.ENOTCONN
    node.start()
    assert (mnt / "synced").read_bytes() == b"durable"
    assert node.cli("fsck", json_out=True)["clean"]


def test_other_users_can_use_a_mount(mnt: Path) -> None:
    shared = mnt / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    private = mnt / "private"
    private.mkdir(mode=0o700)
    script = 'echo hi > "$1/shared/f" && if ls "$1/private" 2>/dev/null; then echo readable; else echo denied; fi'
    out = subprocess.run(["/bin/sh", "-c", script, "sh", str(mnt)], capture_output=True, text=True,
                         **as_user(65534, 65534))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "denied"
    assert (shared / "f").stat().st_uid == 65534


def test_volumes_are_isolated(node: Node, short_tmp: Path) -> None:
    a = node.mount("a", short_tmp / "a")
    b = node.mount("b", short_tmp / "b")
    (a / "only-in-a").write_text("a")
    assert os.listdir(b) == []
    with pytest.raises(OSError) as exc:
        os.link(a / "only-in-a", b / "link")
    assert exc.value.errno == errno.EXDEV
    with pytest.raises(OSError) as exc:
        os.rename(a / "only-in-a", b / "moved")
    assert exc.value.errno == errno.EXDEV


def test_read_only_mount(node: Node, short_tmp: Path) -> None:
    rw = node.mount("v", short_tmp / "rw")
    (rw / "f").write_text("x")
    ro = short_tmp / "ro"
    ro.mkdir()
    node.cli("mount", "--read-only", "v", str(ro))
    assert (ro / "f").read_text() == "x"
    with pytest.raises(OSError) as exc:
        (ro / "g").write_text("y")
    assert exc.value.errno == errno.EROFS


def test_malformed_control_requests_do_not_hurt(node: Node) -> None:
    def raw(payload: bytes) -> dict:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(node.socket))
            try:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the daemon stopped reading an oversized request; its answer is queued
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return json.loads(data.splitlines()[-1])

    assert "not JSON" in raw(b"{nope\n")["error"]
    assert "unknown operation" in raw(b'{"op": "format-disk", "args": {}}\n')["error"]
    assert "bad arguments" in raw(b'{"op": "volume.create", "args": {"nome": "x"}}\n')["error"]
    assert "JSON object" in raw(b"[1, 2]\n")["error"]
    assert "limit" in raw(b"x" * (2 << 20))["error"]
    assert "full request" in raw(b'{"op": "status"')["error"]
    # A thousand '[' once killed the daemon (RecursionError out of json.loads).
    assert "nested too deeply" in raw(b"[" * 1000 + b"\n")["error"]
    assert "nested too deeply" in raw(b'{"op": "status", "args": ' + b'{"a":' * 5000 + b"\n")["error"]
    assert node.api("status")["pid"] == node.pid
