"""cfs volumes through a real Docker engine: the docker command line a person would type.

Every container runs with ``--network none``. Data goes in and out byte for byte: random
bytes from the host are copied in by one container and read back on stdout by another.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.docker.conftest import Engine, Plugin

MiB = 1 << 20


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """A host directory of random files, bound read-only into writers at /in."""
    (tmp_path / "blob").write_bytes(os.urandom(8 * MiB + 123))
    (tmp_path / "small").write_bytes(os.urandom(1000))
    return tmp_path


def test_write_remove_read_back_list_inspect_rm(engine: Engine, plugin: Plugin, inbox: Path) -> None:
    assert engine.out("volume", "create", "-d", plugin.name, "v1") == "v1"
    engine.run(["-v", "v1:/data", "-v", f"{inbox}:/in:ro"], "sh", "-c",
               "mkdir -p /data/dir && cp /in/blob /data/dir/blob && cp /in/small /data/small "
               "&& echo hello > /data/hello && sync")
    assert plugin.binds("v1") == 0, "the writer is gone, and so is the volume's bind"

    assert engine.run(["-v", "v1:/data"], "cat", "/data/dir/blob").stdout == (inbox / "blob").read_bytes()
    assert engine.run(["-v", "v1:/data:ro"], "cat", "/data/small").stdout == (inbox / "small").read_bytes()
    assert engine.run(["-v", "v1:/data"], "cat", "/data/hello").stdout == b"hello\n"
    assert [v["name"] for v in plugin.node.cli("volume", "ls", json_out=True)] == ["v1"]

    listed = engine.out("volume", "ls", "--format", "{{.Driver}} {{.Name}}").splitlines()
    assert f"{plugin.name} v1" in listed
    [inspected] = json.loads(engine.out("volume", "inspect", "v1"))
    assert inspected["Name"] == "v1" and inspected["Driver"] == plugin.name
    assert inspected["Scope"] == "global"
    assert inspected["Status"]["block_size"] == 65536 and inspected["Status"]["containers"] == 0

    before = plugin.node.cli("fsck", json_out=True)["counts"]
    assert engine.out("volume", "rm", "v1") == "v1"
    assert plugin.node.cli("volume", "ls", json_out=True) == []
    assert "v1" not in engine.out("volume", "ls", "--format", "{{.Name}}").split()
    after = plugin.node.cli("fsck", json_out=True)  # clean, or the cli call fails
    assert before["chunks"] - after["counts"]["chunks"] >= 8 * MiB // 65536, "the volume's chunks are gone"
    assert before["bytes_verified"] - after["counts"]["bytes_verified"] >= 8 * MiB


def test_two_containers_use_the_volume_at_once(engine: Engine, plugin: Plugin) -> None:
    engine.out("volume", "create", "-d", plugin.name, "v2")
    holder = engine.out("run", "-d", "--network", "none", "-v", "v2:/data", "cfs-test/busybox:1",
                        "sh", "-c", "echo first > /data/first && sleep 300")
    try:
        _wait_for(lambda: engine.docker("exec", holder, "test", "-f", "/data/first", check=False).returncode == 0)
        out = engine.run(["-v", "v2:/data"], "sh", "-c", "cat /data/first && echo second > /data/second")
        assert out.stdout == b"first\n"
        assert engine.out("exec", holder, "cat", "/data/second") == "second"
        assert plugin.binds("v2") == 1
        [inspected] = json.loads(engine.out("volume", "inspect", "v2"))
        assert inspected["Status"]["containers"] == 1
        assert inspected["Mountpoint"] == str(plugin.mountpoint("v2"))
        refused = engine.docker("volume", "rm", "v2", check=False)
        assert refused.returncode != 0 and b"in use" in refused.stderr
    finally:
        engine.docker("rm", "-f", holder)
    assert plugin.binds("v2") == 0
    engine.out("volume", "rm", "v2")


def test_unknown_option_fails_with_the_plugins_message(engine: Engine, plugin: Plugin) -> None:
    done = engine.docker("volume", "create", "-d", plugin.name, "-o", "colour=blue", "v3", check=False)
    assert done.returncode != 0
    assert (b"unknown volume option(s): colour (known: block_size, durability, from, gid, mode, replicas, size, uid)"
            in done.stderr)
    done = engine.docker("volume", "create", "-d", plugin.name, "-o", "size=lots", "v3", check=False)
    assert done.returncode != 0 and b"option size='lots' is not a size like 10G" in done.stderr
    done = engine.docker("volume", "create", "-d", plugin.name, "-o", "replicas=2", "v3", check=False)
    assert done.returncode != 0 and b"replicas above 1 need a cluster" in done.stderr
    assert plugin.node.cli("volume", "ls", json_out=True) == []

    engine.out("volume", "create", "-d", plugin.name, "-o", "size=64M", "-o", "block_size=4096",
               "-o", "uid=65534", "-o", "mode=700", "v3")
    volume = plugin.node.cli("volume", "inspect", "v3", json_out=True)
    assert volume["block_size"] == 4096 and volume["options"]["size"] == str(64 * MiB)
    out = engine.run(["-v", "v3:/data", "--user", "65534"], "sh", "-c", "echo mine > /data/f && stat -c '%u %a' /data")
    assert out.stdout == b"65534 700\n"
    full = engine.run(["-v", "v3:/data", "--user", "65534"], "sh", "-c",
                      "dd if=/dev/urandom of=/data/big bs=1048576 count=80", check=False)
    assert full.returncode != 0 and b"No space left on device" in full.stderr  # size=64M is enforced
    status = json.loads(engine.out("volume", "inspect", "--format", "{{json .Status}}", "v3"))
    assert status["size_bytes"] == 64 * MiB and 63 * MiB < status["used_bytes"] <= 64 * MiB
    engine.out("volume", "rm", "v3")


def test_a_volume_made_by_cfs_is_a_docker_volume(engine: Engine, plugin: Plugin) -> None:
    plugin.node.cli("volume", "create", "from-cfs")
    out = engine.run(["--mount", f"type=volume,source=from-cfs,target=/data,volume-driver={plugin.name}"],
                     "sh", "-c", "echo via docker > /data/f && cat /data/f")
    assert out.stdout == b"via docker\n"
    assert f"{plugin.name} from-cfs" in engine.out("volume", "ls", "--format", "{{.Driver}} {{.Name}}").splitlines()
    engine.out("volume", "rm", "from-cfs")
    assert plugin.node.cli("volume", "ls", json_out=True) == []


def test_fsynced_data_survives_kill9_of_the_node(engine: Engine, plugin: Plugin, inbox: Path) -> None:
    engine.out("volume", "create", "-d", plugin.name, "v5")
    writer = engine.out("run", "-d", "--network", "none", "-v", "v5:/data", "-v", f"{inbox}:/in:ro",
                        "cfs-test/busybox:1", "sh", "-c",
                        "dd if=/in/blob of=/data/blob bs=65536 conv=fsync 2>/dev/null && echo synced && sleep 300")
    try:
        _wait_for(lambda: b"synced" in engine.docker("logs", writer).stdout, timeout=60)
        plugin.node.kill()
        plugin.node.start()
        assert plugin.binds("v5") == 1, "the writer still holds the volume after the restart"
    finally:
        engine.docker("rm", "-f", writer)
    assert plugin.binds("v5") == 0
    data = engine.run(["-v", "v5:/data"], "cat", "/data/blob").stdout
    assert hashlib.sha256(data).digest() == hashlib.sha256((inbox / "blob").read_bytes()).digest()
    engine.out("volume", "rm", "v5")


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.1)
