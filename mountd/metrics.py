"""The node's metrics: one sample of its counters and state, as Prometheus metrics and as
``cfs stats`` reads them.

Where the numbers live (nothing here keeps a number of its own):

* FUSE requests per operation, their latency and errors, bytes read and written:
  ``cfs.fuse.counters.FuseCounters``, made by the daemon and counted by the adapter;
* the store's disk, LMDB map and pages, chunk cache hits and misses, bytes deduplicated:
  ``NodeRecords.metrics`` (the ``Store`` and its ``ChunkCache`` count them);
* each volume's bytes in use and size limit: ``Filesystem.volume_space``;
* what the node writes, its lease epochs, degraded volumes, replica lag:
  ``ClusterNode.writers`` and each ``VolumeReplicator.lag``;
* peer traffic, open and rejected connections, bytes shipped, whole-volume copies:
  ``ClusterNode.links`` (``mountd.cluster.links.LinkCounters``); self-heal: ``Healer``;
  bulk transfers in flight (copies, healing, catch-up): ``ClusterNode.transfers``
  (``mountd.cluster.progress``).

``NodeMetrics.sample`` reads them all at once (the ``stats`` control operation returns
it); ``families`` turns a sample into Prometheus metric families, at scrape time, for a
registry of the daemon's own (``NodeMetrics.registry``: never prometheus_client's
global one, so daemons and tests in one process stay apart).

``MetricsServer`` serves ``GET /metrics`` over HTTP/1.1 (h11) from a task in the
daemon's nursery: a scrape runs on the trio thread like every other reader of the store
(docs/CONCURRENCY.md), costs a few hundred microseconds per volume, and is answered
whole before the next request is read. prometheus_client's own HTTP server would run in
a thread, reading the store's batch from another thread than its owner. Resource
handling: one task per connection, closed after its one answer or after
``REQUEST_TIMEOUT``. Error handling: a malformed request gets 400, another path 404,
another method 405, a failure to collect 500 (and a traceback in the log); nothing a
client sends reaches past its connection's task.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Iterator

import h11
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cfs.errors import CfsError
from cfs.fs import Filesystem
from cfs.fuse.counters import LATENCY_BOUNDS_NS, FuseCounters
from cfs.store import NodeRecords
from mountd.cluster.node import ClusterNode

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
MAX_HEAD = 16 << 10


class NodeMetrics:
    """The node's counters and state, read together (see the module doc)."""

    def __init__(self, fuse: FuseCounters, fs: Filesystem, records: NodeRecords, cluster: ClusterNode) -> None:
        self.fuse = fuse
        self.fs = fs
        self.records = records
        self.cluster = cluster
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(namespace="cfs", registry=self.registry)

    async def stats(self) -> dict[str, Any]:
        """The ``stats`` control operation: one sample."""
        return self.sample()

    def sample(self) -> dict[str, Any]:
        """Every number at this instant, as JSON (``cfs stats`` computes rates from two)."""
        ops = {name: {"count": s.count, "errors": s.errors, "seconds": s.total_ns / 1e9}
               for name, s in self.fuse.ops.items()}
        volumes = {}
        for record in self.records.volumes():
            try:
                volumes[record.name] = self.fs.volume_space(record.name)
            except CfsError:
                continue  # removed between the two reads
        writing: dict[str, Any] = {}
        for writer in self.cluster.writers():
            if writer.fenced:
                continue
            replicator = writer.replicator
            lag = {} if replicator is None else {
                node.hex(): {"records": records, "seconds": round(seconds, 3)}
                for node, (records, seconds) in replicator.lag().items()}
            writing[writer.name] = {"epoch": writer.epoch, "degraded": bool(replicator and replicator.degraded),
                                    "replicas": lag}
        links = self.cluster.links
        healer = self.cluster.healer
        return {
            "monotonic": time.monotonic(),
            "fuse": {"ops": ops, "read_bytes": self.fuse.read_bytes, "written_bytes": self.fuse.written_bytes},
            "store": self.records.metrics(),
            "volumes": volumes,
            "writing": writing,
            "peers": {"sent_bytes": dict(links.sent_bytes), "received_bytes": dict(links.received_bytes),
                      "connections": dict(links.open), "rejected": links.rejected,
                      "shipped_bytes": links.shipped_bytes,
                      "copies": links.copies, "copied_bytes": links.copied_bytes},
            "heal": {"rounds": healer.rounds, "shipped_records": sum(healer.shipped.values())},
            "transfers": [{"kind": t.kind, "direction": t.direction, "bytes_done": t.bytes_done,
                           "bytes_total": t.bytes_total} for t in self.cluster.transfers.snapshot()],
        }

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return families(self.metrics.sample(), self.metrics.fuse)


def families(sample: dict[str, Any], fuse: FuseCounters) -> Iterator[Metric]:
    """Prometheus metric families of one ``NodeMetrics.sample`` and the FUSE latency
    histograms (which the sample leaves out: ``cfs stats`` needs only their sums)."""
    yield from _fuse_families(sample["fuse"], fuse)
    yield from _store_families(sample["store"])
    yield from _volume_families(sample["volumes"], sample["writing"])
    yield from _peer_families(sample["peers"], sample["heal"])
    yield from _transfer_families(sample["transfers"])


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """``name`` without ``_total``: prometheus_client adds it."""
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _fuse_families(numbers: dict[str, Any], fuse: FuseCounters) -> Iterator[Metric]:
    requests = CounterMetricFamily("cfs_fuse_requests", "FUSE requests answered, by operation", labels=["op"])
    errors = CounterMetricFamily("cfs_fuse_request_errors", "FUSE requests answered with an error "
                                 "(ENOENT of a lookup too), by operation", labels=["op"])
    latency = HistogramMetricFamily("cfs_fuse_request_duration_seconds",
                                    "Time from a FUSE request's arrival in its handler to its answer",
                                    labels=["op"])
    bounds = [f"{b / 1e9:g}" for b in LATENCY_BOUNDS_NS] + ["+Inf"]
    for name in sorted(fuse.ops):
        stats = fuse.ops[name]
        requests.add_metric([name], stats.count)
        errors.add_metric([name], stats.errors)
        latency.add_metric([name], list(zip(bounds, stats.cumulative())), sum_value=stats.total_ns / 1e9)
    yield requests
    yield errors
    yield latency
    yield _counter("cfs_fuse_read_bytes", "Bytes read through the node's FUSE session", numbers["read_bytes"])
    yield _counter("cfs_fuse_written_bytes", "Bytes written through the node's FUSE session",
                   numbers["written_bytes"])


def _store_families(store: dict[str, int]) -> Iterator[Metric]:
    yield _counter("cfs_chunk_cache_hits", "Chunk reads served from the cache of verified chunks",
                   store["cache_hits"])
    yield _counter("cfs_chunk_cache_misses", "Chunk reads that went to the store (and were hashed)",
                   store["cache_misses"])
    yield _gauge("cfs_chunk_cache_bytes", "Bytes in the chunk cache", store["cache_bytes"])
    yield _gauge("cfs_chunk_cache_limit_bytes", "The chunk cache's bound", store["cache_limit_bytes"])
    yield _counter("cfs_dedup_saved_bytes", "Bytes written that were not stored because their chunk "
                   "was stored already (since the daemon started)", store["dedup_bytes"])
    yield _counter("cfs_store_commits", "Commits of the store's write batch", store["commits"])
    yield _gauge("cfs_store_disk_bytes", "Size of the store's disk", store["disk_bytes"])
    yield _gauge("cfs_store_disk_free_bytes", "Free bytes on the store's disk (statvfs f_bavail)",
                 store["disk_free_bytes"])
    yield _gauge("cfs_store_free_bytes", "Space new data can take: free disk plus free pages in LMDB, "
                 "less what the given-up reserve file lacks", store["free_bytes"])
    yield _gauge("cfs_store_reserve_bytes", "Disk space kept for deletes and control operations",
                 store["reserve_bytes"])
    yield _gauge("cfs_lmdb_map_size_bytes", "The LMDB map's size (address space, not disk)", store["map_bytes"])
    yield _gauge("cfs_lmdb_used_bytes", "Bytes of LMDB pages in use", store["used_pages_bytes"])
    yield _gauge("cfs_lmdb_free_bytes", "Bytes of free LMDB pages inside the data file (reused before it grows)",
                 store["free_pages_bytes"])


def _volume_families(volumes: dict[str, dict[str, int]], writing: dict[str, Any]) -> Iterator[Metric]:
    used = GaugeMetricFamily("cfs_volume_used_bytes", "Bytes a volume (or snapshot) stores on this node",
                             labels=["volume"])
    limit = GaugeMetricFamily("cfs_volume_size_limit_bytes", "A volume's size limit (0: none)", labels=["volume"])
    for name in sorted(volumes):
        used.add_metric([name], volumes[name]["used_bytes"])
        limit.add_metric([name], volumes[name]["size_bytes"])
    yield used
    yield limit
    epoch = GaugeMetricFamily("cfs_volume_lease_epoch", "The lease epoch under which this node writes a volume",
                              labels=["volume"])
    degraded = GaugeMetricFamily("cfs_volume_degraded", "1 if a volume this node writes is degraded (a replica "
                                 "did not acknowledge within the replication timeout)", labels=["volume"])
    lag_records = GaugeMetricFamily("cfs_replication_lag_records", "Change-log records a replica has not "
                                    "acknowledged", labels=["volume", "replica"])
    lag_seconds = GaugeMetricFamily("cfs_replication_lag_seconds", "How long a replica has lacked records "
                                    "(0 when it holds them all)", labels=["volume", "replica"])
    for name in sorted(writing):
        info = writing[name]
        epoch.add_metric([name], info["epoch"])
        degraded.add_metric([name], 1 if info["degraded"] else 0)
        for replica, lag in sorted(info["replicas"].items()):
            lag_records.add_metric([name, replica], lag["records"])
            lag_seconds.add_metric([name, replica], lag["seconds"])
    yield epoch
    yield degraded
    yield lag_records
    yield lag_seconds


def _peer_families(peers: dict[str, Any], heal: dict[str, int]) -> Iterator[Metric]:
    sent = CounterMetricFamily("cfs_peer_sent_bytes", "Bytes sent to peers; direction out: on connections "
                               "this node dialled (its requests: replication shipping, copies, fetches)",
                               labels=["direction"])
    received = CounterMetricFamily("cfs_peer_received_bytes", "Bytes received from peers", labels=["direction"])
    connections = GaugeMetricFamily("cfs_peer_connections", "Authenticated peer connections open",
                                    labels=["direction"])
    for direction in ("in", "out"):
        sent.add_metric([direction], peers["sent_bytes"][direction])
        received.add_metric([direction], peers["received_bytes"][direction])
        connections.add_metric([direction], peers["connections"][direction])
    yield sent
    yield received
    yield connections
    yield _counter("cfs_peer_rejected_connections", "Peer connections ended for what the peer sent "
                   "(a frame that failed its MAC or was malformed, a failed handshake)", peers["rejected"])
    yield _counter("cfs_replication_shipped_bytes", "Change-log record and chunk bytes shipped to replicas "
                   "(whole-volume copies apart)", peers["shipped_bytes"])
    yield _gauge("cfs_copies_in_flight", "Whole-volume copies this node is sending", peers["copies"])
    yield _counter("cfs_copy_sent_bytes", "Row and chunk bytes of whole-volume copies sent", peers["copied_bytes"])
    yield _counter("cfs_heal_rounds", "Self-heal rounds run", heal["rounds"])
    yield _counter("cfs_heal_shipped_records", "Change-log records the self-healer shipped", heal["shipped_records"])


def _transfer_families(transfers: list[dict[str, Any]]) -> Iterator[Metric]:
    """The bulk transfers in flight (mountd.cluster.progress), summed by kind and direction."""
    running = GaugeMetricFamily("cfs_transfers_running", "Bulk transfers in flight: whole-volume copies, "
                                "healing, catch-up", labels=["kind", "direction"])
    done = GaugeMetricFamily("cfs_transfer_done_bytes", "Bytes the transfers in flight have moved",
                             labels=["kind", "direction"])
    left = GaugeMetricFamily("cfs_transfer_remaining_bytes", "Bytes the transfers in flight have still to "
                             "move, of those whose total is known", labels=["kind", "direction"])
    sums: dict[tuple[str, str], list[int]] = {}
    for t in transfers:
        entry = sums.setdefault((t["kind"], t["direction"]), [0, 0, 0])
        entry[0] += 1
        entry[1] += t["bytes_done"]
        if t["bytes_total"] is not None:
            entry[2] += max(0, t["bytes_total"] - t["bytes_done"])
    for (kind, direction), (count, moved, remaining) in sorted(sums.items()):
        running.add_metric([kind, direction], count)
        done.add_metric([kind, direction], moved)
        left.add_metric([kind, direction], remaining)
    yield running
    yield done
    yield left


# --- the HTTP endpoint ---------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, made before the daemon mounts anything, so
    that a taken port or an unknown host is a one-line error at start."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CfsError(f"--metrics {host}:{port}: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(16)
    except OSError as exc:
        sock.close()
        raise CfsError(f"--metrics {host}:{port}: cannot listen there: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


class MetricsServer:
    """``GET /metrics`` on a socket ``bind`` made (see the module doc)."""

    def __init__(self, sock: socket.socket, metrics: NodeMetrics) -> None:
        self.sock = sock
        self.metrics = metrics

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        host, port = self.sock.getsockname()[:2]
        log.info("serving metrics on http://%s:%d/metrics", host, port)
        async with listener:
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._connection, [listener], handler_nursery=nursery)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
            try:
                with trio.fail_after(REQUEST_TIMEOUT):
                    request = await _read_request(conn, stream)
                    if request is None:
                        return
                    status, body, kind = self._answer(request)
                    await _send(conn, stream, status, body, kind, head_only=request.method == b"HEAD")
            except h11.RemoteProtocolError as exc:
                await _send(conn, stream, exc.error_status_hint, f"bad request: {exc}\n".encode(), "text/plain")
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    def _answer(self, request: h11.Request) -> tuple[int, bytes, str]:
        if request.method not in (b"GET", b"HEAD"):
            return 405, b"only GET and HEAD\n", "text/plain"
        path = request.target.split(b"?", 1)[0]
        if path == b"/metrics":
            try:
                return 200, self.metrics.exposition(), CONTENT_TYPE_LATEST
            except Exception as exc:  # a bug, or a store error: this scrape fails, the node does not
                log.exception("could not collect the metrics")
                return 500, f"could not collect the metrics: {exc!r} (see the daemon log)\n".encode(), "text/plain"
        if path == b"/":
            return 200, b"cfs node metrics: /metrics\n", "text/plain"
        return 404, b"not found: the metrics are at /metrics\n", "text/plain"


async def _read_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
    """The request's head (its body, if any, is not needed); None if the client left first."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Request):
            return event
        elif isinstance(event, h11.ConnectionClosed):
            return None
        else:
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", error_status_hint=400)


async def _send(conn: h11.Connection, stream: trio.SocketStream, status: int, body: bytes, kind: str,
                head_only: bool = False) -> None:
    """One answer, then the connection closes (a scrape a few seconds apart gains nothing
    from keeping it)."""
    headers = [("Content-Type", kind), ("Content-Length", str(len(body))), ("Connection", "close")]
    try:
        out = conn.send(h11.Response(status_code=status, headers=headers))
        if not head_only:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return  # no request began: nothing may be answered, just close
    await stream.send_all(out)
