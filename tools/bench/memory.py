"""The memory job: one large file written while the daemon's memory is watched.

Issue #4 asks that the daemon's RSS stay under 512 MiB while it writes a 10 GiB file,
and that nothing grows without bound over a long run. ``bigwrite`` writes
``plan.big_size`` (10 GiB in the full plan) of unique data in 1 MiB writes, fsyncs it,
and samples the target's daemons once a second: VmRSS, and its two parts, RssAnon (the
daemon's own memory) and RssFile (pages of mapped files it touched: for cfs, LMDB's
map, which is page cache, but counted in VmRSS and charged to a memory cgroup).

It is not part of a default run (minutes per target): ``cfs bench --only bigwrite``.
The file is deleted afterwards, so the space comes back before the next job.
"""

from __future__ import annotations

import statistics
import threading
from typing import Any

from tools.bench import procs
from tools.bench.context import Context, MiB
from tools.bench.report import Row
from tools.bench.scenarios import write_unique

SAMPLE_SECONDS = 1.0
RSS_LIMIT = 512 * MiB
"""The issue's bound on the daemon's RSS while it writes 10 GiB."""
BIG_FIRST = 1 << 40
"""First ``unique_mib`` index of the big file: none of it matches another job's data."""
KINDS = ("VmRSS", "RssAnon", "RssFile")


class Watch:
    """Samples the summed VmRSS, RssAnon and RssFile of ``pids`` every ``interval`` seconds,
    from a thread, for the duration of a ``with`` block."""

    def __init__(self, pids: list[int], interval: float = SAMPLE_SECONDS) -> None:
        self.pids = pids
        self.interval = interval
        self.samples: list[dict[str, int]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-memory-watch", daemon=True)

    def __enter__(self) -> "Watch":
        if self.pids:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while True:
            figures = [f for f in map(procs.resident, self.pids) if f is not None]
            if figures:
                self.samples.append({k: sum(f.get(k, 0) for f in figures) for k in KINDS})
            if self._done.wait(self.interval):
                return


def summarize(samples: list[dict[str, int]]) -> dict[str, Any]:
    """Median and peak of each kind in MiB, how many samples had VmRSS over 512 MiB, and
    growth: the median of the last third of the samples against the first third, in per
    cent (100: flat). Nothing for a target without a daemon."""
    if not samples:
        return {}
    out: dict[str, Any] = {"samples": len(samples),
                           "samples_over_512_mib": sum(s["VmRSS"] > RSS_LIMIT for s in samples)}
    for kind in KINDS:
        values = [s[kind] for s in samples]
        out[f"{kind}_median_mib"] = round(statistics.median(values) / MiB, 1)
        out[f"{kind}_max_mib"] = round(max(values) / MiB, 1)
    third = len(samples) // 3
    if third:
        for kind in ("VmRSS", "RssAnon"):
            first = statistics.median(s[kind] for s in samples[:third])
            last = statistics.median(s[kind] for s in samples[-third:])
            out[f"{kind}_growth_pct"] = round(100 * last / first, 1) if first else None
    return out


def big_write(ctx: Context) -> list[Row]:
    """Write and fsync ``plan.big_size`` bytes to one file, watching the daemon's memory."""
    mib = ctx.plan.big_size // MiB
    d = ctx.work("bigwrite")
    path = d / "big.bin"
    with Watch(ctx.target.pids()) as watch, ctx.probe() as p:
        write_unique(path, mib, BIG_FIRST)
    path.unlink()
    ctx.target.durable(d)
    return [ctx.row("bigwrite", "MiB/s", "MiB/s", mib / p.seconds, p, mib=mib, **summarize(watch.samples))]
