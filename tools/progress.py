"""A one-line progress bar for terminals; silent when the output is not a terminal."""

from __future__ import annotations

from typing import TextIO


class ProgressBar:
    def __init__(self, out: TextIO, enabled: bool = True, width: int = 30) -> None:
        self.out = out
        self.enabled = enabled and out.isatty()
        self.width = width
        self._shown = False

    def update(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        fraction = done / total if total else 1.0
        filled = int(self.width * min(1.0, fraction))
        bar = "#" * filled + "-" * (self.width - filled)
        self.out.write(f"\r{phase:<12} [{bar}] {done}/{total}")
        self.out.flush()
        self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.out.write("\n")
            self.out.flush()
            self._shown = False
