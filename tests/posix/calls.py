"""What the POSIX tests need beyond ``os``: errno assertions, raw system calls through
ctypes (fsync and fdatasync with their return values, renameat2, utimensat with
UTIME_OMIT, fallocate), and running calls as another user.

Calls as another user run in a child ``/usr/bin/python3`` (the test venv lives under
/root, which other users cannot enter) that has dropped to the given uid, gid and
supplementary groups; each statement's outcome comes back as an errno (0 for success).
"""

from __future__ import annotations

import ast
import ctypes
import ctypes.util
import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest

USER, GROUP = 1000, 1000
"""The unprivileged user the permission tests run as."""
OTHER_USER, OTHER_GROUP = 1001, 1001
"""A second user, who owns nothing the first one does."""
SYSTEM_PYTHON = "/usr/bin/python3"

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def name(code: int) -> str:
    return errno.errorcode.get(code, str(code)) if code else "success"


def fails(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> OSError:
    """Call ``fn`` and assert it fails with exactly ``code``."""
    try:
        result = fn(*args, **kwargs)
    except OSError as exc:
        assert exc.errno == code, f"{fn.__name__}: {name(exc.errno or 0)} ({exc}), expected {name(code)}"
        return exc
    if fn is os.open:
        os.close(result)
    pytest.fail(f"{fn.__name__} succeeded ({result!r}), expected {name(code)}")


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def fsync(fd: int) -> int:
    """fsync(2) itself, with its return value (``os.fsync`` drops it); OSError on -1."""
    return _check(_libc.fsync(fd))


def fdatasync(fd: int) -> int:
    """fdatasync(2) itself, with its return value; OSError on -1."""
    return _check(_libc.fdatasync(fd))


def renameat2(old: Path | str, new: Path | str, flags: int) -> None:
    """rename(2) with flags (RENAME_NOREPLACE, RENAME_EXCHANGE), which ``os`` does not offer."""
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), ctypes.c_uint(flags)))


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def utimensat(path: Path | str, atime: tuple[int, int], mtime: tuple[int, int], *, follow: bool = True) -> None:
    """utimensat(2) with (seconds, nanoseconds) pairs; nanoseconds may be UTIME_NOW or UTIME_OMIT."""
    times = (_Timespec * 2)(_Timespec(*atime), _Timespec(*mtime))
    _check(_libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0 if follow else AT_SYMLINK_NOFOLLOW))


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """The fallocate(2) system call itself: glibc's posix_fallocate would emulate it by writing."""
    _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _check(_libc.fallocate(fd, mode, offset, length))


class _Dirent(ctypes.Structure):
    """glibc's ``struct dirent`` on 64-bit Linux."""
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.rewinddir.argtypes = [ctypes.c_void_p]


def dirents(path: Path | str, each: Callable[[bytes], Any] | None = None) -> dict[bytes, tuple[int, int]]:
    """name -> (d_ino, d_type) of every entry but . and .., as readdir(3) returns them
    (``os.scandir`` hides d_type). ``each(name)`` runs after every entry is read, in
    the middle of the listing."""
    handle = _libc.opendir(os.fsencode(path))
    if not handle:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(path))
    found = {}
    try:
        while True:
            ctypes.set_errno(0)
            entry = _libc.readdir(handle)
            if not entry:
                if ctypes.get_errno():
                    raise OSError(ctypes.get_errno(), "readdir", str(path))
                return found
            name = entry.contents.d_name
            if name not in (b".", b".."):
                found[name] = (entry.contents.d_ino, entry.contents.d_type)
                if each is not None:
                    each(name)
    finally:
        _libc.closedir(handle)


class DirStream:
    """A directory stream of readdir(3), entry by entry, with telldir, seekdir and
    rewinddir (``os.scandir`` has none of them). A context manager: closedir at the end."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._dir = _libc.opendir(os.fsencode(path))
        if not self._dir:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), self.path)

    def __enter__(self) -> "DirStream":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir:
            _libc.closedir(self._dir)
            self._dir = None

    def read(self) -> tuple[bytes, int, int] | None:
        """The next entry as (name, d_ino, d_type), "." and ".." included; None at the end."""
        ctypes.set_errno(0)
        entry = _libc.readdir(self._dir)
        if not entry:
            if ctypes.get_errno():
                raise OSError(ctypes.get_errno(), "readdir", self.path)
            return None
        return entry.contents.d_name, entry.contents.d_ino, entry.contents.d_type

    def rest(self) -> list[tuple[bytes, int, int]]:
        """Every entry from here to the end."""
        out = []
        while (entry := self.read()) is not None:
            out.append(entry)
        return out

    def tell(self) -> int:
        return int(_libc.telldir(self._dir))

    def seek(self, position: int) -> None:
        _libc.seekdir(self._dir, position)

    def rewind(self) -> None:
        _libc.rewinddir(self._dir)


def listing(path: Path | str) -> list[tuple[bytes, int, int]]:
    """(name, d_ino, d_type) of every entry, "." and ".." included, in readdir(3) order."""
    with DirStream(path) as stream:
        return stream.rest()


# --- as another user --------------------------------------------------------------

_CHILD = r"""
import errno, json, os, socket, stat, sys
names = json.loads(sys.argv[1])
globals().update(names)
results = []
for statement in json.loads(sys.argv[2]):
    try:
        value = eval(compile(statement, "<as-user>", "eval"))
        results.append([0, repr(value)])
    except OSError as exc:
        results.append([exc.errno, None])
print(json.dumps(results))
"""


def run_as(statements: Sequence[str], *, uid: int = USER, gid: int = GROUP, groups: Sequence[int] = (),
           **names: Any) -> list[tuple[int, Any]]:
    """Evaluate each expression in a child running as ``uid``/``gid``; ``names`` (str, int,
    bytes as latin-1 str, ...) are its globals. Returns (errno, value) per expression:
    errno 0 and the value (through repr/literal_eval) on success, the errno and None on
    OSError."""
    def demote() -> None:
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
        os.umask(0o022)

    plain = {k: str(v) if isinstance(v, Path) else v for k, v in names.items()}
    proc = subprocess.run([SYSTEM_PYTHON, "-c", _CHILD, json.dumps(plain), json.dumps(list(statements))],
                          capture_output=True, text=True, timeout=60, cwd="/", preexec_fn=demote,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert proc.returncode == 0, f"child failed: {proc.stderr}"
    out = []
    for code, value in json.loads(proc.stdout):
        try:
            out.append((code, ast.literal_eval(value) if value is not None else None))
        except (ValueError, SyntaxError):
            out.append((code, value))
    return out


def errnos_as(statements: Sequence[str], **kwargs: Any) -> list[str]:
    """Like ``run_as``, but only each expression's outcome as an errno name or "success"."""
    return [name(code) for code, _value in run_as(statements, **kwargs)]


# --- time -------------------------------------------------------------------------

OLD_NS = 1_000_000_000 * 10**9 + 123_456_789
"""A time long past (2001) with nanoseconds, set on inodes so a test sees what an operation moves."""


def age(*paths: Path) -> None:
    """Set atime and mtime of ``paths`` (not following symlinks) to OLD_NS, and let the
    clock move on so a later ctime is strictly greater than the one they have now."""
    for path in paths:
        os.utime(path, ns=(OLD_NS, OLD_NS), follow_symlinks=False)
    time.sleep(0.01)


def times(path: Path) -> tuple[int, int, int]:
    """(atime, mtime, ctime) in nanoseconds, not following symlinks."""
    st = os.lstat(path)
    return st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns


# --- file handles -----------------------------------------------------------------

MAX_HANDLE_SZ = 128
AT_HANDLE_FID = 0x200


class FileHandle(ctypes.Structure):
    """``struct file_handle`` with room for the largest handle the kernel hands out."""
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]

    def raw(self) -> tuple[int, bytes]:
        """(type, bytes): what identifies the inode, for comparing two handles."""
        return self.handle_type, bytes(self.f_handle[:self.handle_bytes])


def name_to_handle_at(path: Path | str, flags: int = 0) -> FileHandle:
    """name_to_handle_at(2) on ``path`` (the mount id is dropped)."""
    handle = FileHandle(handle_bytes=MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    _check(_libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(handle), ctypes.byref(mount_id),
                                   flags))
    return handle


def open_by_handle_at(mount_fd: int, handle: FileHandle, flags: int) -> int:
    """open_by_handle_at(2): a descriptor of the inode ``handle`` names, on the filesystem
    of ``mount_fd`` (needs CAP_DAC_READ_SEARCH)."""
    return _check(_libc.open_by_handle_at(mount_fd, ctypes.byref(handle), flags))


def drop_inode_caches() -> None:
    """Make the kernel forget every dentry and inode nobody uses (``echo 2 >
    /proc/sys/vm/drop_caches``, machine-wide): a FUSE filesystem gets a FORGET for each,
    and a handle must then be resolved by the filesystem itself."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


# --- asynchronous I/O (Linux AIO, as libaio and fio's libaio engine use it) ---------

_SYS_IO_SETUP, _SYS_IO_DESTROY, _SYS_IO_GETEVENTS, _SYS_IO_SUBMIT = 206, 207, 208, 209  # x86_64
IOCB_CMD_PWRITE = 1


class _Iocb(ctypes.Structure):
    _fields_ = [("aio_data", ctypes.c_uint64), ("aio_key", ctypes.c_uint32), ("aio_rw_flags", ctypes.c_int32),
                ("aio_lio_opcode", ctypes.c_uint16), ("aio_reqprio", ctypes.c_int16),
                ("aio_fildes", ctypes.c_uint32), ("aio_buf", ctypes.c_uint64), ("aio_nbytes", ctypes.c_uint64),
                ("aio_offset", ctypes.c_int64), ("aio_reserved2", ctypes.c_uint64), ("aio_flags", ctypes.c_uint32),
                ("aio_resfd", ctypes.c_uint32)]


class _IoEvent(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64), ("obj", ctypes.c_uint64), ("res", ctypes.c_int64),
                ("res2", ctypes.c_int64)]


def _syscall(*args: Any) -> int:
    return _check(_libc.syscall(*args))


class Aio:
    """A Linux AIO context (io_setup(2)): writes that io_submit(2) starts and returns from
    at once, their completion collected by io_getevents(2). Raw system calls, so neither
    libaio nor an architecture other than x86_64 is needed... or allowed."""

    def __init__(self, depth: int) -> None:
        if os.uname().machine != "x86_64":
            pytest.skip("Linux AIO system call numbers are x86_64's here")
        self._ctx = ctypes.c_ulong(0)
        _syscall(_SYS_IO_SETUP, depth, ctypes.byref(self._ctx))

    def write(self, fd: int, address: int, length: int, offset: int) -> None:
        """Submit one write of ``length`` bytes from ``address`` and return at once."""
        iocb = _Iocb(aio_lio_opcode=IOCB_CMD_PWRITE, aio_fildes=fd, aio_buf=address, aio_nbytes=length,
                     aio_offset=offset)
        _syscall(_SYS_IO_SUBMIT, self._ctx, 1, ctypes.byref(ctypes.pointer(iocb)))

    def wait(self) -> int:
        """Wait for one submitted operation to complete; its result (bytes, or -errno)."""
        event = _IoEvent()
        _syscall(_SYS_IO_GETEVENTS, self._ctx, 1, 1, ctypes.byref(event), None)
        return event.res

    def close(self) -> None:
        _syscall(_SYS_IO_DESTROY, self._ctx)
