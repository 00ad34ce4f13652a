"""Processes and mounts of a benchmark run: started here, stopped by PID, always.

Every child is started in its own session (``start_new_session``), so a Ctrl-C in the
terminal reaches the benchmark alone, which then stops its children in order: the load
generator first, then the mounts, then the FUSE daemons. Nothing here stops a process
by name.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence, cast

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark cannot go on (a tool is missing, a daemon did not start, a job failed)."""


def start(argv: Sequence[str], log: IO[bytes] | int = subprocess.DEVNULL, *, open_files: int | None = None,
          env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a daemon in a session of its own; ``open_files`` raises its RLIMIT_NOFILE (root)."""
    def limits() -> None:
        if open_files is not None:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
            except (ValueError, OSError):
                pass
    return subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=limits, env=env, cwd=cwd)


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 30) -> int | None:
    """SIGTERM the process by its PID, SIGKILL it after ``timeout``; returns its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    return proc.returncode


def run(argv: Sequence[str], timeout: float | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion in its own session; killed by PID if we are interrupted."""
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, start_new_session=True, cwd=cwd)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {proc.returncode}: {err.strip()[-2000:]}")
    return result


# --- mounts ------------------------------------------------------------------------

def mountpoints_under(base: Path) -> list[str]:
    """Mount points at or below ``base``, deepest first."""
    prefix = str(base.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ")[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def is_mounted(path: Path) -> bool:
    return str(path.resolve()) in mountpoints_under(path)


def wait_mounted(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            program = cast(list[str], proc.args)[0]  # start() makes every Popen from a list of str
            raise BenchError(f"{program} exited {proc.returncode} before mounting {path}")
        if is_mounted(path):
            return
        time.sleep(0.05)
    raise BenchError(f"{path} was not mounted within {timeout} s")


def unmount(path: Path) -> None:
    """Unmount a FUSE mount; lazily if it is busy, so a run never leaves one behind."""
    if not is_mounted(path):
        return
    for argv in (["fusermount3", "-u", str(path)], ["umount", str(path)], ["umount", "-l", str(path)]):
        if subprocess.run(argv, capture_output=True).returncode == 0 and not is_mounted(path):
            return


def unmount_all_under(base: Path) -> None:
    for point in mountpoints_under(base):
        unmount(Path(point))


# --- what a daemon costs -----------------------------------------------------------

@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    peak_rss: int
    """VmHWM: the peak resident set since start or since the last ``reset_peak``."""


def usage(pid: int) -> Usage | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as f:
            hwm = next((line for line in f if line.startswith("VmHWM:")), "VmHWM: 0 kB")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return Usage(cpu, int(hwm.split()[1]) * 1024)


def open_files_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of a running process."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            line = next((line for line in f if line.startswith("Max open files")), None)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(line.split()[3]) if line and line.split()[3].isdigit() else None


def resident(pid: int) -> dict[str, int] | None:
    """VmRSS, RssAnon and RssFile of a running process, in bytes (None: it is gone).

    RssAnon is the process's own memory; RssFile the pages of mapped files it has
    touched (for cfs, LMDB's map: page cache, reclaimable, but counted in VmRSS)."""
    wanted = ("VmRSS:", "RssAnon:", "RssFile:")
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = [line.split() for line in f if line.startswith(wanted)]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return {fields[0].rstrip(":"): int(fields[1]) * 1024 for fields in lines}


def anon_rss(pid: int) -> int | None:
    """RssAnon: the process's own memory, without the pages of mapped files (LMDB's map)."""
    figures = resident(pid)
    return figures.get("RssAnon") if figures else None


def reset_peak(pid: int) -> bool:
    """Start a new VmHWM window (clear_refs 5); False when the kernel does not let us."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def drop_caches() -> bool:
    """Write back dirty pages and drop the page, dentry and inode caches (root only)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """syncfs(2) on the filesystem holding ``path``: its dirty data and metadata reach the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
