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
time (tests/posix/test_directio.py), as can a read(2) whose attributes were refreshed
between the write's start and its end.

So after a direct write, and before it is answered, cfs has the kernel drop the written
range's cached pages (``FUSE_NOTIFY_INVAL_INODE`` with an offset and a length) when a
read or write through a handle without ``O_DIRECT`` was answered in that range since
its last drop began. A page stale for the write comes from a read answered before the
write was stored, so it is gone before the writer learns of the completion; a read
answered after it has the new bytes. pyfuse3 sends this notification for whole files
only; cfs writes the 40-byte message to the FUSE device itself (``Workers.device``),
as libfuse's ``fuse_lowlevel_notify_inval_inode`` does. Ranges are tracked in chunks of
``CHUNK`` bytes: a drop covers the written range's chunks.

The kernel locks each page it drops, and a page being read stays locked until its READ
is answered, which only a FUSE worker can do: the notification is sent from a worker
thread while the handler lends its FUSE worker to the spares (cfs.fuse.session
``Workers``), so that the READ is answered and the drop completes. A lent handler holds
its answer, and for an asynchronous write a background slot of the kernel's, so at most
``LEND_LIMIT`` are lent; a write that finds none left skips its drop (``skipped``, with
a warning), as waiting could deadlock the daemon. A drop itself takes some 20 µs; the
hop to a worker thread and back took 1–3 ms on average on a loaded two-core machine,
up to 50 ms, and writes that come meanwhile wait too: in 8 s of a mixed fio job (64 KiB
direct writes at depth 16, 4 KiB buffered reads of the same file) 0 to 8 writes found
no worker left. Whole-file drops, which also waited for every page being read anywhere
in the file, skipped 469.

Which files: only those with a handle open ``O_DIRECT`` (open flags reach ``open`` and
``create``; a flag set later with fcntl(2) does not reach the filesystem). A program
that only writes and reads directly (most databases) pays nothing, and neither does a
chunk not read through the cache since its last drop. Pages cached before a direct
write started are dropped by the kernel itself when it starts.

Concurrency: everything runs on the trio thread between awaits, but for the drop in its
worker thread, which touches no state of this class.
"""

from __future__ import annotations

import errno
import logging
import os
import struct
from dataclasses import dataclass, field

import pyfuse3
import trio

from cfs.fuse.session import Workers
from cfs.types import InodeId

log = logging.getLogger(__name__)

CHUNK = 64 << 10
"""Granularity of the ranges tracked and dropped. A drop waits for every page being read
in its range, so the smaller the range, the less a write waits for a reader of other
parts of the file (the size of a database page or an extent, not of a FUSE request).
The marks cost a set entry per chunk read, for files with an O_DIRECT handle only."""

FUSE_NOTIFY_INVAL_INODE = 2
_INVAL_INODE = struct.Struct("=IiQQqq")
"""``struct fuse_out_header`` (len, error: the notify code, unique: 0), then
``struct fuse_notify_inval_inode_out`` (ino, off, len): linux/fuse.h."""


@dataclass(slots=True)
class _DirectFile:
    handles: int = 0
    read: set[int] = field(default_factory=set)
    """Chunks with a read or write through a handle without O_DIRECT answered since the
    last drop of them began: the kernel's cache may hold pages a direct write makes stale."""
    dropping: dict[int, trio.Event] = field(default_factory=dict)
    """Chunks whose drop is under way, each with the event set when that drop ends."""


def _chunks(offset: int, length: int) -> range:
    return range(offset // CHUNK, (offset + max(length, 1) - 1) // CHUNK + 1)


def _drop_range(device: int | None, ino: int, offset: int, length: int) -> None:
    """In a worker thread: make the kernel drop the cached pages of a range (all of the
    file without the device) and the file's attributes. ENOENT: the kernel holds no
    such inode, so no page of it either."""
    try:
        if device is None:
            pyfuse3.invalidate_inode(ino)
        else:
            os.write(device, _INVAL_INODE.pack(_INVAL_INODE.size, FUSE_NOTIFY_INVAL_INODE, 0, ino, offset, length))
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

    def buffered(self, ino: InodeId, offset: int, length: int) -> None:
        """A read or write of a range through a handle without O_DIRECT is being answered."""
        state = self._files.get(ino)
        if state is not None:
            state.read.update(_chunks(offset, length))

    async def written(self, ino: InodeId, offset: int, length: int) -> None:
        """A direct write of a range was stored and is about to be answered: return once
        what the kernel may have cached of the range before now is dropped.

        A chunk read through the cache since its last drop began is dropped now; one
        whose drop is under way (begun before now) is waited for; any other holds
        nothing older than its last drop, which has ended.
        """
        state = self._files.get(ino)
        if state is None:
            return
        chunks = _chunks(offset, length)
        stale = [n for n in chunks if n in state.read]
        running = {state.dropping[n] for n in chunks if n not in state.read and n in state.dropping}
        if not stale and not running:
            return
        if not self._workers.may_lend():
            self.skipped += 1
            log.warning("no FUSE worker to lend: the cached pages of inode %d are not dropped "
                        "after a direct write (%d skipped)", ino, self.skipped)
            return
        with self._workers.lend():
            if stale:
                await self._drop(ino, state, stale)
            for event in running:
                await event.wait()

    async def _drop(self, ino: InodeId, state: _DirectFile, chunks: list[int]) -> None:
        done = trio.Event()
        for n in chunks:
            state.read.discard(n)  # reads answered from now on have the new bytes, and mark it again
            state.dropping[n] = done
        self.drops += 1
        try:
            await trio.to_thread.run_sync(_drop_range, self._workers.device, ino, chunks[0] * CHUNK,
                                          (chunks[-1] + 1 - chunks[0]) * CHUNK)
        finally:
            done.set()
            for n in chunks:
                if state.dropping.get(n) is done:
                    del state.dropping[n]
