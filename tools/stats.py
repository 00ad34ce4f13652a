"""``cfs stats``: a live view of the node, one line per interval, like ``vmstat`` or ``juicefs stats``.

Each line is the difference of two samples of the daemon's counters (the ``stats``
control operation, ``mountd.metrics.NodeMetrics.sample``: the same numbers its
Prometheus metrics show), divided by the time between them: requests per second, their
mean latency, MiB/s read and written through FUSE, the chunk cache's hit ratio, MiB/s
deduplicated and shipped to replicas (records, chunks, whole copies); and, as they are
now, the worst replica lag of the volumes this node writes. It needs no ``--metrics``.

``rates`` is the arithmetic, apart from the socket and the clock, so it is tested alone.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from cfs.errors import CfsError
from tools.client import call

MiB = 1 << 20
HEADER_EVERY = 20
"""Lines between repeats of the column header (as vmstat does), so one is always on screen."""


def rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What happened between two samples, per second; the replication lag as of ``after``."""
    seconds = after["monotonic"] - before["monotonic"]
    if seconds <= 0:
        raise ValueError("the samples are not in time order")
    old_ops = before["fuse"]["ops"]
    per_op: dict[str, float] = {}
    count = 0
    busy = 0.0
    for name, now in after["fuse"]["ops"].items():
        was = old_ops.get(name, {"count": 0, "seconds": 0.0})
        delta = now["count"] - was["count"]
        if delta:
            per_op[name] = round(delta / seconds, 1)
        count += delta
        busy += now["seconds"] - was["seconds"]

    def per_second(new: float, old: float, unit: float = 1) -> float:
        return round((new - old) / seconds / unit, 3)

    store, old_store = after["store"], before["store"]
    hits = store["cache_hits"] - old_store["cache_hits"]
    misses = store["cache_misses"] - old_store["cache_misses"]
    lags = [lag for volume in after["writing"].values() for lag in volume["replicas"].values()]
    return {
        "seconds": round(seconds, 3),
        "ops_per_second": round(count / seconds, 1),
        "ops": per_op,
        "latency_ms": round(busy / count * 1000, 3) if count else None,
        "read_mib_per_second": per_second(after["fuse"]["read_bytes"], before["fuse"]["read_bytes"], MiB),
        "write_mib_per_second": per_second(after["fuse"]["written_bytes"], before["fuse"]["written_bytes"], MiB),
        "cache_hit_ratio": round(hits / (hits + misses), 3) if hits + misses else None,
        "dedup_mib_per_second": per_second(store["dedup_bytes"], old_store["dedup_bytes"], MiB),
        "shipped_mib_per_second": per_second(after["peers"]["shipped_bytes"] + after["peers"]["copied_bytes"],
                                             before["peers"]["shipped_bytes"] + before["peers"]["copied_bytes"],
                                             MiB),
        "replication_lag_records": max((lag["records"] for lag in lags), default=0),
        "replication_lag_seconds": max((lag["seconds"] for lag in lags), default=0.0),
        "degraded": sorted(name for name, volume in after["writing"].items() if volume["degraded"]),
    }


COLUMNS = (("ops/s", 8), ("lat ms", 9), ("read MiB/s", 12), ("write MiB/s", 13), ("cache hit", 11),
           ("dedup MiB/s", 13), ("ship MiB/s", 12), ("lag rec", 9), ("lag s", 8))


def header() -> str:
    return "".join(name.rjust(width) for name, width in COLUMNS) + "  degraded"


def line(r: dict[str, Any]) -> str:
    """One sample's row under ``header``."""
    cells = (f"{r['ops_per_second']:.0f}", "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}",
             f"{r['read_mib_per_second']:.1f}", f"{r['write_mib_per_second']:.1f}",
             "-" if r["cache_hit_ratio"] is None else f"{100 * r['cache_hit_ratio']:.0f}%",
             f"{r['dedup_mib_per_second']:.1f}", f"{r['shipped_mib_per_second']:.1f}",
             str(r["replication_lag_records"]), f"{r['replication_lag_seconds']:.1f}")
    row = "".join(cell.rjust(width) for cell, (_name, width) in zip(cells, COLUMNS))
    return row + "  " + (",".join(r["degraded"]) or "-")


def run(socket_path: Path, interval: float, count: int | None, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Print ``count`` samples (None: until interrupted), ``interval`` seconds apart; with
    ``as_json`` one JSON object per line (JSON Lines), as scripts read a stream."""
    if interval <= 0:
        raise CfsError("--interval must be positive")
    if count is not None and count < 1:
        raise CfsError("--count must be at least 1")
    before = call(socket_path, "stats")
    printed = 0
    try:
        while count is None or printed < count:
            time.sleep(interval)
            after = call(socket_path, "stats")
            r = rates(before, after)
            before = after
            if as_json:
                print(json.dumps(r, sort_keys=True), file=out)
            else:
                if printed % HEADER_EVERY == 0:
                    print(header(), file=out)
                print(line(r), file=out)
            out.flush()
            printed += 1
    except BrokenPipeError:  # cfs stats | head: the reader is gone
        return 0
    return 0
