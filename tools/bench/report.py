"""Results of a benchmark run: one ``Row`` per measured figure, the table and the JSON.

A row is one figure (a rate, a time or a size) of one job on one target. ``Report``
collects the rows of every target and prints them side by side: the absolute figures,
the ratio cfs / C FUSE for each C FUSE target that ran, and what the cfs daemon spent
on the job (CPU seconds, peak RSS). Ratios are oriented so that 1.0 means "as good as
C FUSE" and more is better, whichever way the figure runs (for a time, the ratio is
C time / cfs time).

A run of several rounds (``cfs bench --rounds N``) runs every target once per round, the
targets taking turns, so that a slow phase of a shared machine falls on all of them
rather than on one. Then each figure shown is the median over the rounds, and each ratio
the median of the rounds' own ratios (each taken between runs minutes apart), with
their range beside it: the spread says how far one run can be trusted.
"""

from __future__ import annotations

import statistics
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
    round: int = 1
    """Which round of the run measured it (``--rounds``)."""


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
    round: int = 1


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

    def measured(self, target: str, key: tuple[str, str]) -> list[Row]:
        """The target's rows of ``key``, one per round that measured it."""
        return [row for row in self.rows.get(target, []) if (row.job, row.metric) == key]

    def find(self, target: str, key: tuple[str, str]) -> Row | None:
        """The row of ``key``; over several rounds, the one with the median value (the
        lower of the middle two for an even count), with that round's costs."""
        rows = sorted(self.measured(target, key), key=lambda row: row.value)
        return rows[(len(rows) - 1) // 2] if rows else None

    def rounds(self) -> int:
        return max((t.round for t in self.targets), default=1)

    def target_names(self) -> list[str]:
        return list(dict.fromkeys(t.name for t in self.targets))

    def references(self) -> list[str]:
        """The C FUSE targets of this run, the ratio denominators."""
        return [name for name in self.target_names() if name in C_FUSE]

    def ratio(self, key: tuple[str, str], reference: str) -> float | None:
        """cfs against ``reference``: the median of the rounds' ratios."""
        ratios = self.ratios(key, reference)
        return statistics.median(ratios) if ratios else None

    def ratios(self, key: tuple[str, str], reference: str) -> list[float]:
        """The ratio of each round in which both cfs and ``reference`` measured ``key``."""
        rows = self.measured(CFS, key)
        if rows and not rows[0].higher_is_better and rows[0].unit in ("%", "MiB"):
            return []  # sizes, not speeds: no meaningful ratio
        theirs = {row.round: row for row in self.measured(reference, key)}
        out = []
        for mine in rows:
            other = theirs.get(mine.round)
            if other is not None and mine.value and other.value:
                out.append(mine.value / other.value if mine.higher_is_better else other.value / mine.value)
        return out

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
            several = self.rounds() > 1
            for reference in self.references():
                each = self.ratios(key, reference)
                if each:
                    entry["ratios"][f"{CFS}/{reference}"] = round(statistics.median(each), 3)
                    if several:
                        entry.setdefault("round_ratios", {})[f"{CFS}/{reference}"] = [round(r, 3) for r in each]
            if several:
                entry["rounds"] = {name: [row.value for row in self.measured(name, key)]
                                   for name in self.target_names() if self.measured(name, key)}
            combined.append(entry)
        return {"meta": self.meta, "targets": [asdict(t) for t in self.targets], "results": combined}

    def table(self) -> str:
        names = self.target_names()
        refs = self.references() if CFS in names else []
        daemon = [f"{CFS} CPU s", f"{CFS} anon MiB", f"{CFS} RSS MiB"] if CFS in names else []
        spread = self.rounds() > 1
        ratio_columns = [c for r in refs for c in (f"cfs/{_short(r)}", *(["range"] if spread else []))]
        header = ["job", "metric", *names, *ratio_columns, *daemon]
        lines: list[list[str]] = [header]
        for key in self.keys():
            cells = [key[0], key[1]]
            for name in names:
                row = self.find(name, key)
                cells.append(_fmt(row.value) if row is not None else "-")
            for reference in refs:
                each = self.ratios(key, reference)
                cells.append(f"{statistics.median(each):.2f}" if each else "-")
                if spread:
                    cells.append(f"{min(each):.2f}-{max(each):.2f}" if each else "-")
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
        if spread:
            out.append(f"{self.rounds()} rounds: each figure is the median of the rounds, each ratio the median "
                       "of the rounds' own ratios, with their range")
        out.extend(self._summary_lines())
        return "\n".join(out)

    def _summary_lines(self) -> Iterable[str]:
        spread = self.rounds() > 1
        for t in self.targets:
            parts = [f"{t.name}{f' (round {t.round})' if spread else ''}: {t.description}; {t.seconds:.0f} s"]
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
