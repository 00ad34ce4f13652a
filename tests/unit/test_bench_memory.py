"""The bench's bigwrite job: sampling a process's memory, and summing it up.

The sampler is tried on this test's own process (a real /proc, no daemon needed); the
job itself runs here on the disk target only. Its figures for cfs come from running
``cfs bench --only bigwrite`` (docs/PERFORMANCE.md), never from here.
"""

from __future__ import annotations

import os
from pathlib import Path

from tools.bench import memory, procs
from tools.bench.context import Context, Plan
from tools.bench.targets import Disk

MiB = 1 << 20


def test_resident_reads_this_process() -> None:
    figures = procs.resident(os.getpid())
    assert figures is not None and set(figures) == {"VmRSS", "RssAnon", "RssFile"}
    assert figures["VmRSS"] >= figures["RssAnon"] > 0
    assert figures["VmRSS"] >= figures["RssFile"] > 0        # the interpreter's own mapped files
    assert procs.anon_rss(os.getpid()) is not None


def test_resident_of_a_process_that_is_gone() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert procs.resident(pid) is None


def test_watch_samples_while_the_block_runs() -> None:
    with memory.Watch([os.getpid()], interval=0.01) as watch:
        ballast = bytearray(64 * MiB)           # touched: counted in RssAnon while it lives
        for k in range(0, len(ballast), 4096):
            ballast[k] = 1
        before = len(watch.samples)
        while len(watch.samples) < before + 3:
            pass
    assert watch.samples and not watch._thread.is_alive()
    assert max(s["RssAnon"] for s in watch.samples) >= 64 * MiB
    del ballast


def test_watch_without_a_daemon_takes_no_samples() -> None:
    with memory.Watch([]) as watch:
        pass
    assert watch.samples == [] and memory.summarize(watch.samples) == {}


def _samples(rss_mib: list[int], anon_mib: int = 100) -> list[dict[str, int]]:
    return [{"VmRSS": r * MiB, "RssAnon": anon_mib * MiB, "RssFile": (r - anon_mib) * MiB} for r in rss_mib]


def test_summary_of_a_flat_run() -> None:
    out = memory.summarize(_samples([200, 210, 190, 200, 205, 195]))
    assert out["samples"] == 6 and out["samples_over_512_mib"] == 0
    assert out["VmRSS_median_mib"] == 200.0 and out["VmRSS_max_mib"] == 210.0
    assert out["RssAnon_growth_pct"] == 100.0
    assert 95 <= out["VmRSS_growth_pct"] <= 105


def test_summary_of_a_growing_run_says_so() -> None:
    out = memory.summarize(_samples([200, 300, 400, 500, 600, 700]))
    assert out["samples_over_512_mib"] == 2
    assert out["VmRSS_growth_pct"] == 260.0              # 650 against 250
    assert out["RssFile_max_mib"] == 600.0


def test_bigwrite_on_the_disk_target(tmp_path: Path) -> None:
    target = Disk(tmp_path / "disk")
    target.start()
    ctx = Context(target, Plan.quick(big_size=4 * MiB), tmp_path / "inputs", None, False, {})
    (row,) = memory.big_write(ctx)
    assert row.job == "bigwrite" and row.value > 0 and row.detail["mib"] == 4
    assert not (target.path / "bigwrite" / "big.bin").exists()   # the space is given back
    assert "samples" not in row.detail                            # no daemon to watch
