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
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def mapped_file_bytes() -> int:
    """File-backed resident memory of this process (RssFile), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
    return 0


def release(path: Path) -> int:
    """Unmap the resident pages of every mapping of ``path``; how many bytes were covered."""
    target = os.fspath(path)
    covered = 0
    with open("/proc/self/maps") as maps:
        regions = [line.split(maxsplit=5) for line in maps]
    for fields in regions:
        if len(fields) == 6 and fields[5].rstrip("\n") == target:
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if _libc.madvise(lo, hi - lo, MADV_DONTNEED) != 0:
                err = ctypes.get_errno()
                log.warning("madvise of %s failed: %s", target, os.strerror(err))
                continue
            covered += hi - lo
    return covered
