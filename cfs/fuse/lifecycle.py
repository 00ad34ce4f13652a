"""Mounting and ending the node's FUSE session: pyfuse3's ``init`` and ``close``, here so
that ``cfs.fuse`` stays the one package that imports pyfuse3.

One session per node, mounted at a private directory; volumes appear elsewhere as bind
mounts of its subdirectories (mountd.mounts). The request loop is ``cfs.fuse.session``.
"""

from __future__ import annotations

from pathlib import Path

import pyfuse3

from cfs.fuse import lowlevel
from cfs.fuse.adapter import Operations


def mount(operations: Operations, mountpoint: Path, *, allow_other: bool) -> None:
    """Mount the session (``default_permissions``: the kernel checks permissions).
    ``allow_other`` lets other users in, the kernel checking their permissions.
    Raises RuntimeError when the kernel refuses."""
    options = set(pyfuse3.default_options) | {"fsname=cfs", "subtype=cfs"}
    if allow_other:
        options.add("allow_other")
    lowlevel.arm(operations.fallocate)  # fallocate and O_TMPFILE, which pyfuse3 does not serve
    before = lowlevel.sessions()
    try:
        pyfuse3.init(operations, str(mountpoint), options)
    except BaseException:
        lowlevel.disarm()
        raise
    lowlevel.report(lowlevel.served(before))


def close() -> None:
    """End the session and unmount it (after the request loop has returned)."""
    pyfuse3.close(unmount=True)
    lowlevel.disarm()
