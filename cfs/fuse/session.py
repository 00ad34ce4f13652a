"""Running pyfuse3's request loop with one checkpoint per request instead of two.

pyfuse3's workers take a ``trio.Lock`` around waiting for ``/dev/fuse`` to become
readable. trio's ``Lock.acquire`` yields to the scheduler even when the lock is free
(a "checkpoint"), so every request pays for two passes of trio's scheduler (each an
``epoll_wait`` and the bookkeeping around it): one for the lock, one for
``wait_readable``. With one worker (``run(workers=1)``) the lock is never contended,
and the yield buys nothing: ``wait_readable``, which follows at once, is a checkpoint
too (cancellation and fairness to the daemon's other tasks are as before).

pyfuse3 looks trio up as its module attribute ``pyfuse3.trio`` (the hook its asyncio
mode uses, ``pyfuse3.asyncio.enable``); ``run`` points it at a namespace that is trio
but for ``Lock`` while the loop runs, and back afterwards.
"""

from __future__ import annotations

import types

import pyfuse3
import trio


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


def _trio_for_pyfuse3() -> types.SimpleNamespace:
    namespace = types.SimpleNamespace(**{name: getattr(trio, name) for name in dir(trio) if not name.startswith("__")})
    namespace.Lock = _UncontendedLock
    return namespace


async def run(workers: int = 1) -> None:
    """``pyfuse3.main`` with at most ``workers`` worker tasks and the cheaper lock.

    One worker is the default, and all a node needs while no handler awaits (each
    runs to completion): a second worker could never run while the first handles a
    request, and would only hand the lock from task to task, with a task switch each
    way, on every request. Handlers that await (a cluster's) need more workers; the
    lock then falls back to trio's own waiting.
    """
    original = pyfuse3.trio  # type: ignore[attr-defined]
    pyfuse3.trio = _trio_for_pyfuse3()  # type: ignore[attr-defined]
    try:
        await pyfuse3.main(min_tasks=1, max_tasks=workers)
    finally:
        pyfuse3.trio = original  # type: ignore[attr-defined]
