"""Replication in the node's Prometheus metrics, on two real daemons: bytes shipped and
received, peer connections, replica lag and degraded volumes, rejected connections."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster, Member, create_volume, mount, wait_for, write_synced
from tests.mount.test_metrics import Samples, scrape, value

pytestmark = pytest.mark.mount


def metrics(node: Member) -> Samples:
    assert node.metrics_port is not None
    return scrape(node.metrics_port)


def test_replication_metrics_move(cluster_base: Path) -> None:
    # A long lease: the replica is frozen for a replication timeout and must stay a member.
    with Cluster(cluster_base, metrics=True, lease_ttl=30) as cluster:
        cluster.start(2)
        a, r = cluster["a"], cluster["b"]
        create_volume(a)
        mnt = mount(a)
        before_a, before_r = metrics(a), metrics(r)

        write_synced(mnt / "f", os.urandom(1 << 20))  # fsync: on r once it returns
        after_a, after_r = metrics(a), metrics(r)
        shipped = value(after_a, "cfs_peer_sent_bytes_total", direction="out") - value(
            before_a, "cfs_peer_sent_bytes_total", direction="out")
        assert shipped >= 1 << 20
        assert value(after_a, "cfs_replication_shipped_bytes_total") - value(
            before_a, "cfs_replication_shipped_bytes_total") >= 1 << 20
        assert value(after_r, "cfs_peer_received_bytes_total", direction="in") - value(
            before_r, "cfs_peer_received_bytes_total", direction="in") >= 1 << 20
        assert value(after_a, "cfs_peer_connections", direction="out") >= 1
        assert value(after_r, "cfs_peer_connections", direction="in") >= 1
        assert value(after_a, "cfs_volume_lease_epoch", volume="vol") >= 1
        assert value(after_a, "cfs_replication_lag_records", volume="vol", replica=r.node_id) == 0
        assert value(after_a, "cfs_volume_degraded", volume="vol") == 0
        assert value(after_r, "cfs_volume_used_bytes", volume="vol") >= 1 << 20  # the replica's copy

        r.freeze()
        try:
            (mnt / "g").write_bytes(b"late" * 10_000)  # its close waits out the replication timeout
            lagging = metrics(a)
        finally:
            r.resume()
        assert value(lagging, "cfs_replication_lag_records", volume="vol", replica=r.node_id) >= 1
        assert value(lagging, "cfs_replication_lag_seconds", volume="vol", replica=r.node_id) > 0
        assert value(lagging, "cfs_volume_degraded", volume="vol") == 1
        wait_for("r to catch up", lambda: (
            value(m := metrics(a), "cfs_replication_lag_records", volume="vol", replica=r.node_id) == 0
            and value(m, "cfs_volume_degraded", volume="vol") == 0), timeout=30)

        with socket.create_connection((r.host, r.port), timeout=10) as raw:
            raw.sendall(b"\xff" * 64)
            raw.recv(100)  # the node hangs up
        wait_for("r to count the rejected connection",
                 lambda: value(metrics(r), "cfs_peer_rejected_connections_total") >= 1, timeout=10)
