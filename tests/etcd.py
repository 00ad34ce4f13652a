"""A real etcd for tests: started on free loopback ports in a private data dir, stopped by PID.

``Etcd(base).start()`` runs the ``etcd`` binary (Debian's etcd-server) with its data
in ``base/data`` and its log in ``base/etcd.log``, and returns once ``/health`` says
so. ``stop`` sends SIGTERM, then SIGKILL, and waits for the process; use it in a
``finally`` (or ``with Etcd(base) as etcd:``) so a failing test never leaves etcd
running. Free ports are found by binding port 0; if etcd loses the race for one, the
start is tried again with new ports.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Etcd:
    def __init__(self, base: Path, host: str = "127.0.0.1") -> None:
        """``host``: the address etcd serves clients on (a loopback one unless a test
        needs it reachable from other network namespaces)."""
        self.base = base
        self.host = host
        self.data_dir = base / "data"
        self.log_path = base / "etcd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0, attempts: int = 3) -> Self:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not installed (Debian: apt-get install etcd-server)")
        for attempt in range(attempts):
            self.client_port, peer_port = free_port(), free_port()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            client, peer = self.url, f"http://127.0.0.1:{peer_port}"
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [binary, "--name", "cfs-test", "--data-dir", str(self.data_dir),
                     "--listen-client-urls", client, "--advertise-client-urls", client,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                     "--initial-cluster", f"cfs-test={peer}", "--initial-cluster-state", "new",
                     "--logger", "zap", "--log-level", "warn"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                if self._wait_healthy(timeout):
                    return self
            except BaseException:
                self.stop()
                raise
            self.stop()  # lost a port race: try new ports
        raise RuntimeError(f"etcd did not start in {attempts} attempts:\n{self.log()}")

    def _wait_healthy(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as reply:
                    if json.load(reply).get("health") == "true":
                        return True
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"etcd did not become healthy in {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        """Stop etcd by its PID: SIGTERM, SIGKILL after 10 s; wait for it. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-10000:]
        except FileNotFoundError:
            return ""
