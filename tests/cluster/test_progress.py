"""Progress of a whole-volume copy, seen from both ends, while a node drains.

Two real node daemons and an etcd on loopback (``tests.cluster.cluster``). Node a holds
the only copy of a volume of many small blocks; ``cfs node drain --wait`` on a makes its
healer copy the volume whole to b. Meanwhile ``cfs status --json`` on b shows the copy
coming in with bytes moving, then among the transfers that ended, done, with the bytes
a's own entry counted against the total it knew up front (the volume's bytes in use);
the drain prints progress lines while it waits and a last one when nothing needs a.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import Cluster, Member, fsync_dir, wait_for, write_file
from tests.node import CFS, stop_process

pytestmark = pytest.mark.mount

VOLUME = "moving"
FILES = 12
FILE_BYTES = 4 << 20
"""48 MiB of 4 KiB blocks: 12,288 block rows and six 8 MiB parts, a few seconds of copy."""


@pytest.fixture
def pair(cluster_base: Path) -> Iterator[Cluster]:
    with Cluster(cluster_base) as running:
        running.start(2)
        yield running


def transfers(node: Member, key: str = "transfers") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = node.status()["cluster"][key]
    return [t for t in found if t["volume"] == VOLUME]


def test_a_drain_shows_the_copy_it_causes_on_both_nodes(pair: Cluster) -> None:
    a, b = pair["a"], pair["b"]
    a.cli("volume", "create", VOLUME, "-o", "replicas=1", "-o", "block_size=4096")   # the only copy: a's
    mnt = a.mount_dir(VOLUME)
    a.cli("mount", VOLUME, str(mnt))
    for i in range(FILES):
        write_file(mnt, f"f{i}", seed=i, size=FILE_BYTES)
    fsync_dir(mnt)
    a.cli("umount", str(mnt))
    used = a.inspect(VOLUME)["used_bytes"]
    assert used >= FILES * FILE_BYTES

    drain = subprocess.Popen([CFS, "--data-dir", str(a.data_dir), "--json", "node", "drain", "--wait", "60"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        moving = wait_for("b to show the copy coming in",
                          lambda: next((t for t in transfers(b) if t["bytes_done"] > 0), None),
                          timeout=30, interval=0.05)
        assert (moving["direction"], moving["kind"], moving["whole"], moving["state"]) == (
            "in", "incoming", True, "running")
        assert moving["peer"] == a.node_id and moving["bytes_total"] is None and moving["eta_seconds"] is None
        assert 0 < moving["bytes_done"] < used and moving["records_done"] > 0
        ended = wait_for("the copy to end on b", lambda: transfers(b, "transfers_ended"), timeout=30)
        out, err = drain.communicate(timeout=60)
    finally:
        stop_process(drain, 5)
    assert drain.returncode == 0, err
    [received] = ended
    assert received["state"] == "done" and received["bytes_done"] == used and received["percent"] == 100.0
    assert transfers(b) == []
    [sent] = transfers(a, "transfers_ended")
    assert (sent["direction"], sent["kind"], sent["peer"], sent["state"]) == ("out", "drain", b.node_id, "done")
    assert sent["bytes_done"] == sent["bytes_total"] == used
    assert sent["records_done"] == received["records_done"]

    lines = err.splitlines()
    assert any(line.startswith("drain: 0 of 1 volumes copied elsewhere; waiting for moving") for line in lines), err
    assert lines[-1] == "drain: 1 of 1 volumes copied elsewhere; no volume needs this node any more", err
    # the copy a sent, once it ended (whenever the drain's polls fell), with its numbers
    assert f"drain:   moving  drain → {b.node_id[:8]}  48.0 MiB of 48.0 MiB (100%), " \
           f"{sent['records_done']} of {sent['records_done']} rows, done in" in err, err
    assert '"still_here": []' in out
