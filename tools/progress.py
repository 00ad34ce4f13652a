"""Progress on a terminal: a one-line bar (silent when the output is not a terminal),
and the one-line description of a node's transfer (``cfs status``, ``cfs node drain``)."""

from __future__ import annotations

from typing import Any, TextIO


class ProgressBar:
    def __init__(self, out: TextIO, enabled: bool = True, width: int = 30) -> None:
        self.out = out
        self.enabled = enabled and out.isatty()
        self.width = width
        self._shown = False

    def update(self, phase: str, done: int, total: int, detail: str = "") -> None:
        if not self.enabled:
            return
        fraction = done / total if total else 1.0
        filled = int(self.width * min(1.0, fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        tail = f"  {detail}" if detail else ""
        self.out.write(f"\r{phase:<12} [{bar}] {done}/{total}{tail}\x1b[K")
        self.out.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.out.write("\n")
            self.out.flush()
            self._shown = False


def size(n: float) -> str:
    """Bytes for people: 512 B, 3.1 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def transfer_line(t: dict[str, Any]) -> str:
    """One transfer (``TransferState.to_json()``) in a line:
    ``data  heal → 1a2b3c4d  3.1 MiB of 8.0 MiB (39%), 120 rows, 2.0 MiB/s, ETA 3 s``."""
    arrow = "→" if t["direction"] == "out" else "←"
    done = size(t["bytes_done"]) + (f" of {size(t['bytes_total'])}" if t["bytes_total"] is not None else "")
    unit = "rows" if t["whole"] else "records"
    records = f"{t['records_done']}" + (f" of {t['records_total']}" if t["records_total"] is not None else "")
    parts = [f"{done}" + (f" ({t['percent']:g}%)" if t["percent"] is not None and t["bytes_total"] is not None
                          else ""),
             f"{records} {unit}" + (f" ({t['percent']:g}%)" if t["percent"] is not None
                                   and t["bytes_total"] is None else "")]
    if t["state"] == "running":
        if t["bytes_per_second"] is not None:
            parts.append(f"{size(t['bytes_per_second'])}/s")
        parts.append("ETA " + (duration(t["eta_seconds"]) if t["eta_seconds"] is not None else "unknown"))
    else:
        parts.append(t["state"] + (f": {t['error']}" if t["error"] else "") + f" in {duration(t['elapsed_seconds'])}")
    return f"{t['volume']}  {t['kind']} {arrow} {t['peer'][:8]}  " + ", ".join(parts)
