"""Keeping the kernel's page cache true to direct writes.

A write through a descriptor opened ``O_DIRECT`` does not go through the page cache. The
FUSE kernel module drops the written range from the cache when the write starts
(``generic_file_direct_write``), and again when it ends, but only for a write that
ends before the system call returns: an asynchronous one (libaio, io_uring) returns
at once and nothing drops the range when it completes. Meanwhile the write's requests
wait in the kernel's queue (at most 12 in the background: a large write waits for room),
and a read of the range answered before them brings the old bytes back into the cache,
where they stay once the write is done. For read(2) the kernel mostly recovers on its
own: after a direct write it asks for the attributes before the next read, sees the
new mtime and drops the file's cache (FUSE's ``auto_inval_data``). A mapping does not
ask: a page faulted in during the write kept the old bytes after it completed, every
time (tests/posix/test_directio.py), as could a read(2) whose attributes were refreshed
between the write's start and its end.

So after a direct write to a file whose cache may hold pages, and before the write is
answered, cfs drops the file's cached pages itself (``FUSE_NOTIFY_INVAL_INODE``,
``pyfuse3.invalidate_inode``). A read answered before the write (the only source of
stale pages) is then dropped, whatever it left in the cache or in a mapping; one
answered after it has the new bytes. pyfuse3 offers the whole file only, not a range;
the kernel's ``auto_inval_data`` drops the whole file at the next read(2) anyway.

The kernel locks each page it drops, and a page being read stays locked until its READ
is answered, which only a FUSE worker can do: the notification is sent from a worker
thread while the handler lends its FUSE worker to the spares (cfs.fuse.session
``Workers``), so that the READ is answered and the drop completes. When no worker can
be lent (all spares already lent), the drop is skipped and counted (``skipped``):
waiting without one could deadlock the daemon.

Which files: only those with a handle open ``O_DIRECT`` (open flags reach ``open`` and
``create``; a flag set later with fcntl(2) does not reach the filesystem) whose cache
may hold pages: a read or a write through a handle without ``O_DIRECT`` was answered
since the last drop began. A program that only writes and reads directly (most
databases) pays nothing. Pages cached before a direct write started are dropped by the
kernel itself when it starts.

Concurrency: everything runs on the trio thread between awaits, but for the drop in its
worker thread, which touches no state of this class.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass

import pyfuse3
import trio

from cfs.fuse.session import Workers
from cfs.types import InodeId

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _DirectFile:
    handles: int = 0
    cached: bool = False
    """A read or write through a handle without O_DIRECT was answered since the last drop
    began: the kernel's cache may hold pages a direct write makes stale."""


def _drop_pages(ino: int) -> None:
    """In a worker thread: make the kernel drop the file's cached pages and attributes.
    ENOENT: the kernel holds no such inode, so no page of it either."""
    try:
        pyfuse3.invalidate_inode(ino)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("could not drop the cached pages of inode %d: %s", ino, exc)


class DirectWrites:
    """Files with handles open ``O_DIRECT``, and the drop of their cache after a direct
    write (see the module). Owned by the FUSE adapter."""

    def __init__(self, workers: Workers) -> None:
        self._workers = workers
        self._files: dict[InodeId, _DirectFile] = {}
        self.drops = 0
        """Drops sent."""
        self.skipped = 0
        """Drops skipped because no worker could be lent."""

    def opened(self, ino: InodeId) -> None:
        """A handle was opened O_DIRECT."""
        self._files.setdefault(ino, _DirectFile()).handles += 1

    def released(self, ino: InodeId) -> None:
        """A handle opened O_DIRECT was released; no direct write comes without one."""
        state = self._files.get(ino)
        if state is not None:
            state.handles -= 1
            if state.handles <= 0:
                del self._files[ino]

    def buffered(self, ino: InodeId) -> None:
        """A read or write through a handle without O_DIRECT is being answered."""
        state = self._files.get(ino)
        if state is not None:
            state.cached = True

    async def written(self, ino: InodeId) -> None:
        """A direct write was stored and is about to be answered: drop what the kernel
        may have cached of the file meanwhile, before the answer."""
        state = self._files.get(ino)
        if state is None or not state.cached:
            return
        if not self._workers.may_lend():
            self.skipped += 1
            log.warning("no FUSE worker to lend: the cached pages of inode %d are not dropped "
                        "after a direct write (%d skipped)", ino, self.skipped)
            return
        state.cached = False  # reads answered from now on have the new bytes, and set it again
        self.drops += 1
        with self._workers.lend():
            await trio.to_thread.run_sync(_drop_pages, ino)
