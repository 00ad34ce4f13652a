"""Running pyfuse3's request loop with fewer trips through trio's scheduler.

pyfuse3's workers take a ``trio.Lock`` around waiting for ``/dev/fuse`` to become
readable. trio's ``Lock.acquire`` yields to the scheduler even when the lock is free
(a "checkpoint"), so every request pays for two passes of trio's scheduler (each an
``epoll_wait`` and the bookkeeping around it): one for the lock, one for
``wait_readable``. With one worker (``run(workers=1)``) the lock is never contended,
and the yield buys nothing: ``wait_readable``, which follows at once, is a checkpoint
too (cancellation and fairness to the daemon's other tasks are as before).

Then, after each reply, pyfuse3 waits for ``/dev/fuse`` with ``trio.lowlevel.wait_readable``:
re-arm the descriptor in epoll, go through the scheduler, sleep in ``epoll_wait``, be
woken. That round costs ~18 µs of a ~46 µs request (measured: getxattr of a missing
attribute, the cheapest request). A program doing file operations one after another
sends its next request a few microseconds after it gets the reply, so the loop first
polls the descriptor for a short while (``spin_us``, 20 µs by default) and reads the
request at once when it comes; only then does it sleep in trio. The same getxattr then
costs 28 µs, stat 33 µs instead of 57 µs (docs/PERFORMANCE.md). The spin is bounded, so
an idle daemon sleeps as before, and a busy one spends at most ``spin_us`` per request
it did not need to wait for. Every ``CHECKPOINT_EVERY``-th request taken this way still
passes through trio's scheduler, so the daemon's other tasks (commit timer, control
socket, replication) run and cancellation is seen while requests keep coming.

pyfuse3 looks trio up as its module attribute ``pyfuse3.trio`` (the hook its asyncio
mode uses, ``pyfuse3.asyncio.enable``); ``run`` points it at a namespace that is trio
but for ``Lock`` and ``lowlevel.wait_readable`` while the loop runs, and back afterwards.
"""

from __future__ import annotations

import select
import time
import types

import pyfuse3
import trio

from cfs.fuse import lowlevel


class _UncontendedLock:
    """A trio lock that takes the free fast path without yielding (see the module)."""

    def __init__(self) -> None:
        self._lock = trio.Lock()

    async def __aenter__(self) -> None:
        if self._lock.locked():
            await self._lock.acquire()
        else:
            self._lock.acquire_nowait()

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


DEFAULT_SPIN_US = 20
"""How long the loop polls for the next request before sleeping (see the module)."""

CHECKPOINT_EVERY = 32
"""Requests taken without sleeping between two passes through trio's scheduler."""


class _SpinningWait:
    """``trio.lowlevel.wait_readable`` for ``/dev/fuse`` that polls briefly before sleeping."""

    def __init__(self, spin_us: int) -> None:
        self._spin_ns = spin_us * 1000
        self._polls: dict[int, select.poll] = {}
        self._taken = 0

    def _poll_for(self, fd: int) -> select.poll:
        poll = self._polls.get(fd)
        if poll is None:
            poll = self._polls[fd] = select.poll()
            poll.register(fd, select.POLLIN)
        return poll

    async def __call__(self, fd: int) -> None:
        if self._spin_ns > 0:
            poll = self._poll_for(fd)
            deadline = time.perf_counter_ns() + self._spin_ns
            while True:
                if poll.poll(0):  # readable, or hung up: the read that follows will tell
                    self._taken += 1
                    if self._taken % CHECKPOINT_EVERY == 0:
                        await trio.lowlevel.checkpoint()
                    return
                if time.perf_counter_ns() >= deadline:
                    break
        await trio.lowlevel.wait_readable(fd)


def _trio_for_pyfuse3(spin_us: int) -> types.SimpleNamespace:
    namespace = types.SimpleNamespace(**{name: getattr(trio, name) for name in dir(trio) if not name.startswith("__")})
    namespace.Lock = _UncontendedLock
    lowlevel = trio.lowlevel
    namespace.lowlevel = types.SimpleNamespace(
        **{name: getattr(lowlevel, name) for name in dir(lowlevel) if not name.startswith("__")})
    namespace.lowlevel.wait_readable = _SpinningWait(spin_us)
    return namespace


async def run(workers: int = 1, spin_us: int = DEFAULT_SPIN_US) -> None:
    """``pyfuse3.main`` with at most ``workers`` worker tasks and the cheaper lock.

    One worker is the default, and all a node needs while no handler awaits (each
    runs to completion): a second worker could never run while the first handles a
    request, and would only hand the lock from task to task, with a task switch each
    way, on every request. Handlers that await (a cluster's) need more workers; the
    lock then falls back to trio's own waiting. ``spin_us`` is how long to poll for the
    next request before sleeping; 0 sleeps at once, as pyfuse3 does. Requests pyfuse3
    does not serve (fallocate, cfs.fuse.lowlevel) run as tasks of a nursery of this call,
    which ends with the loop: a request still waiting then is answered EINTR.
    """
    if spin_us < 0:
        raise ValueError("spin_us must not be negative")
    original = pyfuse3.trio  # type: ignore[attr-defined]
    pyfuse3.trio = _trio_for_pyfuse3(spin_us)  # type: ignore[attr-defined]
    try:
        async with trio.open_nursery() as requests:  # fallocate's, answered before the session ends
            with lowlevel.serving(requests):
                try:
                    await pyfuse3.main(min_tasks=1, max_tasks=workers)
                finally:
                    requests.cancel_scope.cancel()
    finally:
        pyfuse3.trio = original  # type: ignore[attr-defined]
