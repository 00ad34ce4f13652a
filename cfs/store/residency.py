"""Keeping the LMDB map's resident pages in check.

The store's pages are read through a shared file mapping. Every page the process
touches stays mapped (and counted in its RSS) until the mapping goes, and the kernel
maps the cached pages around each fault too ("fault-around", 64 KiB): a daemon that
writes 10 GiB touches B-tree pages all over the file and ends up with gigabytes of
file pages in its RSS, although they are clean page cache the kernel could drop at
any time, and nothing of it is the daemon's own memory.

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
MADV_NOHUGEPAGE = 15
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def mapped_file_bytes() -> int:
    """File-backed resident memory of this process (RssFile), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    return 0


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


def map_small_pages(path: Path) -> int:
    """Ask the kernel to map ``path``'s pages 4 KiB at a time (MADV_NOHUGEPAGE); how many
    bytes of mappings were marked.

    The page cache of a file written in large runs holds large folios (2 MiB on ext4
    since Linux 6.x), and a read fault inside one maps the whole folio with one PMD: a
    lookup in the B-tree that needs one 4 KiB page puts 2 MiB into the daemon's RSS.
    Measured: two thirds of the map's resident pages were such PMD mappings
    (``FilePmdMapped`` in /proc/PID/smaps). With the mark, a fault maps at most the
    kernel's fault-around window (64 KiB). Done again after every remap (the map grows).
    """
    marked = 0
    for lo, hi, _ in _regions(path):
        if _libc.madvise(lo, hi - lo, MADV_NOHUGEPAGE) != 0:
            err = ctypes.get_errno()
            log.warning("madvise(MADV_NOHUGEPAGE) of %s failed: %s", path, os.strerror(err))
            continue
        marked += hi - lo
    return marked


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
    cache, deleting a large file) or a long read can touch hundreds of MiB of the map
    between two commits, and on a kernel whose page cache holds large folios one touch
    can map a whole folio (measured: ~1.4 MiB per chunk deleted from a file written in
    large runs). So the store calls ``note()`` for every chunk value it reads, writes or
    deletes, every 64 rows a range scan passes, and every operation and view; every
    ``every`` notes the resident shared pages are read from ``/proc/self/statm`` (a
    kept-open file, a few microseconds) and released above ``limit_bytes``.

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
        """One chunk value was read, written or deleted through the map."""
        self._notes += 1
        if self._notes >= self.every:
            self.check()

    def resident_bytes(self) -> int:
        """File-backed and shared resident memory of this process, in bytes."""
        return int(os.pread(self._statm, 256, 0).split()[2]) * self._page

    def check(self) -> bool:
        """Release the map's pages if the process holds more than the limit; True if it did."""
        self._notes = 0
        if self._statm < 0 or self.resident_bytes() <= self.limit_bytes:
            return False
        release(self.path)
        self.releases += 1
        return True

    def close(self) -> None:
        if self._statm >= 0:
            os.close(self._statm)
            self._statm = -1
