"""A real cfs node daemon for tests: started as a process, stopped by its PID, always.

``Node`` starts ``cfs-mountd`` on a private data directory, waits for its control
socket, and offers the command line (the real ``cfs`` console script) and the control
API. ``stop`` sends SIGTERM and escalates to SIGKILL; ``cleanup`` detaches every mount
under the test's directory whatever state the daemon is in, so a failing test never
leaves a mount or a process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.client import call

BIN = Path(sys.executable).parent
CFS = str(BIN / "cfs")
MOUNTD = str(BIN / "cfs-mountd")


class Node:
    def __init__(self, base: Path, *, commit_interval: float = 1.0, extra_args: list[str] | None = None,
                 wrapper: list[str] | None = None) -> None:
        """``wrapper``: a command that execs the daemon in place (e.g. ``nsenter --net=…``),
        so that the PID started is still the daemon's. ``env``, set before a start: extra
        environment of the daemon (``CFS_CRASH_AT``, cfs.faults)."""
        self.base = base
        self.wrapper = wrapper or []
        self.data_dir = base / "data"
        self.log_path = base / "mountd.log"
        self.commit_interval = commit_interval
        self.extra_args = extra_args or []
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.data_dir / "mountd.sock"

    def start(self, timeout: float = 30) -> "Node":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, MOUNTD, "--data-dir", str(self.data_dir), "--commit-interval", str(self.commit_interval),
             "--log-level", "DEBUG", *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cfs-mountd exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                try:
                    if self.api("status")["pid"] == self.proc.pid:
                        return self
                except Exception:
                    pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"cfs-mountd did not come up in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def api(self, op: str, **args: Any) -> Any:
        return call(self.socket, op, args, timeout=120)

    def cli(self, *args: str, check: bool = True, json_out: bool = False, timeout: float = 300) -> Any:
        argv = [CFS, "--data-dir", str(self.data_dir), *(["--json"] if json_out else []), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}\n{result.stdout}")
        if json_out and result.returncode == 0:
            return json.loads(result.stdout)
        return result

    def mount(self, volume: str, path: Path, *, create: bool = True, **create_opts: Any) -> Path:
        if create:
            opts = [f"-o{k}={v}" for k, v in create_opts.items()]
            self.cli("volume", "create", volume, *opts)
        path.mkdir(parents=True, exist_ok=True)
        self.cli("mount", volume, str(path))
        return path

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        """kill -9, as a crash would."""
        kill_process(self.proc)

    def cleanup(self) -> None:
        self.stop()
        self.kill()
        detach_mounts_under(self.base)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float) -> int | None:
    """SIGTERM ``proc`` (a process a test started), SIGKILL it after ``timeout``; its exit
    status (None if it had to be killed, or was never started)."""
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_process(proc)
        return None


def kill_process(proc: subprocess.Popen[bytes] | None) -> None:
    """kill -9 ``proc`` if it runs, and reap it."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)


def mounts_under(base: Path) -> list[str]:
    prefix = str(base.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ")[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def detach_mounts_under(base: Path) -> None:
    for point in sorted(mounts_under(base), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def as_user(uid: int, gid: int) -> dict[str, Any]:
    """subprocess kwargs that run a child as another user (for permission tests)."""
    def demote() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    return {"preexec_fn": demote}
