"""Crash points: a test names a point, and the process kills itself (SIGKILL) there.

Work that must survive a crash at any point (a volume removal, its two halves in the
coordinator and in the store) calls ``crash_point(name)`` between its steps. A test
starts the daemon with ``CFS_CRASH_AT=name[,name...]`` in its environment and the daemon
dies exactly there, as a kill -9 would make it, instead of at a moment left to luck.
Without the variable a crash point costs one set lookup.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

ENV = "CFS_CRASH_AT"
_POINTS = frozenset(p for p in os.environ.get(ENV, "").split(",") if p)


def crash_point(name: str) -> None:
    """Die here, by SIGKILL, if ``CFS_CRASH_AT`` names this point."""
    if name in _POINTS:
        log.critical("crash point %s reached: killing this process (%s)", name, ENV)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
