"""The Docker plugin socket of a real daemon, called as Docker calls it, without Docker.

Real binds, real restarts (SIGTERM and kill -9): the mount IDs holding a volume and its
one bind survive both, and no request, however malformed, stops the daemon.

What is observed is what is real: binds in /proc/self/mountinfo, the node's recorded
mounts (``cfs status``), the binds the node made (its log line for each, "mounted volume
V at P"), and the holder records in the store, read while the daemon is stopped (its
LMDB environment is the daemon's while it runs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from cfs.store import NodeRecords, Store
from tests.node import Node, mounts_under
from tests.plugin_client import MALFORMED_REQUESTS, http_request, parse_responses, plugin_call, raw_exchange


@pytest.fixture
def pnode(short_tmp: Path) -> Iterator[Node]:
    n = Node(short_tmp, extra_args=["--plugin-socket", str(short_tmp / "p.sock")])
    try:
        n.start()
        yield n
    finally:
        n.cleanup()


def call(node: Node, endpoint: str, **body: object) -> tuple[int, dict]:
    return plugin_call(node.base / "p.sock", endpoint, body)


def binds_at(path: Path) -> int:
    return sum(1 for point in mounts_under(path.parent) if point == str(path))


def mounts_of(node: Node) -> dict[str, str]:
    """The node's recorded mounts (mount point -> volume), as ``cfs status`` shows them."""
    return node.api("status")["mounts"]


def binds_made(node: Node, volume: str, where: Path, since: int = 0) -> int:
    """How many times the node bound ``volume`` at ``where`` through a mount request
    (NodeService.mount logs each; the binds of recorded mounts at a start log
    "remounted"), in its log from byte ``since`` on."""
    line = re.compile(rf"mountd\.service: mounted volume {re.escape(volume)} at {re.escape(str(where))}$")
    return sum(1 for text in log_since(node, since).splitlines() if line.search(text))


def log_since(node: Node, since: int) -> str:
    return node.log_path.read_bytes()[since:].decode(errors="replace")


def log_size(node: Node) -> int:
    return node.log_path.stat().st_size


def holders_in_store(node: Node) -> dict[str, set[str]]:
    """The plugin's holder records as the store keeps them; only while the daemon is stopped."""
    assert node.proc is not None and node.proc.poll() is not None, "the daemon must be stopped"
    store = Store(node.data_dir / "store")
    try:
        return NodeRecords(store).all_plugin_holders()
    finally:
        store.close()


def test_mount_ids_share_one_bind_across_restarts(pnode: Node) -> None:
    assert call(pnode, "/Plugin.Activate") == (200, {"Implements": ["VolumeDriver"]})
    assert call(pnode, "/VolumeDriver.Create", Name="v1", Opts={"block_size": "4096", "size": "64M"})[0] == 200
    status, reply = call(pnode, "/VolumeDriver.Mount", Name="v1", ID="c1")
    assert status == 200, reply
    where = Path(reply["Mountpoint"])
    assert where == (pnode.data_dir / "plugin-mounts" / "v1").resolve()
    assert call(pnode, "/VolumeDriver.Mount", Name="v1", ID="c2")[1]["Mountpoint"] == str(where)
    assert binds_at(where) == 1
    (where / "hello").write_bytes(b"from a container\n" * 1000)

    info = pnode.cli("volume", "inspect", "v1", json_out=True)
    assert info["mountpoints"] == [str(where)] and info["options"]["size"] == str(64 << 20)
    refused = pnode.cli("volume", "rm", "v1", check=False)
    assert refused.returncode == 1 and "mounted" in refused.stderr

    assert pnode.stop() == 0
    pnode.start()
    assert binds_at(where) == 1 and (where / "hello").read_bytes() == b"from a container\n" * 1000
    assert call(pnode, "/VolumeDriver.Get", Name="v1")[1]["Volume"]["Status"]["containers"] == 2

    with open(where / "synced", "wb") as f:
        f.write(b"fsync'd")
        f.flush()
        os.fsync(f.fileno())
    pnode.kill()
    pnode.start()
    assert binds_at(where) == 1 and (where / "synced").read_bytes() == b"fsync'd"

    assert call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="c1") == (200, {"Err": ""})
    assert binds_at(where) == 1
    assert call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="c1") == (200, {"Err": ""})  # repeated
    assert call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="c2") == (200, {"Err": ""})
    assert binds_at(where) == 0
    assert call(pnode, "/VolumeDriver.Path", Name="v1") == (200, {"Mountpoint": "", "Err": ""})
    assert pnode.cli("volume", "inspect", "v1", json_out=True)["mountpoints"] == []
    assert call(pnode, "/VolumeDriver.Remove", Name="v1") == (200, {"Err": ""})
    assert pnode.cli("volume", "ls", json_out=True) == []


def test_cfs_and_docker_see_the_same_volumes(pnode: Node) -> None:
    pnode.cli("volume", "create", "made-by-cfs", "-o", "size=1G")
    assert call(pnode, "/VolumeDriver.Create", Name="made-by-docker")[0] == 200
    assert call(pnode, "/VolumeDriver.Create", Name="made-by-cfs", Opts={"size": "1024M"})[0] == 200
    status, reply = call(pnode, "/VolumeDriver.Create", Name="made-by-cfs", Opts={"size": "2G"})
    assert status == 500 and "already exists with other options: size=2G" in reply["Err"]
    names = [v["Name"] for v in call(pnode, "/VolumeDriver.List")[1]["Volumes"]]
    assert names == ["made-by-cfs", "made-by-docker"]
    assert [v["name"] for v in pnode.cli("volume", "ls", json_out=True)] == names


def test_malformed_requests_never_stop_the_daemon(pnode: Node) -> None:
    sock = pnode.base / "p.sock"
    assert b" 400 " in raw_exchange(sock, b"\x00\x01garbage\r\n\r\n")
    assert b" 413 " in raw_exchange(sock, b"POST /VolumeDriver.Create HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 5000000\r\n\r\n" + b"{" * 2_000_000)
    assert b" 400 " in raw_exchange(sock, b"POST /VolumeDriver.Create HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Length: 100\r\n\r\n{\"Name\":")  # cut short
    assert raw_exchange(sock, b"") == b""
    assert call(pnode, "/VolumeDriver.Create", Name="v1", Opts={"nonsense": "1"})[1]["Err"].startswith(
        "unknown volume option(s): nonsense")
    assert call(pnode, "/VolumeDriver.Mount", Name="v1")[0] == 400
    assert call(pnode, "/VolumeDriver.Get")[0] == 400
    assert call(pnode, "/Docker.Explode")[0] == 404
    assert pnode.api("status")["pid"] == pnode.pid
    assert call(pnode, "/Plugin.Activate")[0] == 200


def test_default_socket_and_no_plugin(short_tmp: Path) -> None:
    node = Node(short_tmp)
    try:
        node.start()
        assert (node.data_dir / "plugin.sock").is_socket()
        assert plugin_call(node.data_dir / "plugin.sock", "/Plugin.Activate")[0] == 200
        node.stop()
        assert not (node.data_dir / "plugin.sock").exists()
        node.extra_args = ["--no-plugin"]
        node.start()
        assert not (node.data_dir / "plugin.sock").exists()
    finally:
        node.cleanup()


def test_a_plugin_socket_in_use_stops_a_second_daemon(pnode: Node, short_tmp: Path) -> None:
    other = Node(short_tmp / "other", extra_args=["--plugin-socket", str(short_tmp / "p.sock")])
    (short_tmp / "other").mkdir()
    try:
        with pytest.raises(RuntimeError, match="another process serves the plugin socket"):
            other.start()
    finally:
        other.cleanup()
    assert call(pnode, "/Plugin.Activate")[0] == 200


# --- holders and binds: one bind per volume, counted by mount ID ----------------------------

def test_one_bind_per_volume_counted_by_id(pnode: Node) -> None:
    """Mount binds on the first ID only; a repeated ID is no new holder; Unmount of an ID
    that holds nothing changes nothing; the last holder's Unmount unbinds and removes
    the mount point; the next Mount binds anew."""
    assert call(pnode, "/VolumeDriver.Create", Name="v1")[0] == 200
    where = (pnode.data_dir / "plugin-mounts" / "v1").resolve()
    mounted = (200, {"Mountpoint": str(where), "Err": ""})
    assert call(pnode, "/VolumeDriver.Mount", Name="v1", ID="a") == mounted
    assert call(pnode, "/VolumeDriver.Mount", Name="v1", ID="b") == mounted
    assert call(pnode, "/VolumeDriver.Mount", Name="v1", ID="a") == mounted   # repeated: no new holder
    assert binds_made(pnode, "v1", where) == 1 and binds_at(where) == 1
    assert mounts_of(pnode) == {str(where): "v1"}
    assert call(pnode, "/VolumeDriver.Get", Name="v1")[1]["Volume"]["Status"]["containers"] == 2
    assert call(pnode, "/VolumeDriver.Path", Name="v1") == mounted
    assert call(pnode, "/VolumeDriver.List")[1]["Volumes"] == [{"Name": "v1", "Mountpoint": str(where)}]

    assert call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="a") == (200, {"Err": ""})
    assert mounts_of(pnode) == {str(where): "v1"} and binds_at(where) == 1
    assert call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="nobody") == (200, {"Err": ""})
    assert mounts_of(pnode) == {str(where): "v1"} and binds_at(where) == 1
    assert call(pnode, "/VolumeDriver.Get", Name="v1")[1]["Volume"]["Status"]["containers"] == 1
    assert call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="b") == (200, {"Err": ""})  # b was the last
    assert mounts_of(pnode) == {} and binds_at(where) == 0
    assert call(pnode, "/VolumeDriver.Get", Name="v1")[1]["Volume"]["Status"]["containers"] == 0
    assert not where.exists()
    assert call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="b") == (200, {"Err": ""})
    assert call(pnode, "/VolumeDriver.Path", Name="v1") == (200, {"Mountpoint": "", "Err": ""})

    assert call(pnode, "/VolumeDriver.Mount", Name="v1", ID="c") == mounted
    assert binds_made(pnode, "v1", where) == 2 and binds_at(where) == 1
    assert mounts_of(pnode) == {str(where): "v1"}
    pnode.stop()
    assert holders_in_store(pnode) == {"v1": {"c"}}


def test_remove_drops_ids_docker_no_longer_uses(pnode: Node) -> None:
    """Docker removes a volume only when no container refers to it: IDs still held are stale."""
    assert call(pnode, "/VolumeDriver.Create", Name="v1")[0] == 200
    where = Path(call(pnode, "/VolumeDriver.Mount", Name="v1", ID="a")[1]["Mountpoint"])
    assert binds_at(where) == 1
    assert call(pnode, "/VolumeDriver.Remove", Name="v1") == (200, {"Err": ""})
    assert pnode.cli("volume", "ls", json_out=True) == []
    assert mounts_of(pnode) == {} and binds_at(where) == 0 and not where.exists()
    pnode.stop()
    assert holders_in_store(pnode) == {}


def test_remove_refused_while_mounted_elsewhere(pnode: Node, short_tmp: Path) -> None:
    pnode.cli("volume", "create", "v1")
    srv = short_tmp / "srv-v1"
    srv.mkdir()
    pnode.cli("mount", "v1", str(srv))   # `cfs mount v1 /srv/v1`
    status, reply = call(pnode, "/VolumeDriver.Remove", Name="v1")
    assert status == 500 and reply["Err"] == f"volume 'v1' is mounted at {srv.resolve()}; unmount it first"
    assert [v["name"] for v in pnode.cli("volume", "ls", json_out=True)] == ["v1"]
    assert mounts_of(pnode) == {str(srv.resolve()): "v1"} and binds_at(srv.resolve()) == 1


# --- restarts -----------------------------------------------------------------------------

def test_holders_survive_a_restart(pnode: Node) -> None:
    """The IDs are in the store; at the next start the node binds its recorded mounts
    again and the plugin finds them in place: it binds nothing itself."""
    for name in ("v1", "v2"):
        assert call(pnode, "/VolumeDriver.Create", Name=name)[0] == 200
    for name, mount_id in [("v1", "a"), ("v1", "b"), ("v2", "c")]:
        assert call(pnode, "/VolumeDriver.Mount", Name=name, ID=mount_id)[0] == 200
    root = (pnode.data_dir / "plugin-mounts").resolve()
    assert pnode.stop() == 0
    assert holders_in_store(pnode) == {"v1": {"a", "b"}, "v2": {"c"}}

    since = log_size(pnode)
    pnode.start()
    restarted = log_since(pnode, since)
    for name in ("v1", "v2"):
        assert f"remounted volume {name} at {root / name}" in restarted   # the node's restore
        assert binds_made(pnode, name, root / name, since) == 0           # and nothing more
        assert binds_at(root / name) == 1
    assert "could not bind" not in restarted
    assert call(pnode, "/VolumeDriver.Get", Name="v1")[1]["Volume"]["Status"]["containers"] == 2
    assert call(pnode, "/VolumeDriver.Get", Name="v2")[1]["Volume"]["Status"]["containers"] == 1
    call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="a")
    assert str(root / "v1") in mounts_of(pnode) and binds_at(root / "v1") == 1
    call(pnode, "/VolumeDriver.Unmount", Name="v1", ID="b")
    assert mounts_of(pnode) == {str(root / "v2"): "v2"}
    assert binds_at(root / "v1") == 0 and binds_at(root / "v2") == 1


def test_restore_repairs_what_a_crash_left(pnode: Node, short_tmp: Path) -> None:
    """At start the plugin makes binds agree with its holder records, whatever a crash
    left: a held volume whose bind did not come back is bound, a bind under the plugin's
    root that nobody holds goes, records of a volume that is gone are dropped, and a
    ``cfs mount`` elsewhere is not the plugin's to touch.

    Each state is made with the node's own commands: ``held`` is held by ``a`` and its
    mount point is gone at the next start, so the node cannot bind it again; ``gone`` is
    held by ``b``, unbound by hand (``cfs umount``) and removed (``cfs volume rm``);
    ``unheld`` is bound at its plugin mount point by ``cfs mount``, which is what a crash
    between the plugin's bind and its record of the ID leaves, and at ``srv-unheld``.
    """
    for name in ("held", "unheld", "gone"):
        assert call(pnode, "/VolumeDriver.Create", Name=name)[0] == 200
    root = (pnode.data_dir / "plugin-mounts").resolve()
    assert call(pnode, "/VolumeDriver.Mount", Name="held", ID="a")[0] == 200
    (root / "held" / "kept").write_bytes(b"still here")
    assert call(pnode, "/VolumeDriver.Mount", Name="gone", ID="b")[0] == 200
    pnode.cli("umount", str(root / "gone"))
    pnode.cli("volume", "rm", "gone")
    (root / "unheld").mkdir()
    pnode.cli("mount", "unheld", str(root / "unheld"))
    srv = (short_tmp / "srv-unheld").resolve()
    srv.mkdir()
    pnode.cli("mount", "unheld", str(srv))
    assert mounts_of(pnode) == {str(root / "held"): "held", str(root / "unheld"): "unheld", str(srv): "unheld"}

    pnode.kill()
    # held's mount point goes while the node is down (its dead bind detached first)
    subprocess.run(["umount", "-l", str(root / "held")], check=True)
    (root / "held").rmdir()
    since = log_size(pnode)
    pnode.start()
    restarted = log_since(pnode, since)
    assert f"could not remount volume held at {root / 'held'}" in restarted   # the condition is real
    assert "unbound volume unheld, which no Docker container holds" in restarted

    assert mounts_of(pnode) == {str(root / "held"): "held", str(srv): "unheld"}
    assert binds_at(root / "held") == 1 and binds_at(root / "unheld") == 0 and binds_at(srv) == 1
    assert (root / "held" / "kept").read_bytes() == b"still here"
    assert call(pnode, "/VolumeDriver.List")[1]["Volumes"] == [
        {"Name": "held", "Mountpoint": str(root / "held")}, {"Name": "unheld", "Mountpoint": ""}]
    assert call(pnode, "/VolumeDriver.Get", Name="gone") == (500, {"Err": "no volume named 'gone'"})
    assert pnode.stop() == 0
    assert holders_in_store(pnode) == {"held": {"a"}}


# --- malformed requests and HTTP ------------------------------------------------------------

def test_malformed_requests_leave_mount_working(pnode: Node) -> None:
    """Every request of the table gets its status and message, and after each a Mount
    still binds (one bind, the same mount point) and no volume came or went."""
    assert call(pnode, "/VolumeDriver.Create", Name="v1")[0] == 200
    where = (pnode.data_dir / "plugin-mounts" / "v1").resolve()
    for endpoint, body, status, message in MALFORMED_REQUESTS:
        case = f"{endpoint} {body!r}"
        got_status, reply = plugin_call(pnode.base / "p.sock", endpoint, body)
        assert got_status == status and message in reply["Err"], (case, reply)
        assert set(reply) == {"Err"}, case
        assert call(pnode, "/VolumeDriver.Mount", Name="v1", ID="a") == \
            (200, {"Mountpoint": str(where), "Err": ""}), case
        assert [v["Name"] for v in call(pnode, "/VolumeDriver.List")[1]["Volumes"]] == ["v1"], case
        assert binds_at(where) == 1 and mounts_of(pnode) == {str(where): "v1"}, case
    assert binds_made(pnode, "v1", where) == 1
    pnode.stop()
    assert holders_in_store(pnode) == {"v1": {"a"}}


def test_http_keep_alive_and_chunked(pnode: Node) -> None:
    """Four requests on one connection, one of them chunked: each is answered in turn,
    and the Mount among them binds."""
    assert call(pnode, "/VolumeDriver.Create", Name="v1")[0] == 200
    sock = pnode.base / "p.sock"
    mount = json.dumps({"Name": "v1", "ID": "a"}).encode()
    chunked = (b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: plugin\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"Nam\r\n8\r\ne\": \"v1\"\r\n1\r\n}\r\n0\r\n\r\n")
    data = (http_request("/Plugin.Activate", b"") + http_request("/VolumeDriver.Mount", mount)
            + chunked + http_request("/VolumeDriver.List", b"{}", extra="Connection: close\r\n"))
    replies = parse_responses(raw_exchange(sock, data))
    assert [r[0] for r in replies] == [200, 200, 200, 200]
    assert all(r[1]["content-type"] == "application/vnd.docker.plugins.v1+json" for r in replies)
    assert replies[0][2] == {"Implements": ["VolumeDriver"]}
    where = (pnode.data_dir / "plugin-mounts" / "v1").resolve()
    assert replies[1][2] == {"Mountpoint": str(where), "Err": ""}
    assert replies[2][2]["Volume"]["Name"] == "v1" and replies[2][2]["Volume"]["Status"]["containers"] == 1
    assert replies[3][2]["Volumes"] == [{"Name": "v1", "Mountpoint": str(where)}]
    assert os.stat(sock).st_mode & 0o777 == 0o600
    assert mounts_of(pnode) == {str(where): "v1"} and binds_at(where) == 1
