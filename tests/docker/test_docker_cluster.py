"""The Docker plugin moves a volume: a container on node B uses what node A wrote.

Two cfs nodes on loopback share a real etcd; only B serves Docker (the plugin socket
dockerd reads). A writes a volume through ``cfs mount``; Docker on B runs a container
with that volume, which makes B's plugin Mount take the volume's lease, catch up from
A and serve it. What the container writes is then read back on A.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.cluster.cluster import fsync_dir, wait_for, write_secret
from tests.docker.conftest import PLUGIN_DIR, Engine
from tests.etcd import Etcd, free_port
from tests.node import Node, mounts_under


class TwoNodes:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.etcd = Etcd(base / "etcd")
        self.secret = write_secret(base / "secret", os.urandom(24).hex().encode())
        self.plugin_name = f"cfsmove{os.getpid()}"
        self.socket = PLUGIN_DIR / f"{self.plugin_name}.sock"
        self.nodes: list[Node] = []

    def start(self) -> None:
        (self.base / "etcd").mkdir()
        self.etcd.start()
        for name, plugin in (("a", ["--no-plugin"]), ("b", ["--plugin-socket", str(self.socket)])):
            (self.base / name).mkdir()
            node = Node(self.base / name, extra_args=[
                "--etcd", self.etcd.url, "--listen", f"127.0.0.1:{free_port()}", "--secret-file",
                str(self.secret), "--replication-timeout", "3", *plugin])
            self.nodes.append(node)
            node.start()
        for node in self.nodes:
            wait_for("both nodes to be up in etcd",
                     lambda node=node: [n["state"] for n in node.api("node.ls")] == ["up", "up"])

    def close(self) -> None:
        for node in self.nodes:
            node.cleanup()
        self.etcd.stop()
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def two_nodes() -> Iterator[TwoNodes]:
    base = Path(tempfile.mkdtemp(prefix="cfs-dc-", dir="/tmp"))
    base.chmod(0o755)
    nodes = TwoNodes(base)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()
        if not mounts_under(base):
            shutil.rmtree(base, ignore_errors=True)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_container_on_another_node_gets_the_volume(engine: Engine, two_nodes: TwoNodes) -> None:
    a, b = two_nodes.nodes
    a.cli("volume", "create", "moving", "-o", "replicas=2")
    mnt = two_nodes.base / "a-mnt"
    mnt.mkdir()
    a.cli("mount", "moving", str(mnt))
    blob = os.urandom(3 * (1 << 20) + 17)
    (mnt / "blob").write_bytes(blob)
    fsync_dir(mnt)
    a.cli("umount", str(mnt))

    volume = ["--mount", f"type=volume,source=moving,target=/data,volume-driver={two_nodes.plugin_name}"]
    out = engine.run(volume, "sh", "-c", "sha256sum /data/blob && echo from-b > /data/note && sync")
    assert out.stdout.decode().split()[0] == _sha(blob)

    # and back: B lets go once the container has ended (Docker's Unmount): it stops
    # writing the volume and releases its lease
    wait_for("B to let the volume go",
             lambda: "moving" not in b.api("status")["cluster"]["writing"]
             and a.api("volume.inspect", name="moving")["writer"] is None)
    a.cli("mount", "moving", str(mnt))
    assert (mnt / "note").read_bytes() == b"from-b\n"
    assert _sha((mnt / "blob").read_bytes()) == _sha(blob)
    a.cli("umount", str(mnt))
    engine.docker("volume", "rm", "moving")
