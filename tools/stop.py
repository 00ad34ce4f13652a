"""``cfs node stop``: ask the local daemon to stop, and wait until it is gone.

The daemon answers the ``node.stop`` request at once and stops as on SIGTERM, within its
``--stop-timeout`` (mountd.cluster.stopping). It is gone when it has released the data
directory's lock (``mountd.lock``, held from its start to the end of its run, after the
store is closed) and, if its process is visible here (same PID namespace), that process
has exited. Taking the lock to see whether it is free is a shared, non-blocking flock
released at once: a daemon starting in that instant is refused with a clear message.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from typing import Any

from cfs.errors import CfsError
from mountd.config import DaemonConfig
from tools.client import DaemonNotRunning, call

DEFAULT_TIMEOUT = 60.0
"""Seconds ``cfs node stop`` waits: well above the daemon's default stop bound (10 s)."""
POLL_SECONDS = 0.05


def stop(config: DaemonConfig, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Stop the daemon of ``config.data_dir``; {"pid", "seconds"} once it is gone."""
    if timeout <= 0:
        raise CfsError("--timeout must be positive")
    started = time.monotonic()
    try:
        reply = call(config.socket_path, "node.stop", timeout=min(timeout, 30))
    except DaemonNotRunning as exc:
        holder = lock_holder(config.data_dir / "mountd.lock")
        if holder is None:
            raise CfsError(f"no cfs daemon is running for {config.data_dir}: nothing to stop") from None
        raise CfsError(f"the daemon of {config.data_dir} (pid {holder}) holds its lock but does not answer "
                       f"({exc}); stop it with kill -TERM {holder}") from None
    pid = int(reply["pid"])
    deadline = started + timeout
    while lock_holder(config.data_dir / "mountd.lock") is not None or _running(pid):
        if time.monotonic() >= deadline:
            raise CfsError(f"the daemon (pid {pid}) is still running after {timeout:g} s (see its log); "
                           f"kill -TERM {pid} again stops it at once")
        time.sleep(POLL_SECONDS)
    return {"pid": pid, "stopped": True, "seconds": round(time.monotonic() - started, 2)}


def lock_holder(path: Path) -> str | None:
    """Who holds the data directory's lock (the pid it wrote, or "?"); None if nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs here and is a cfs daemon that has not exited (a zombie
    has: its parent has yet to reap it). A daemon in another PID namespace is not seen."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ESRCH):
            return False
        raise
    return b"cfs" in cmdline and state != "Z"
