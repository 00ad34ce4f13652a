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

Spare workers (``Workers``): one handler of a single node must await work that itself
waits for other requests to be answered (dropping a file's cached pages after a direct
write, cfs.fuse.adapter: the kernel locks each page it drops, and a page being read
stays locked until its READ is answered). One worker would wait for itself. So a single
node also starts spare workers, which stay parked at the door of the loop, costing
nothing per request, until a handler lends its worker (``Workers.lend``); then they
take requests, and each parks again when it next comes to the door after the lending
ended. The worker that took requests before goes on: no lock passes between tasks on
every request, as with two plain workers.

pyfuse3 looks trio up as its module attribute ``pyfuse3.trio`` (the hook its asyncio
mode uses, ``pyfuse3.asyncio.enable``); ``run`` points it at a namespace that is trio
but for ``Lock`` and ``lowlevel.wait_readable`` while the loop runs, and back afterwards.
"""

from __future__ import annotations

import contextlib
import select
import time
import types
from typing import Callable, Iterator

import pyfuse3
import trio

from cfs.fuse import lowlevel


MAX_BACKGROUND = 12
"""Background requests (readahead, asynchronous direct I/O) the kernel keeps in flight
on a FUSE connection (``FUSE_DEFAULT_MAX_BACKGROUND``; libfuse keeps it unless told, and
cfs does not tell it). The next one waits for a slot, and a readahead does so holding
the locks of the pages it reads."""

LEND_LIMIT = MAX_BACKGROUND - 1
"""At most this many handlers lend their worker at once. A lent handler holds its answer,
and with it, for an asynchronous write, one of the kernel's background slots. Were all
of them held, a readahead would wait for a slot with its pages locked, and a handler
waiting for the kernel to drop those pages would wait for ever (seen: 12 asynchronous
direct writes held while a reader read the same file). With one slot left, every
request not held is answered and frees its slot, and the readahead gets one."""

SPARE_WORKERS = LEND_LIMIT
"""Spare workers of a single node: one for each handler that may be lent. A spare costs
nothing while parked; once it took a request it keeps pyfuse3's request buffer (1 MiB)."""


class Workers:
    """pyfuse3's worker tasks: how many, and which of them take requests (see the module).

    Made by the daemon and handed to both ``Operations`` (which lends) and ``run``.
    ``count`` 1 (a single node, where no handler awaits but to lend): one worker takes
    requests, the spares wait at the door (``admit``) while nobody lends. More (a
    cluster, whose handlers await replication): every worker takes requests, and
    ``lend`` only counts.

    Resource handling: parked workers wake when the session ends (``close``: the FUSE
    device hung up or was closed) and when cancelled.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self.gated = count == 1
        self.tasks = 1 + SPARE_WORKERS if self.gated else count
        """pyfuse3's most worker tasks."""
        self.lend_limit = min(self.tasks - 1, LEND_LIMIT)
        """One worker always takes requests, and one background slot stays free."""
        self._owner: trio.lowlevel.Task | None = None
        self._lent = 0
        self._closed = False
        self._parked = trio.lowlevel.ParkingLot()
        self.device: int | None = None
        """The FUSE device's descriptor the workers read (known once they first wait for
        it), for notifications pyfuse3 cannot send (cfs.fuse.coherence)."""

    def may_lend(self) -> bool:
        """Whether a handler may lend its worker now: another is sure to take requests."""
        return self._lent < self.lend_limit and not self._closed

    @contextlib.contextmanager
    def lend(self) -> Iterator[None]:
        """While the block runs (its awaits), other workers take requests. Ask
        ``may_lend`` first, without awaiting in between."""
        if not self.may_lend():
            raise RuntimeError("no worker left to lend")
        self._lent += 1
        self._parked.unpark(count=1)  # one spare takes the requests the lender leaves
        try:
            yield
        finally:
            self._lent -= 1

    async def admit(self) -> None:
        """At the door of the request loop: park unless this worker may take requests
        (the owner, anyone while a worker is lent, everyone once the session ends)."""
        if not self.gated:
            return
        me = trio.lowlevel.current_task()
        while True:
            if self._owner is None:
                self._owner = me
            if self._owner is me or self._lent or self._closed:
                return
            await self._parked.park()

    def close(self) -> None:
        """The session is ending: let every parked worker in, to see that and leave."""
        self._closed = True
        self._parked.unpark_all()

    @property
    def lent(self) -> int:
        return self._lent


class _UncontendedLock:
    """A trio lock that takes the free fast path without yielding (see the module), behind
    the door of ``workers``."""

    def __init__(self, workers: Workers) -> None:
        self._lock = trio.Lock()
        self._workers = workers

    async def __aenter__(self) -> None:
        await self._workers.admit()
        if self._lock.locked():
            await self._lock.acquire()
        else:
            self._lock.acquire_nowait()

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._lock.release()
        if exc_type is trio.ClosedResourceError:  # pyfuse3.terminate: the loop ends
            self._workers.close()


DEFAULT_SPIN_US = 20
"""How long the loop polls for the next request before sleeping (see the module)."""

CHECKPOINT_EVERY = 32
"""Requests taken without sleeping between two passes through trio's scheduler."""


_HUNG_UP = select.POLLERR | select.POLLHUP | select.POLLNVAL


class _SpinningWait:
    """``trio.lowlevel.wait_readable`` for ``/dev/fuse`` that polls briefly before sleeping.

    ``on_hang_up`` is called when the descriptor reports an error or a hang-up (the
    session ends: unmounted, or the connection aborted), before the reader sees it.
    """

    def __init__(self, spin_us: int, on_hang_up: Callable[[], None] | None = None,
                 workers: Workers | None = None) -> None:
        """``workers``: told which descriptor pyfuse3 reads (``Workers.device``)."""
        self._spin_ns = spin_us * 1000
        self._polls: dict[int, select.poll] = {}
        self._taken = 0
        self._on_hang_up = on_hang_up
        self._workers = workers

    def _poll_for(self, fd: int) -> select.poll:
        poll = self._polls.get(fd)
        if poll is None:
            poll = self._polls[fd] = select.poll()
            poll.register(fd, select.POLLIN)
        return poll

    async def __call__(self, fd: int) -> None:
        if self._workers is not None and self._workers.device != fd:
            self._workers.device = fd
        if self._spin_ns > 0:
            poll = self._poll_for(fd)
            deadline = time.perf_counter_ns() + self._spin_ns
            while True:
                ready = poll.poll(0)
                if ready:  # readable, or hung up: the read that follows will tell
                    self._check_hang_up(ready)
                    self._taken += 1
                    if self._taken % CHECKPOINT_EVERY == 0:
                        await trio.lowlevel.checkpoint()
                    return
                if time.perf_counter_ns() >= deadline:
                    break
        await trio.lowlevel.wait_readable(fd)
        if self._on_hang_up is not None:  # one poll after a sleep, to tell a hang-up
            self._check_hang_up(self._poll_for(fd).poll(0))

    def _check_hang_up(self, ready: list[tuple[int, int]]) -> None:
        if self._on_hang_up is not None and any(events & _HUNG_UP for _fd, events in ready):
            self._on_hang_up()


def _trio_for_pyfuse3(spin_us: int, workers: Workers) -> types.SimpleNamespace:
    namespace = types.SimpleNamespace(**{name: getattr(trio, name) for name in dir(trio) if not name.startswith("__")})
    namespace.Lock = lambda: _UncontendedLock(workers)
    namespace.lowlevel = types.SimpleNamespace(
        **{name: getattr(trio.lowlevel, name) for name in dir(trio.lowlevel) if not name.startswith("__")})
    namespace.lowlevel.wait_readable = _SpinningWait(spin_us, workers.close if workers.gated else None, workers)
    return namespace


async def run(workers: Workers, spin_us: int = DEFAULT_SPIN_US) -> None:
    """``pyfuse3.main`` with the workers of ``workers`` and the cheaper lock.

    One worker taking requests is all a single node needs while no handler awaits (each
    runs to completion): a second one could never run while the first handles a
    request, and would only hand the lock from task to task, with a task switch each
    way, on every request; its spares stay parked unless a handler lends its worker
    (``Workers``), and never end (pyfuse3's ``min_tasks``), so none is lost while one
    is lent. Handlers that await (a cluster's) need many workers; the lock then falls
    back to trio's own waiting. ``spin_us`` is how long to poll for the next request
    before sleeping; 0 sleeps at once, as pyfuse3 does. Requests pyfuse3 does not serve
    (fallocate, cfs.fuse.lowlevel) run as tasks of a nursery of this call, which ends
    with the loop: a request still waiting then is answered EINTR.
    """
    if spin_us < 0:
        raise ValueError("spin_us must not be negative")
    original = pyfuse3.trio  # type: ignore[attr-defined]
    pyfuse3.trio = _trio_for_pyfuse3(spin_us, workers)  # type: ignore[attr-defined]
    try:
        async with trio.open_nursery() as requests:  # fallocate's, answered before the session ends
            with lowlevel.serving(requests):
                try:
                    await pyfuse3.main(min_tasks=workers.tasks if workers.gated else 1, max_tasks=workers.tasks)
                finally:
                    requests.cancel_scope.cancel()
    finally:
        pyfuse3.trio = original  # type: ignore[attr-defined]
