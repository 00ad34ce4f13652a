"""What a job gets to work with: the target, the sizes of the run, and measuring probes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.bench import procs
from tools.bench.report import Row
from tools.bench.targets import Target

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Plan:
    """The sizes of a run. ``full()`` is the suite of issue #4; ``quick()`` checks the suite itself."""

    seq_size: int
    rand_runtime: int
    verify_size: int
    meta_files: int
    bigdir_files: int
    tree_max_files: int | None
    """Files taken from site-packages for the untar tarball (None: all of them)."""
    dedup_size: int
    overwrite_size: int
    overwrite_writes: int
    big_size: int
    """The file ``bigwrite`` writes while it watches the daemon's memory (not run by default)."""
    snap_files: int = 100_000
    snap_size: int = 10 * GiB
    """The volume ``snapshot`` fills before it takes a snapshot and a clone of it (cfs only,
    not run by default)."""
    job_cap: int = 50
    """Seconds any one timed job may take (fio's ``runtime``; the overwrite loop stops)."""

    @classmethod
    def full(cls, size: int | None = None, big_size: int | None = None) -> "Plan":
        return cls(seq_size=size or GiB, rand_runtime=20, verify_size=64 * MiB, meta_files=10_000,
                   bigdir_files=100_000, tree_max_files=None, dedup_size=size or GiB,
                   overwrite_size=256 * MiB, overwrite_writes=20_000, big_size=big_size or 10 * GiB)

    @classmethod
    def quick(cls, size: int | None = None, big_size: int | None = None) -> "Plan":
        return cls(seq_size=size or 16 * MiB, rand_runtime=1, verify_size=2 * MiB, meta_files=200,
                   bigdir_files=1_000, tree_max_files=200, dedup_size=size or 8 * MiB,
                   overwrite_size=4 * MiB, overwrite_writes=200, big_size=big_size or 32 * MiB, job_cap=20,
                   snap_files=500, snap_size=32 * MiB)


class Probe:
    """Wall time and what the target's daemons spent over a block: CPU seconds, peak RSS
    (VmHWM, which counts the pages of mapped files: for cfs, the part of the LMDB map it
    touched) and peak anonymous RSS (its own memory, sampled every ``SAMPLE`` seconds)."""

    SAMPLE = 0.05

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.seconds = 0.0
        self.cpu: float | None = None
        self.rss: int | None = None
        self.anon: int | None = None
        self._cpu0 = 0.0
        self._t0 = 0.0
        self._done = threading.Event()
        self._sampler: threading.Thread | None = None

    def __enter__(self) -> "Probe":
        for pid in self.pids:
            procs.reset_peak(pid)  # when refused, VmHWM is the peak since the daemon started
        self._cpu0 = self._cpu()
        if self.pids:
            self.anon = 0
            self._sampler = threading.Thread(target=self._sample, name="bench-probe", daemon=True)
            self._sampler.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self._done.set()
        if self._sampler is not None:
            self._sampler.join()
        if self.pids:
            self.cpu = self._cpu() - self._cpu0
            self.rss = sum(u.peak_rss for u in map(procs.usage, self.pids) if u is not None)

    def _sample(self) -> None:
        while True:
            anon = sum(filter(None, map(procs.anon_rss, self.pids)))
            self.anon = max(self.anon or 0, anon)
            if self._done.wait(self.SAMPLE):
                return

    def _cpu(self) -> float:
        return sum(u.cpu_seconds for u in map(procs.usage, self.pids) if u is not None)


@dataclass
class Context:
    target: Target
    plan: Plan
    inputs: Path
    """Where the run keeps its inputs (the untar tarball), on the real disk, outside every target."""
    fio: str | None
    can_drop_caches: bool
    tree: dict[str, int]
    """Files and bytes in the untar tarball (``inputs/tree.tar``)."""
    empty: dict[str, int] | None = None
    """What the target held when it started, before any job wrote (``scenarios.space_in_use``):
    the size reclaim compares with. Recorded by the runner only when reclaim runs."""

    def work(self, name: str) -> Path:
        path = self.target.path / name
        path.mkdir(exist_ok=True)
        return path

    def drop_caches(self) -> None:
        if self.can_drop_caches:
            procs.drop_caches()

    def probe(self) -> Probe:
        return Probe(self.target.pids())

    def row(self, job: str, metric: str, unit: str, value: float, probe: Probe | None = None, *,
            higher_is_better: bool = True, **detail: Any) -> Row:
        return Row(job=job, metric=metric, unit=unit, value=value, higher_is_better=higher_is_better,
                   seconds=probe.seconds if probe else 0.0, daemon_cpu=probe.cpu if probe else None,
                   daemon_rss=probe.rss if probe else None, daemon_anon=probe.anon if probe else None,
                   detail=detail)
