"""The CSI plugin for tests: ``cfs csi`` started as a process beside a real node daemon,
stopped by its PID, and a gRPC client of it with the generated stubs, as an orchestrator
and its sidecars would talk to it.

``Plugin(daemon, base).start()`` runs ``cfs csi --endpoint unix://BASE/csi.sock --mode both
--data-dir DAEMON_DATA`` for a running ``tests.node.Node`` and returns once it answers
Probe; ``identity``, ``controller`` and ``node`` are the three services' stubs. ``stop`` sends SIGTERM and escalates to
SIGKILL, ``kill`` is a kill -9; ``env`` (set before a start) adds to its environment
(``CFS_CRASH_AT``, cfs.faults). Helpers build the requests the tests send again and again.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.node import CFS, Node, kill_process, stop_process
from tools.csi.generated import csi_pb2 as pb
from tools.csi.generated import csi_pb2_grpc as rpc

Mode = pb.VolumeCapability.AccessMode.Mode
CALL_TIMEOUT = 120.0
"""Seconds any one call may take: it bounds a hang, it measures nothing."""


class Plugin:
    def __init__(self, daemon: Node, base: Path, *, mode: str = "both") -> None:
        self.daemon = daemon
        self.base = base
        self.mode = mode
        self.socket = base / "csi.sock"
        self.log_path = base / "csi.log"
        self.env: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None

    def start(self, timeout: float = 30) -> "Plugin":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [CFS, "--data-dir", str(self.daemon.data_dir), "csi", "--endpoint", f"unix://{self.socket}",
                 "--mode", self.mode, "--log-level", "DEBUG"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **self.env})
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.identity = rpc.IdentityStub(self.channel)
        self.controller = rpc.ControllerStub(self.channel)
        self.node = rpc.NodeStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cfs csi exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.identity.Probe(pb.ProbeRequest(), timeout=5).ready.value:
                    return self
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"cfs csi did not answer in {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        return stop_process(self.proc, timeout)

    def kill(self) -> None:
        kill_process(self.proc)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


# --- requests ---------------------------------------------------------------------------

def cap(mode: int = Mode.SINGLE_NODE_WRITER, *, block: bool = False, fs_type: str = "",
        flags: tuple[str, ...] = ()) -> pb.VolumeCapability:
    if block:
        return pb.VolumeCapability(block=pb.VolumeCapability.BlockVolume(),
                                   access_mode=pb.VolumeCapability.AccessMode(mode=mode))
    return pb.VolumeCapability(mount=pb.VolumeCapability.MountVolume(fs_type=fs_type, mount_flags=flags),
                               access_mode=pb.VolumeCapability.AccessMode(mode=mode))


def create_request(name: str, size: int = 0, *, snapshot: str | None = None, volume: str | None = None,
                   mode: int = Mode.SINGLE_NODE_WRITER, **parameters: str) -> pb.CreateVolumeRequest:
    source = None
    if snapshot is not None:
        source = pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(snapshot_id=snapshot))
    elif volume is not None:
        source = pb.VolumeContentSource(volume=pb.VolumeContentSource.VolumeSource(volume_id=volume))
    return pb.CreateVolumeRequest(
        name=name, volume_capabilities=[cap(mode)], parameters=parameters, volume_content_source=source,
        capacity_range=pb.CapacityRange(required_bytes=size) if size else None)


def call(method: Callable[..., Any], request: Any) -> Any:
    return method(request, timeout=CALL_TIMEOUT)


def refused(code: grpc.StatusCode, method: Callable[..., Any], request: Any, match: str = "") -> str:
    """Call ``method``, which must fail with ``code`` (and a message containing ``match``);
    the message."""
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=CALL_TIMEOUT)
    error: Any = caught.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    assert match in error.details(), error.details()
    return str(error.details())
