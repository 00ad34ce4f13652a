"""Mount points on the host: checking them, bind-mounting volumes there, cleaning up.

The node has one FUSE session mounted at a hidden directory; each volume appears at a
host path as a bind mount of ``<fuse root>/<volume>``. The kernel then keeps volumes
apart (a hard link or rename between two bind mounts is EXDEV) and a read-only bind
gives EROFS, while one daemon and one LMDB environment serve them all.

Every function here makes blocking system calls on paths that may lead into our own FUSE
session, so the daemon calls them in a worker thread, never on the trio thread that
answers FUSE requests (that would deadlock).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
from pathlib import Path

from cfs.errors import UserError

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount_points() -> set[str]:
    """Every mount point of this mount namespace, from /proc/self/mountinfo."""
    points = set()
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            field = line.split(b" ")[4]
            points.add(_unescape(field).decode("utf-8", "surrogateescape"))
    return points


def _unescape(field: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(field):
        if field[i:i + 1] == b"\\" and field[i + 1:i + 4].isdigit():
            out.append(int(field[i + 1:i + 4], 8))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return bytes(out)


def is_mount_point(path: Path) -> bool:
    return str(path) in mount_points()


def is_stale(path: Path) -> bool:
    """A mount whose FUSE server died answers ENOTCONN to everything."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def check_target(path: str) -> Path:
    """The mount point a person named, or a ``UserError`` saying what is wrong with it."""
    if not path:
        raise UserError("mount point is empty")
    target = Path(os.path.abspath(path))
    if is_stale(target):
        raise UserError(f"{target} is a dead mount ('Transport endpoint is not connected'); run: umount -l {target}")
    if not target.exists():
        raise UserError(f"mount point {target} does not exist")
    if not target.is_dir():
        raise UserError(f"mount point {target} is not a directory")
    target = target.resolve()
    if is_mount_point(target):
        raise UserError(f"{target} is already a mount point")
    return target  # not empty is fine: the mount hides what is there, as mount(8)'s always did


def wait_for_change(table: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for this namespace's mount table to change (a mount
    or unmount anywhere in it: the kernel marks an open /proc/self/mountinfo ``POLLPRI``
    once per change). ``table`` is a descriptor of that file; True if it changed."""
    poller = select.poll()
    poller.register(table, select.POLLPRI | select.POLLERR)
    return bool(poller.poll(int(timeout * 1000)))


def bind(source: Path, target: Path, read_only: bool = False) -> None:
    _check(_libc.mount(str(source).encode(), str(target).encode(), None, MS_BIND, None),
           f"bind-mounting {source} on {target}")
    if read_only:
        _check(_libc.mount(None, str(target).encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY, None),
               f"making {target} read-only")


def unmount(target: Path, lazy: bool = False) -> None:
    _check(_libc.umount2(str(target).encode(), MNT_DETACH if lazy else 0), f"unmounting {target}")


def unmount_if_mounted(target: Path) -> bool:
    """Lazily detach ``target`` if it is a mount point (a leftover of a crashed daemon)."""
    if str(target) in mount_points():
        unmount(target, lazy=True)
        return True
    return False
