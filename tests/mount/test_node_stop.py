"""``cfs node stop`` on a real daemon with a mounted volume (tools/stop.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.node import CFS, Node, mounts_under


def test_node_stop_stops_the_daemon_and_waits_until_it_is_gone(node: Node, mnt: Path, short_tmp: Path) -> None:
    fd = os.open(mnt / "synced", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"durable" * 1000)
    os.fsync(fd)
    os.close(fd)
    held = os.open(mnt / "open-at-the-stop", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(held, b"written, not fsync'd")

    started = time.monotonic()
    result = node.cli("node", "stop", "--timeout", "30")
    took = time.monotonic() - started
    assert result.stdout.startswith(f"stopped the cfs daemon (pid {node.pid}) in "), result.stdout
    assert node.proc is not None and node.proc.poll() == 0, "the command returned before the daemon exited"
    print(f"cfs node stop took {took:.2f} s")
    assert mounts_under(short_tmp) == []
    assert not (node.data_dir / "mountd.sock").exists()
    assert "stop asked for over the control socket" in node.log()
    try:
        os.close(held)
    except OSError:
        pass  # its server is gone: ENOTCONN

    again = node.cli("node", "stop", check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == f"cfs: error: no cfs daemon is running for {node.data_dir}: nothing to stop"

    node.start()
    assert (mnt / "synced").read_bytes() == b"durable" * 1000
    assert (mnt / "open-at-the-stop").read_bytes() == b"written, not fsync'd"  # the stop stored it
    stopped = node.cli("--json", "node", "stop")
    assert stopped.returncode == 0 and node.proc.poll() == 0


def test_node_stop_without_a_daemon_says_so(short_tmp: Path) -> None:
    data_dir = short_tmp / "nodata"
    result = subprocess.run([CFS, "--data-dir", str(data_dir), "node", "stop"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == f"cfs: error: no cfs daemon is running for {data_dir}: nothing to stop"
