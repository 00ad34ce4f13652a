"""The node's stop: asked for once, bounded by one deadline, cut short by a second ask.

A stop (SIGTERM, SIGINT, ``cfs node stop``) must end within ``--stop-timeout`` whatever
the peers do: they may be stopping too, frozen, or gone, and etcd may not answer. So
every part of the stop that waits on someone else runs in a cancel scope from
``Stopping.bounded``, which ends at its share of the stop's time:

* the replicas get the first ``REPLICAS_SHARE`` of it to acknowledge what was written
  (``VolumeWriter.close``); what they did not acknowledge stays in the writer's log and
  is shipped when the volume is next written or healed (logged: "left for catch-up");
* releasing the volumes' leases and the node's registration get the rest, if etcd
  answers (a lease left behind lapses with the registration, ``--lease-ttl``).

Nothing fsync'd depends on it: the local store is durable at every commit, and the stop
commits before it waits for anyone. A second signal (``now``) ends every bounded scope
at once, shielded ones too; the volumes are still unmounted.

Before the stop begins, a bounded scope has no deadline: a lease released by a plain
unmount waits as long as the coordinator's own retry deadline allows. A scope opened
before the stop and still open when it begins takes the stop's deadline then.

Concurrency: trio thread only; ``request``, ``start`` and ``now`` may be called from
any task.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Iterator

import trio

log = logging.getLogger(__name__)

DEFAULT_STOP_TIMEOUT = 10.0
"""Seconds a stop may take (``--stop-timeout``), unmounting and closing the store aside."""
REPLICAS_SHARE = 0.6
"""The part of the stop's time the replicas get to acknowledge; the rest is for etcd."""


class Stopping:
    """One stop of the node (see the module doc)."""

    def __init__(self) -> None:
        self.asked = trio.Event()
        """Set when a stop is asked for; the daemon then begins it."""
        self.why = ""
        self.started_at: float | None = None
        self.timeout = math.inf
        self.at_once = False
        self._scopes: dict[trio.CancelScope, float] = {}
        """Open bounded scopes and the share of the stop's time each may use."""

    def request(self, why: str) -> None:
        """Ask for the stop (idempotent: the first reason is kept)."""
        if not self.asked.is_set():
            self.why = why
            self.asked.set()

    def start(self, timeout: float) -> None:
        """The stop starts now and must be over ``timeout`` seconds from now (once: a
        second call changes nothing)."""
        if self.started_at is not None:
            return
        self.started_at = trio.current_time()
        self.timeout = timeout
        for scope, share in self._scopes.items():
            scope.deadline = min(scope.deadline, self.deadline(share))

    def now(self) -> None:
        """Give up waiting for anyone: every bounded scope ends at once."""
        self.at_once = True
        for scope in list(self._scopes):
            scope.cancel()

    @property
    def stopping(self) -> bool:
        return self.started_at is not None

    def deadline(self, share: float = 1.0) -> float:
        """Trio time at which ``share`` of the stop's time has passed (inf before it begins)."""
        if self.at_once:
            return -math.inf
        if self.started_at is None:
            return math.inf
        return self.started_at + share * self.timeout

    def left(self) -> float:
        return max(0.0, self.deadline() - trio.current_time())

    @contextlib.contextmanager
    def bounded(self, *, share: float = 1.0, shield: bool = False) -> Iterator[trio.CancelScope]:
        """A cancel scope that ends once ``share`` of the stop's time has passed, or at once
        after ``now``; ``shield``: nothing else cancels it (work that must be tried even
        when what surrounds it was cancelled, such as releasing a lease)."""
        scope = trio.CancelScope(deadline=self.deadline(share), shield=shield)
        if self.at_once:
            scope.cancel()
        self._scopes[scope] = share
        try:
            with scope:
                yield scope
        finally:
            del self._scopes[scope]
