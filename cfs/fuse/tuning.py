"""Kernel-side settings of the node's FUSE connection that the FUSE protocol cannot set.

Read-ahead: the kernel proposes its default read-ahead (128 KiB) in the INIT request,
and the filesystem may only lower it. With 128 KiB a sequential read reaches the daemon
as 128 KiB requests, each paying the full per-request cost of a Python handler. The
connection's backing device (``/sys/class/bdi/MAJOR:MINOR``, the mount's ``st_dev``)
takes a larger window from root after INIT, which with libfuse's 1 MiB ``max_pages``
turns sequential reads into 1 MiB requests: 1.5x the throughput on the machine of
docs/PERFORMANCE.md. Random reads are unaffected (the kernel reads ahead only what it
sees read in order). The setting belongs to this mount alone and goes with it.

Setting it needs root and sysfs; without them the daemon runs with the kernel's
default, and says so at debug level.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

READ_AHEAD_KIB = 1024
SYS_BDI = Path("/sys/class/bdi")


def bdi_dir(mountpoint: Path, sys_bdi: Path = SYS_BDI) -> Path:
    """The sysfs directory of the backing device of the FUSE mount at ``mountpoint``."""
    dev = os.stat(mountpoint).st_dev
    return sys_bdi / f"{os.major(dev)}:{os.minor(dev)}"


def raise_read_ahead(mountpoint: Path, kib: int = READ_AHEAD_KIB, sys_bdi: Path = SYS_BDI) -> bool:
    """Raise the mount's read-ahead window to ``kib`` (never lower it); True if set.

    Call it after the kernel's INIT request was answered (any system call on the mount
    waits for that), or INIT's reply clamps the window back down.
    """
    try:
        knob = bdi_dir(mountpoint, sys_bdi) / "read_ahead_kb"
        current = int(knob.read_text())
        if current >= kib:
            return False
        knob.write_text(f"{kib}\n")
    except (OSError, ValueError) as exc:
        log.debug("kept the kernel's read-ahead for %s: %s", mountpoint, exc)
        return False
    log.info("read-ahead of %s raised from %d to %d KiB", mountpoint, current, kib)
    return True
