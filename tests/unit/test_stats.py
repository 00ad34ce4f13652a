"""``cfs stats``' arithmetic and the Prometheus exposition of the node's counters, without a daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from cfs.errors import CfsError
from cfs.fuse.counters import LATENCY_BOUNDS_NS, FuseCounters, OpStats
from mountd.metrics import families
from tools import stats


def sample(at: float, *, ops: dict[str, tuple[int, float]] | None = None, read: int = 0, written: int = 0,
           hits: int = 0, misses: int = 0, dedup: int = 0, shipped: int = 0,
           writing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A sample shaped as ``NodeMetrics.sample`` makes it."""
    return {
        "monotonic": at,
        "fuse": {"ops": {n: {"count": c, "errors": 0, "seconds": s} for n, (c, s) in (ops or {}).items()},
                 "read_bytes": read, "written_bytes": written},
        "store": {"disk_bytes": 1000, "disk_free_bytes": 600, "free_bytes": 650, "reserve_bytes": 10,
                  "map_bytes": 4096, "used_pages_bytes": 2048, "free_pages_bytes": 50, "commits": 3,
                  "dedup_bytes": dedup, "cache_hits": hits, "cache_misses": misses, "cache_bytes": 7,
                  "cache_limit_bytes": 64},
        "volumes": {"v": {"used_bytes": 4096, "size_bytes": 0}},
        "writing": writing or {},
        "peers": {"sent_bytes": {"in": 0, "out": 0}, "received_bytes": {"in": 0, "out": 0},
                  "connections": {"in": 1, "out": 2}, "rejected": 0, "shipped_bytes": shipped, "copies": 0,
                  "copied_bytes": shipped // 2},
        "heal": {"rounds": 0, "shipped_records": 0},
        "transfers": [{"kind": "heal", "direction": "out", "bytes_done": 10, "bytes_total": 30},
                      {"kind": "heal", "direction": "out", "bytes_done": 5, "bytes_total": None}],
    }


def test_rates_between_two_samples() -> None:
    mib = 1 << 20
    before = sample(10.0, ops={"read": (100, 0.5), "getattr": (50, 0.1)}, read=mib, hits=10, misses=10)
    after = sample(12.0, ops={"read": (300, 1.5), "getattr": (50, 0.1), "write": (100, 1.0)},
                   read=5 * mib, written=8 * mib, hits=40, misses=20, dedup=2 * mib, shipped=4 * mib,
                   writing={"v": {"epoch": 3, "degraded": True,
                                  "replicas": {"aa": {"records": 7, "seconds": 1.5},
                                               "bb": {"records": 2, "seconds": 4.0}}}})
    r = stats.rates(before, after)
    assert r["seconds"] == 2.0
    assert r["ops_per_second"] == 150.0  # 300 requests in 2 s; getattr did not move
    assert r["ops"] == {"read": 100.0, "write": 50.0}
    assert r["latency_ms"] == pytest.approx(2000 / 300, abs=1e-3)  # 2 s of handler time over 300 requests
    assert r["read_mib_per_second"] == 2.0
    assert r["write_mib_per_second"] == 4.0
    assert r["cache_hit_ratio"] == 0.75  # 30 hits of 40 reads
    assert r["dedup_mib_per_second"] == 1.0
    assert r["shipped_mib_per_second"] == 3.0  # records and chunks, and half as much again as copies
    assert (r["replication_lag_records"], r["replication_lag_seconds"]) == (7, 4.0)
    assert r["degraded"] == ["v"]
    row = stats.line(r)
    assert len(row.split("  ")[0]) <= len(stats.header())
    assert row.split() == ["150", "6.667", "2.0", "4.0", "75%", "1.0", "3.0", "7", "4.0", "v"]


def test_rates_when_idle_and_out_of_order() -> None:
    idle = stats.rates(sample(1.0), sample(2.0))
    assert idle["ops_per_second"] == 0 and idle["latency_ms"] is None and idle["cache_hit_ratio"] is None
    assert stats.line(idle).split() == ["0", "-", "0.0", "0.0", "-", "0.0", "0.0", "0", "0.0", "-"]
    with pytest.raises(ValueError):
        stats.rates(sample(2.0), sample(2.0))


def test_op_stats_buckets() -> None:
    s = OpStats()
    for ns in (1, LATENCY_BOUNDS_NS[0], LATENCY_BOUNDS_NS[0] + 1, LATENCY_BOUNDS_NS[-1] + 1):
        s.observe(ns)
    cumulative = s.cumulative()
    assert cumulative[0] == 2  # at most the first bound: the bound itself is in
    assert cumulative[1] == 3
    assert cumulative[-2] == 3 and cumulative[-1] == 4  # the last one only in +Inf
    assert s.count == 4 and s.total_ns == 1 + 2 * LATENCY_BOUNDS_NS[0] + 1 + LATENCY_BOUNDS_NS[-1] + 1


class _Fixed(Collector):
    def __init__(self, data: dict[str, Any], fuse: FuseCounters) -> None:
        self.data, self.fuse = data, fuse

    def collect(self) -> Iterator[Metric]:
        return families(self.data, self.fuse)


def test_exposition_parses_with_conventional_names() -> None:
    fuse = FuseCounters(read_bytes=123, written_bytes=456)
    fuse.op("write").observe(30_000)  # 30 µs
    fuse.op("write").observe(2_000_000)
    fuse.op("lookup").errors += 1
    fuse.op("lookup").observe(5_000)
    data = sample(1.0, read=123, dedup=99, writing={"v": {"epoch": 4, "degraded": False,
                                                "replicas": {"aa": {"records": 3, "seconds": 0.5}}}})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(data, fuse))
    text = generate_latest(registry).decode()
    parsed = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    assert parsed[("cfs_fuse_requests_total", (("op", "write"),))] == 2
    assert parsed[("cfs_fuse_request_errors_total", (("op", "lookup"),))] == 1
    assert parsed[("cfs_fuse_request_duration_seconds_bucket", (("le", "5e-05"), ("op", "write")))] == 1
    assert parsed[("cfs_fuse_request_duration_seconds_bucket", (("le", "+Inf"), ("op", "write")))] == 2
    assert parsed[("cfs_fuse_request_duration_seconds_sum", (("op", "write"),))] == pytest.approx(0.00203)
    assert parsed[("cfs_fuse_read_bytes_total", ())] == 123
    assert parsed[("cfs_dedup_saved_bytes_total", ())] == 99
    assert parsed[("cfs_volume_used_bytes", (("volume", "v"),))] == 4096
    assert parsed[("cfs_volume_lease_epoch", (("volume", "v"),))] == 4
    assert parsed[("cfs_replication_lag_records", (("replica", "aa"), ("volume", "v")))] == 3
    assert parsed[("cfs_peer_connections", (("direction", "out"),))] == 2
    heal = (("direction", "out"), ("kind", "heal"))
    assert parsed[("cfs_transfers_running", heal)] == 2
    assert parsed[("cfs_transfer_done_bytes", heal)] == 15
    assert parsed[("cfs_transfer_remaining_bytes", heal)] == 20  # the one whose total is known
    assert all(name.startswith("cfs_") for name, _labels in parsed)


@pytest.mark.parametrize("interval,count,words", [(0, 1, "--interval"), (-1, None, "--interval"),
                                                  (1, 0, "--count")])
def test_stats_refuses_bad_arguments_before_asking(interval: float, count: int | None, words: str) -> None:
    with pytest.raises(CfsError, match=words):
        stats.run(Path("/nonexistent/mountd.sock"), interval, count, as_json=False)
