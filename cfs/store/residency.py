"""Keeping the LMDB map's resident pages in check.

The store's pages are read through a shared file mapping. Every page the process
touches stays mapped (and counted in its RSS) until the mapping goes, and the kernel
maps the cached pages around each fault too ("fault-around", 64 KiB, and whole large
folios of the page cache): a daemon that writes 10 GiB touches B-tree pages all over
the file and ends up with gigabytes of file pages in its RSS, although they are clean
page cache the kernel could drop at any time, and nothing of it is the daemon's own
memory. ``MappedPages`` keeps that in bounds.

``release(path)`` drops the process's page-table entries for the map with
``madvise(MADV_DONTNEED)``. For a shared file mapping that only unmaps: the pages stay
in the page cache, nothing is written or lost, and the next access faults them back in
(a minor fault). It is safe while transactions are open: LMDB without WRITEMAP never
writes through the map, and readers simply fault again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MADV_DONTNEED = 4
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def _regions(path: Path) -> list[tuple[int, int, int]]:
    """(start, end, offset in the file) of every mapping of ``path`` in this process."""
    target = os.fspath(path)
    with open("/proc/self/maps") as maps:
        rows = [line.split(maxsplit=5) for line in maps]
    out = []
    for fields in rows:
        if len(fields) == 6 and fields[5].rstrip("\n") == target:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            out.append((lo, hi, int(fields[2], 16)))
    return out


def release(path: Path) -> int:
    """Unmap the resident pages of every mapping of ``path``; how many bytes were covered.

    Only the part of a mapping the file fills can hold pages, so only that part is
    walked: the map reserves far more address space than the file uses (cfs.store), and
    walking the page tables of all of it costs milliseconds.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return 0
    covered = 0
    for lo, hi, offset in _regions(path):
        hi = min(hi, lo + max(0, size - offset))
        if hi <= lo:
            continue
        if _libc.madvise(lo, hi - lo, MADV_DONTNEED) != 0:
            err = ctypes.get_errno()
            log.warning("madvise of %s failed: %s", path, os.strerror(err))
            continue
        covered += hi - lo
    return covered


class MappedPages:
    """Keeps the resident pages of one map under a limit, checked while the work is done.

    Checking only at commits is not enough: one operation (the flush of the write-back
    cache, deleting a large file) can touch hundreds of MiB of the map between two
    commits, and on a kernel whose page cache holds large folios one touch can map a
    whole folio (measured: ~1.4 MiB per chunk deleted from a file written in large
    runs). So every operation (``Store.op``) notes each chunk value it reads, writes or
    deletes, every 64 rows a range scan of it passes, and itself once it ends; every
    ``every`` notes the resident shared pages are read from ``/proc/self/statm`` (a
    kept-open file, a few microseconds) and released above ``limit_bytes``.

    Reads outside operations (``Store.view``: read, lookup, readdir) are not noted: a
    reader that comes back to chunks it read would fault them in again after every
    release, and that cost random 4 KiB reads of a 1 GiB file a quarter of their rate
    (8,200-8,700 against 11,300-11,700 IOPS, alternating runs). What they map stays
    mapped until the next check: an operation's, or a commit's (the daemon's timer
    commits every second, an empty batch included). A commit releases above twice the
    limit, so a reader's working set is unmapped less often (docs/PERFORMANCE.md,
    "Fourth round").

    ``statm`` counts file-backed and shared-memory pages together; the daemon has no
    shared memory of its own, so that is the map (and LMDB's small lock file).
    """

    def __init__(self, path: Path, limit_bytes: int, every: int = 32) -> None:
        self.path = path
        self.limit_bytes = limit_bytes
        self.every = every
        self.releases = 0
        self._notes = 0
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC) if limit_bytes else -1

    def note(self) -> None:
        """An operation did a piece of work that may map pages (see above)."""
        self._notes += 1
        if self._notes >= self.every:
            self.check()

    def resident_bytes(self) -> int:
        """File-backed and shared resident memory of this process, in bytes."""
        return int(os.pread(self._statm, 256, 0).split()[2]) * self._page

    def check(self, limit_bytes: int | None = None) -> bool:
        """Release the map's pages if the process holds more than ``limit_bytes`` (default:
        the limit); True if it did."""
        self._notes = 0
        limit = self.limit_bytes if limit_bytes is None else limit_bytes
        if self._statm < 0 or not limit or self.resident_bytes() <= limit:
            return False
        release(self.path)
        self.releases += 1
        return True

    def close(self) -> None:
        if self._statm >= 0:
            os.close(self._statm)
            self._statm = -1
