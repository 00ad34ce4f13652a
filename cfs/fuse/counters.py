"""What the FUSE adapter counts: requests per operation, their latency, bytes read and written.

The daemon makes one ``FuseCounters`` and hands it to the adapter (the only writer,
``cfs.fuse.adapter``) and to its metrics (``mountd.metrics``, which reads it at scrape
time and for ``cfs stats``). Plain integers, no locks: both run on the trio thread.

Cost on the hot path, which is why it is this shape: one ``perf_counter_ns`` pair, a dict
lookup, a ``bisect`` into a tuple of bucket bounds and two integer additions per request
(about 0.5 µs on the 2-core test machine, where one ``perf_counter_ns`` costs 0.12 µs);
no labels resolved, no locks taken, no objects made (prometheus_client's own
``Histogram.labels(op).observe`` takes a lock and looks up the label tuple on every call,
several times this). The histogram is turned into Prometheus' cumulative form only when
someone asks.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

LATENCY_BOUNDS_NS: tuple[int, ...] = tuple(int(us * 1000) for us in (
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 10_000_000))
"""Upper bounds of the latency buckets (10 µs to 10 s); a last bucket holds the rest (+Inf).
A cached getattr takes ~20 µs, a 128 KiB write ~100 µs, an fsync in a cluster milliseconds."""


@dataclass(slots=True)
class OpStats:
    """One operation's requests: how many fell in each latency bucket, their total time, and
    how many failed. Their number is the buckets' sum, not a counter of its own: one
    addition less per request."""

    errors: int = 0
    """Requests answered with an error (any errno: ENOENT from a lookup too)."""
    total_ns: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS_NS) + 1))
    """Not cumulative: ``buckets[i]`` counts requests at most ``LATENCY_BOUNDS_NS[i]``
    and over the bound before; the last one those over every bound."""

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def observe(self, elapsed_ns: int) -> None:
        """One request (``cfs.fuse.adapter`` does the same inline)."""
        self.total_ns += elapsed_ns
        self.buckets[bisect_left(LATENCY_BOUNDS_NS, elapsed_ns)] += 1

    def cumulative(self) -> list[int]:
        """Requests at most each bound, and all of them (+Inf): Prometheus' ``_bucket`` series."""
        out, running = [], 0
        for n in self.buckets:
            running += n
            out.append(running)
        return out


@dataclass(slots=True)
class FuseCounters:
    """Counters of the node's FUSE session since the daemon started (see the module doc)."""

    ops: dict[str, OpStats] = field(default_factory=dict)
    read_bytes: int = 0
    written_bytes: int = 0

    def op(self, name: str) -> OpStats:
        """The stats of operation ``name``, made on its first request."""
        stats = self.ops.get(name)
        if stats is None:
            stats = self.ops[name] = OpStats()
        return stats
