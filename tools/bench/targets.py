"""Where the suite runs: the raw disk, C FUSE passthrough mounts of it, and cfs.

Each target owns a directory of the run (``base``) on the real disk and offers ``path``,
where the jobs work. ``start`` brings it up (a FUSE daemon and its mount, for all but the
disk); ``stop`` takes it down by PID and unmounts, and is safe to call twice or after
a failed ``start``. ``pids`` names the processes whose CPU time and peak RSS are
charged to each job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.bench import procs
from tools.client import call

CFS_VOLUME = "bench"


class Target:
    name = ""
    description = ""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.path = base

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []

    def alive(self) -> bool:
        """False once the target's daemon has exited: its mount is gone, no job can run."""
        return True

    def durable(self, path: Path) -> None:
        """Make everything written below ``path`` durable, the way the target offers it."""
        procs.syncfs(path)

    def store_usage(self, path: Path) -> dict[str, int]:
        """Space the target's storage holds for ``path``: here its allocated blocks."""
        st = path.stat()
        return {"allocated_bytes": st.st_blocks * 512}

    def clean(self) -> None:
        """Remove what the target stored, below its mounts (much faster than through them)."""
        if procs.mountpoints_under(self.base):
            raise procs.BenchError(f"{self.base} still has mounts; not removing it")
        shutil.rmtree(self.base, ignore_errors=True)


class Disk(Target):
    name = "disk"
    description = "a directory on the underlying disk"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.path = base / "dir"

    def start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)


class PassthroughMount(Target):
    """A C FUSE filesystem that mirrors ``base/src`` at ``base/mnt``."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.src = base / "src"
        self.path = base / "mnt"
        self.proc: subprocess.Popen[bytes] | None = None

    open_files: int | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.src.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        log = open(self.base / f"{self.name}.log", "ab")
        try:
            self.proc = procs.start(self.argv(), log, open_files=self.open_files)
        finally:
            log.close()
        procs.wait_mounted(self.path, self.proc)

    def stop(self) -> None:
        procs.unmount(self.path)
        procs.stop(self.proc)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _backing(self, path: Path) -> Path:
        return self.src / path.relative_to(self.path)

    def durable(self, path: Path) -> None:
        # syncfs on a FUSE mount does not reach the filesystem below it: sync that one.
        procs.fsync_dir(path)
        procs.syncfs(self._backing(path))

    def store_usage(self, path: Path) -> dict[str, int]:
        return super().store_usage(self._backing(path))


class Bindfs(PassthroughMount):
    name = "bindfs"
    description = "bindfs (C, libfuse 3, single-threaded, Debian's package)"

    def argv(self) -> list[str]:
        binary = shutil.which("bindfs")
        if binary is None:
            raise procs.BenchError("bindfs is not installed (apt-get install bindfs)")
        return [binary, "-f", "--no-allow-other", str(self.src), str(self.path)]


class PassthroughHp(PassthroughMount):
    name = "passthrough_hp"
    description = "libfuse's example/passthrough_hp (C++, multi-threaded, writeback cache, splice)"

    open_files = 1 << 20
    """It holds an O_PATH descriptor per inode the kernel knows: the large directory needs 100,000
    (raising the limit needs CAP_SYS_RESOURCE; without it the large directory fails, EBADF)."""

    def __init__(self, base: Path, binary: Path) -> None:
        super().__init__(base)
        self.binary = binary

    def start(self) -> None:
        super().start()
        assert self.proc is not None
        limit = procs.open_files_limit(self.proc.pid)
        if limit is not None and limit < self.open_files:
            self.description += f"; open files limited to {limit}"

    def argv(self) -> list[str]:
        return [str(self.binary), "--foreground", str(self.src), str(self.path)]


class Cfs(Target):
    """A cfs node daemon of its own, one volume, mounted where the jobs run."""

    name = "cfs"

    def __init__(self, base: Path, *, source: Path | None = None, volume_options: dict[str, str] | None = None,
                 commit_interval: float = 1.0) -> None:
        super().__init__(base)
        self.data_dir = base / "data"
        self.path = base / "mnt"
        self.source = source
        self.volume_options = volume_options or {}
        self.commit_interval = commit_interval
        self.proc: subprocess.Popen[bytes] | None = None
        self.description = "cfs node daemon (pyfuse3, trio), volume " + (
            " ".join(f"{k}={v}" for k, v in sorted(self.volume_options.items())) or "defaults")

    @property
    def socket(self) -> Path:
        return self.data_dir / "mountd.sock"

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if len(str(self.socket)) > 100:
            raise procs.BenchError(f"{self.socket} is too long for a unix socket; use a shorter --dir")
        env = dict(os.environ)
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.source), *filter(None, [env.get("PYTHONPATH")])])
        argv = [sys.executable, "-m", "mountd.main", "--data-dir", str(self.data_dir),
                "--commit-interval", str(self.commit_interval), "--log-level", "WARNING"]
        log = open(self.base / "mountd.log", "ab")
        try:
            # cwd: not a checkout, so that -m finds the packages on PYTHONPATH first
            self.proc = procs.start(argv, log, env=env, cwd=self.base)
        finally:
            log.close()
        self._wait_ready()
        self.api("volume.create", name=CFS_VOLUME, options=self.volume_options)
        if os.geteuid() == 0:
            self.path.mkdir(exist_ok=True)
            self.api("mount", name=CFS_VOLUME, path=str(self.path), read_only=False)
        else:  # binding needs CAP_SYS_ADMIN: use the volume inside the node's own mount
            self.path = self.data_dir / "fuse" / CFS_VOLUME

    def _wait_ready(self, timeout: float = 30) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise procs.BenchError(f"cfs-mountd exited {self.proc.returncode}:\n{self.log_tail()}")
            if self.socket.exists():
                try:
                    if self.api("status")["pid"] == self.proc.pid:
                        return
                except Exception:
                    pass
            time.sleep(0.05)
        raise procs.BenchError(f"cfs-mountd did not come up in {timeout} s:\n{self.log_tail()}")

    def api(self, op: str, **args: Any) -> Any:
        return call(self.socket, op, args, timeout=600)

    def log_tail(self) -> str:
        try:
            return (self.base / "mountd.log").read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        # SIGTERM: the daemon detaches its volume mounts and ends its FUSE session itself;
        # whatever is still mounted afterwards (it was killed) is detached here.
        procs.stop(self.proc)
        procs.unmount_all_under(self.base)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.poll() is None else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def durable(self, path: Path) -> None:
        procs.fsync_dir(path)  # fsyncdir commits the daemon's whole batch

    def store_usage(self, path: Path) -> dict[str, int]:
        """The store's size and use (LMDB free pages count as free) and the volume's chunk bytes.

        ``status`` reports free space as the disk's free space plus LMDB's free pages; the
        disk's share is read just before and after, so other writers on the disk blur the
        figure only by what they write in those milliseconds.
        """
        self.durable(self.path)
        usage = self.api("volume.inspect", name=CFS_VOLUME)["usage"]
        before = _disk_free(self.data_dir)
        status = self.api("status")
        disk_free = (before + _disk_free(self.data_dir)) // 2
        size = (self.data_dir / "store" / "data.mdb").stat().st_size
        lmdb_free = max(0, int(status["store"]["free_bytes"]) - disk_free)
        return {"store_file_bytes": size, "store_used_bytes": max(0, size - lmdb_free),
                "chunk_bytes": int(usage["chunk_bytes"]), "referenced_bytes": int(usage["referenced_bytes"])}


def _disk_free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
