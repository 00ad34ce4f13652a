"""Results of a benchmark run: one ``Row`` per measured figure, the table and the JSON.

A row is one figure (a rate, a time or a size) of one job on one target. ``Report``
collects the rows of every target and prints them side by side: the absolute figures,
the ratio cfs / C FUSE for each C FUSE target that ran, and what the cfs daemon spent
on the job (CPU seconds, peak RSS). Ratios are oriented so that 1.0 means "as good as
C FUSE" and more is better, whichever way the figure runs (for a time, the ratio is
C time / cfs time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

CFS = "cfs"
C_FUSE = ("bindfs", "passthrough_hp")
"""Targets that are C FUSE passthrough filesystems: the ratios are taken against these."""

MiB = 1 << 20


@dataclass
class Row:
    """One figure of one job on one target."""

    job: str
    metric: str
    unit: str
    value: float
    higher_is_better: bool = True
    seconds: float = 0.0
    """Wall time of the measured work."""
    daemon_cpu: float | None = None
    """CPU seconds the target's FUSE daemon spent during the job (None: no daemon)."""
    daemon_rss: int | None = None
    """The daemon's peak RSS during the job (VmHWM, with mapped file pages), bytes."""
    daemon_anon: int | None = None
    """The daemon's peak anonymous RSS during the job (its own memory, sampled), bytes."""
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetSummary:
    """What one target's daemon cost over the whole run."""

    name: str
    description: str
    seconds: float = 0.0
    daemon_cpu: float | None = None
    daemon_peak_rss: int | None = None
    daemon_peak_anon: int | None = None
    error: str | None = None


class Report:
    """Rows of every target, in the order jobs ran; prints the table or the JSON."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta
        self.targets: list[TargetSummary] = []
        self.rows: dict[str, list[Row]] = {}

    def add_target(self, summary: TargetSummary) -> None:
        self.targets.append(summary)
        self.rows.setdefault(summary.name, [])

    def add(self, target: str, row: Row) -> None:
        self.rows.setdefault(target, []).append(row)

    # --- the combined view --------------------------------------------------------

    def keys(self) -> list[tuple[str, str]]:
        """(job, metric) pairs in first-seen order over all targets."""
        seen: dict[tuple[str, str], None] = {}
        for rows in self.rows.values():
            for row in rows:
                seen.setdefault((row.job, row.metric), None)
        return list(seen)

    def find(self, target: str, key: tuple[str, str]) -> Row | None:
        for row in self.rows.get(target, []):
            if (row.job, row.metric) == key:
                return row
        return None

    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    def references(self) -> list[str]:
        """The C FUSE targets of this run, the ratio denominators."""
        return [name for name in self.target_names() if name in C_FUSE]

    def ratio(self, key: tuple[str, str], reference: str) -> float | None:
        mine, theirs = self.find(CFS, key), self.find(reference, key)
        if mine is None or theirs is None or not mine.value or not theirs.value:
            return None
        if not mine.higher_is_better and mine.unit in ("%", "MiB"):
            return None  # sizes, not speeds: no meaningful ratio
        return mine.value / theirs.value if mine.higher_is_better else theirs.value / mine.value

    def to_json(self) -> dict[str, Any]:
        combined = []
        for key in self.keys():
            entry: dict[str, Any] = {"job": key[0], "metric": key[1], "values": {}, "ratios": {},
                                     "daemon_cpu": {}, "daemon_rss": {}, "daemon_anon": {}, "seconds": {}}
            for name in self.target_names():
                row = self.find(name, key)
                if row is None:
                    continue
                entry["unit"] = row.unit
                entry["higher_is_better"] = row.higher_is_better
                entry["values"][name] = row.value
                entry["seconds"][name] = round(row.seconds, 3)
                if row.daemon_cpu is not None:
                    entry["daemon_cpu"][name] = round(row.daemon_cpu, 3)
                if row.daemon_rss is not None:
                    entry["daemon_rss"][name] = row.daemon_rss
                if row.daemon_anon is not None:
                    entry["daemon_anon"][name] = row.daemon_anon
                if row.detail:
                    entry.setdefault("detail", {})[name] = row.detail
            for reference in self.references():
                r = self.ratio(key, reference)
                if r is not None:
                    entry["ratios"][f"{CFS}/{reference}"] = round(r, 3)
            combined.append(entry)
        return {"meta": self.meta, "targets": [asdict(t) for t in self.targets], "results": combined}

    def table(self) -> str:
        names = self.target_names()
        refs = self.references() if CFS in names else []
        daemon = [f"{CFS} CPU s", f"{CFS} anon MiB", f"{CFS} RSS MiB"] if CFS in names else []
        header = ["job", "metric", *names, *[f"cfs/{_short(r)}" for r in refs], *daemon]
        lines: list[list[str]] = [header]
        for key in self.keys():
            cells = [key[0], key[1]]
            for name in names:
                row = self.find(name, key)
                cells.append(_fmt(row.value) if row is not None else "-")
            for reference in refs:
                r = self.ratio(key, reference)
                cells.append(f"{r:.2f}" if r is not None else "-")
            if daemon:
                mine = self.find(CFS, key)
                cells.append(f"{mine.daemon_cpu:.1f}" if mine and mine.daemon_cpu is not None else "-")
                cells.append(f"{mine.daemon_anon / MiB:.0f}" if mine and mine.daemon_anon else "-")
                cells.append(f"{mine.daemon_rss / MiB:.0f}" if mine and mine.daemon_rss else "-")
            lines.append(cells)
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        out = []
        for n, line in enumerate(lines):
            out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
        out.extend(self._summary_lines())
        return "\n".join(out)

    def _summary_lines(self) -> Iterable[str]:
        for t in self.targets:
            parts = [f"{t.name}: {t.description}; {t.seconds:.0f} s"]
            if t.daemon_cpu is not None:
                parts.append(f"daemon CPU {t.daemon_cpu:.1f} s")
            if t.daemon_peak_rss is not None:
                parts.append(f"daemon peak RSS {t.daemon_peak_rss / MiB:.0f} MiB")
            if t.daemon_peak_anon is not None:
                parts.append(f"of which anonymous {t.daemon_peak_anon / MiB:.0f} MiB")
            if t.error:
                parts.append(f"FAILED: {t.error}")
            yield ", ".join(parts)


def _short(name: str) -> str:
    return {"passthrough_hp": "hp"}.get(name, name)


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
