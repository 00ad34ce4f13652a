"""The store's reserve file: disk space held back so that a full disk can still be emptied.

The store stops taking new data while the disk's free space is below the reserve
(``Store._admit``), so its own data never eats the space that deletes, volume removal,
mounts and a restart need. That rule cannot stop another program from filling the
disk (logs, images, a second store): then LMDB cannot even write the pages of a delete,
and the node's control plane is locked out with the disk. So the reserve is also held
as a file of the same size beside the map, allocated with ``posix_fallocate`` (blocks
on the disk, not a sparse promise).

* When the disk's free space falls below half the reserve, which the store's own
  writes never cause, the file is given up: its blocks serve the deletes and control
  writes. Meanwhile the store counts the missing file against its free space
  (``missing``), so new data cannot take those blocks.
* Once the disk has room for the file and one and a half reserves besides, it is taken
  back.

CockroachDB keeps an "emergency ballast" file for the same reason.

Not thread-safe: owned by the ``Store`` and used on its thread.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MiB = 1 << 20


class ReserveFile:
    """A file of ``size`` allocated bytes at ``path``, held or given up as space allows."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        try:
            self.held = os.stat(path).st_blocks * 512
            """Bytes the file holds on the disk (0: given up, or never taken)."""
        except FileNotFoundError:
            self.held = 0
        self.supported = True
        """False once the filesystem refused to allocate: the file is not asked for again."""

    @property
    def missing(self) -> int:
        """Bytes of the reserve not held in the file: the store counts them as used."""
        return max(0, self.size - self.held) if self.size else 0

    def adjust(self, disk_free: int) -> None:
        """Give the file up when ``disk_free`` (what statvfs says is free, outside the
        file) is below half the reserve; take it back when the disk has room for it and
        one and a half reserves besides. A size of 0 (a store opened by a tool) leaves
        the file as it is."""
        if not self.size:
            return
        if self.held and disk_free < self.size // 2:
            self._release(disk_free)
        elif self.missing and self.supported and disk_free - self.missing >= self.size + self.size // 2:
            self._take()

    def _take(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("could not create the store's reserve file %s: %s", self.path, exc.strerror)
            return
        try:
            os.posix_fallocate(fd, 0, self.size)
            os.ftruncate(fd, self.size)  # a larger file from a larger reserve before
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, 0)
            self.held = 0
            self.supported = exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS)
            log.warning("could not set aside the store's %d MiB reserve file: %s%s", self.size // MiB,
                        exc.strerror, "" if self.supported else " (not asked again)")
            return
        finally:
            os.close(fd)
        self.held = self.size
        log.info("set aside %d MiB in %s for deletes and control operations", self.size // MiB, self.path)

    def _release(self, disk_free: int) -> None:
        held, self.held = self.held, 0
        os.truncate(self.path, 0)
        log.warning("the store's disk is full (%d MiB free): gave up the %d MiB reserve file so that "
                    "deletes and control operations can run; free space on the disk to take it back",
                    max(disk_free, 0) // MiB, held // MiB)
