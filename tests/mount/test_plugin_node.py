"""The Docker plugin socket of a real daemon, called as Docker calls it, without Docker.

Real binds, real restarts (SIGTERM and kill -9): the mount IDs holding a volume and its
one bind survive both, and no request, however malformed, stops the daemon.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from tests.node import Node, mounts_under
from tests.plugin_client import plugin_call, raw_exchange


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
