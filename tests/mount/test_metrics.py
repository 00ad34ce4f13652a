"""The node's metrics through a real daemon: scraped over HTTP (``--metrics``) and read by
``cfs stats``, before and after real system calls on a real mount."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.etcd import free_port
from tests.node import MOUNTD, Node

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample of ``/metrics``, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def metrics_node(short_tmp: Path, port: int) -> Iterator[Node]:
    n = Node(short_tmp, extra_args=["--metrics", f"127.0.0.1:{port}"])
    try:
        n.start()
        yield n
    finally:
        n.cleanup()


def test_metrics_move_with_real_io(metrics_node: Node, short_tmp: Path, port: int) -> None:
    mnt = metrics_node.mount("vol", short_tmp / "mnt", block_size=4096, size="64M")
    before = scrape(port)
    assert value(before, "cfs_store_disk_free_bytes") > 0
    assert value(before, "cfs_lmdb_used_bytes") > 0
    assert value(before, "cfs_volume_size_limit_bytes", volume="vol") == 64 << 20
    assert value(before, "cfs_volume_lease_epoch", volume="vol") >= 1

    payload = os.urandom(300_000)
    for name in ("a", "b"):  # b: the same blocks again, deduplicated
        with open(mnt / name, "wb") as f:
            f.write(payload)
            os.fsync(f.fileno())
    for _ in range(3):
        assert (mnt / "a").read_bytes() == payload
        os.posix_fadvise(os.open(mnt / "a", os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "missing")
    after = scrape(port)

    assert value(after, "cfs_fuse_written_bytes_total") - value(before, "cfs_fuse_written_bytes_total") >= 600_000
    assert value(after, "cfs_fuse_read_bytes_total") > value(before, "cfs_fuse_read_bytes_total")
    for op in ("create", "write", "fsync", "read", "lookup"):
        moved = value(after, "cfs_fuse_requests_total", op=op) - value(before, "cfs_fuse_requests_total", op=op)
        assert moved >= 1, op
        assert value(after, "cfs_fuse_request_duration_seconds_count", op=op) == value(
            after, "cfs_fuse_requests_total", op=op)
        assert value(after, "cfs_fuse_request_duration_seconds_bucket", op=op, le="+Inf") == value(
            after, "cfs_fuse_requests_total", op=op)
    assert value(after, "cfs_fuse_request_errors_total", op="lookup") >= 1  # the ENOENT
    assert value(after, "cfs_fuse_request_duration_seconds_sum", op="write") > 0
    assert value(after, "cfs_volume_used_bytes", volume="vol") >= value(before, "cfs_volume_used_bytes",
                                                                        volume="vol") + 300_000
    assert value(after, "cfs_dedup_saved_bytes_total") >= 290_000
    reads = value(after, "cfs_chunk_cache_hits_total") + value(after, "cfs_chunk_cache_misses_total")
    assert reads > value(before, "cfs_chunk_cache_hits_total") + value(before, "cfs_chunk_cache_misses_total")
    assert value(after, "cfs_store_commits_total") > value(before, "cfs_store_commits_total")
    assert value(after, "cfs_process_resident_memory_bytes") > 0


def test_metrics_http_edges(metrics_node: Node, port: int) -> None:
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=10)
    assert missing.value.code == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(request, timeout=10)
    assert post.value.code == 405
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    assert value(scrape(port), "cfs_store_disk_bytes") > 0  # still serving


def test_stats_without_metrics(node: Node, mnt: Path) -> None:
    """``cfs stats`` reads the control socket: no --metrics needed."""
    done = threading.Event()

    def write() -> None:
        while not done.is_set():
            (mnt / "f").write_bytes(b"x" * 65536)
            os.stat(mnt / "f")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        result = node.cli("stats", "--count", "2", "--interval", "0.5")
        human = node.cli("stats", "--count", "1", "--interval", "0.3")
        lines = node.cli("--json", "stats", "--count", "2", "--interval", "0.5")
    finally:
        done.set()
        writer.join(30)
    samples = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(samples) == 2
    assert all(s["ops_per_second"] > 0 for s in samples), samples
    assert any(s["write_mib_per_second"] > 0 for s in samples), samples
    assert all(s["latency_ms"] is not None and s["latency_ms"] > 0 for s in samples)
    assert "write" in samples[0]["ops"] or "write" in samples[1]["ops"]
    assert len(result.stdout.splitlines()) == 3  # the header and two lines
    assert human.stdout.splitlines()[0].split()[0] == "ops/s"


def test_metrics_bind_errors(short_tmp: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        for address, words in ((f"127.0.0.1:{busy}", "cannot listen there"), ("nowhere", "HOST:PORT"),
                               ("no-such-host.invalid:9100", "cannot resolve")):
            result = subprocess.run([MOUNTD, "--data-dir", str(short_tmp / "data"), "--metrics", address],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 1, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0], result.stderr
            assert lines[0].startswith("cfs-mountd: error: --metrics"), lines
