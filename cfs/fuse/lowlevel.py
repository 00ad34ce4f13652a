"""fallocate(2) and O_TMPFILE: the two requests pyfuse3 does not serve.

pyfuse3 (3.5) registers no fallocate handler with libfuse, and libfuse 3.14 (Debian 12)
has no tmpfile handler to register: the kernel is told ENOSYS and answers EOPNOTSUPP to
every later call. A small C extension of ours (``cfs/fuse/_lowlevel.c``, built at
install time against the same libfuse headers as pyfuse3) defines the two libfuse
functions pyfuse3 goes through, ``fuse_session_new`` and ``fuse_session_process_buf``,
and calls libfuse's own from them. Made part of the process's global symbol scope
before pyfuse3 calls libfuse, its definitions are the ones pyfuse3's calls bind to, as
an LD_PRELOAD library's would be:

- ``fuse_session_new`` adds a fallocate handler to pyfuse3's handler table (libfuse
  copies the table there, so this is the one moment it can be added). A FUSE_FALLOCATE
  request then reaches ``_on_fallocate`` here, on the trio thread inside pyfuse3's
  request loop; it runs the adapter's ``fallocate`` as a task of the session's nursery
  (``serving``), which answers through libfuse's ``fuse_reply_err``, once.
- ``fuse_session_process_buf`` turns a FUSE_TMPFILE request into the FUSE_CREATE it is
  laid out as; its name, ``/`` (``TMPFILE_NAME``), is one no create can carry, and
  pyfuse3's create handler passes it to the adapter, which makes an unnamed file.

This depends on nothing inside pyfuse3, only on its calling libfuse by name (any
pyfuse3 linked against libfuse does) and on libfuse's public interface (the handler
table's layout is from the installed header; pyfuse3 is built against the same one;
from libfuse 3.17 on that header makes ``fuse_session_new`` a call of
``fuse_session_new_versioned``, which is then the one wrapped). If a future pyfuse3
registers fallocate itself, the C side leaves its handler alone. The handler runs the
adapter in a task because libfuse calls it inside pyfuse3's loop, which awaits only
the coroutines of pyfuse3's own handlers.

Error handling: every way this can fail leaves today's behaviour, EOPNOTSUPP from the
kernel, and a warning at mount naming the reason: the extension not built (ImportError),
libfuse's functions resolving elsewhere first (libfuse preloaded, or pyfuse3 bound to it
before this module was loaded: ``cfs.fuse`` imports this module before anything imports
pyfuse3), a pyfuse3 whose session did not go through the wrapper. A handler that raises
something without an ``errno`` is logged and answered EIO. Nothing here can stop the
daemon from starting.

Resource handling: one session per process, as pyfuse3's own state is. ``arm`` before
``pyfuse3.init``, ``disarm`` after ``pyfuse3.close``; fallocate requests run in the
nursery given to ``serving``, which must outlive them (they are answered EINTR when
cancelled), and which the request loop's caller closes before the session is destroyed.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Awaitable, Callable, Iterator

import trio

log = logging.getLogger(__name__)

TMPFILE_NAME = b"/"
"""The name a create carries when it is an O_TMPFILE open (the kernel's own name for the
unnamed dentry); no directory entry can have it."""

FallocateHandler = Callable[[int, int, int, int], Awaitable[None]]
"""``handler(fh, mode, offset, length)``; raises an exception with an ``errno`` (pyfuse3's
FUSEError) to fail."""


def _load() -> tuple[ModuleType | None, str | None]:
    """The extension, made part of the global symbol scope; or None and why not."""
    try:
        import cfs.fuse._lowlevel as _lowlevel
    except ImportError as exc:
        return None, f"the extension cfs.fuse._lowlevel is not built ({exc})"
    path = _lowlevel.__file__
    assert path is not None
    try:  # promote the loaded object: RTLD_NOLOAD opens nothing new
        ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_GLOBAL | os.RTLD_NOW)
    except OSError as exc:
        return None, f"the extension cannot be made global ({exc})"
    return _lowlevel, None


_ext, _unavailable = _load()
_handler: FallocateHandler | None = None
_nursery: trio.Nursery | None = None


@dataclass(frozen=True)
class Served:
    """What the session serves beyond pyfuse3, and if not, why not."""

    fallocate: bool
    tmpfile: bool
    reason: str | None = None


def arm(fallocate: FallocateHandler) -> None:
    """Before ``pyfuse3.init``: the session it makes will serve fallocate (through
    ``fallocate``) and O_TMPFILE (through the create handler, ``TMPFILE_NAME``)."""
    global _handler
    _handler = fallocate
    if _ext is not None:
        _ext.arm(_on_fallocate)


def disarm() -> None:
    """After ``pyfuse3.close``."""
    global _handler
    _handler = None
    if _ext is not None:
        _ext.disarm()


def served(sessions_before: int) -> Served:
    """After ``pyfuse3.init``, given ``sessions()`` from before it: what is in place."""
    if _ext is None:
        return Served(False, False, _unavailable)
    status = _ext.status()
    fallocate = status["sessions"] > sessions_before
    tmpfile = fallocate and status["process_buf_bound"]
    reason = None
    if not status["session_new_bound"] or not status["process_buf_bound"]:
        reason = "libfuse's functions resolve elsewhere first (libfuse preloaded, or loaded before cfs.fuse?)"
    elif not fallocate:
        reason = "pyfuse3 did not make its session through the wrapper"
    return Served(fallocate, tmpfile, reason)


def sessions() -> int:
    """Sessions made with the fallocate handler so far in this process."""
    return 0 if _ext is None else int(_ext.status()["sessions"])


def report(what: Served) -> None:
    """One log line at mount: what is served, or why it is not."""
    if what.fallocate and what.tmpfile:
        log.info("fallocate(2) and O_TMPFILE are served (cfs.fuse.lowlevel)")
        return
    missing = " and ".join(name for name, ok in (("fallocate(2)", what.fallocate), ("O_TMPFILE", what.tmpfile))
                           if not ok)
    log.warning("%s not served, the kernel answers EOPNOTSUPP: %s", missing, what.reason)


@contextmanager
def serving(nursery: trio.Nursery) -> Iterator[None]:
    """While inside, fallocate requests run as tasks of ``nursery``."""
    global _nursery
    _nursery = nursery
    try:
        yield
    finally:
        _nursery = None


def _on_fallocate(req: int, ino: int, mode: int, offset: int, length: int, fh: int) -> None:
    """Called by the C handler on the trio thread, inside pyfuse3's request loop. Raising
    makes the C side answer EIO; not raising promises one answer through ``_answer``."""
    if _nursery is None or _handler is None:
        raise RuntimeError("a fallocate request came while no nursery serves them")
    _nursery.start_soon(_answer, req, _handler, fh, mode, offset, length)


async def _answer(req: int, handler: FallocateHandler, fh: int, mode: int, offset: int, length: int) -> None:
    code = errno.EINTR  # cancelled before it was served: the session is ending
    try:
        await handler(fh, mode, offset, length)
        code = 0
    except Exception as exc:
        found = getattr(exc, "errno", None)
        if isinstance(found, int) and found > 0:
            code = found
        else:
            log.exception("fallocate failed; answering EIO")
            code = errno.EIO
    finally:
        assert _ext is not None
        sent = _ext.reply_err(req, code)
        if sent:
            log.debug("fallocate reply not delivered: %s", os.strerror(-sent))
