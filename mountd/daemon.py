"""The node daemon's composition root and lifecycle.

Start-up: take the data directory's lock (one daemon per data directory), bind the
metrics port if asked (``--metrics``: a taken port fails here, before any mount), detach
mounts a crashed predecessor left behind, open the store, free orphans, mount the node's
FUSE session, then inside one trio nursery run the FUSE workers, the control socket, the
metrics server, the commit timer and the signal watcher, and bind the recorded volume
mounts again; then watch the mount table for volumes unmounted by umount(8)
(NodeService.watch_unmounts).

Stop (SIGTERM, SIGINT, ``cfs node stop``; also during the start, which it cuts short):
detach every volume mount, commit, close every writer (wait for its replicas, release
its lease) and unregister, all within ``--stop-timeout`` whatever the peers and etcd do
(mountd.cluster.stopping), then end the FUSE session, close the store and remove the
socket; exit status 0. A second signal gives up waiting for anyone at once. A crash
(kill -9) leaves the store consistent as of its last commit and leaves dead mounts that
the next start detaches.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
from pathlib import Path

import trio

from cfs.coord.api import Coordinator
from cfs.coord.etcd import EtcdCoordinator
from cfs.coord.local import LocalCoordinator
from cfs.errors import CfsError
from cfs.fs import Filesystem
from cfs.fuse import lifecycle, session, tuning
from cfs.fuse.adapter import Operations
from cfs.fuse.counters import FuseCounters
from cfs.store import NodeRecords, Store
from mountd import mounts
from mountd.cluster.node import ClusterNode
from mountd.cluster.stopping import Stopping
from mountd.cluster.writer import Eviction
from mountd.config import DaemonConfig
from mountd.control import ControlServer
from mountd.metrics import MetricsServer, NodeMetrics, bind
from mountd.plugin import PluginServer, VolumeDriver
from mountd.service import NodeService

log = logging.getLogger(__name__)

FUSE_WORKERS = 1
"""pyfuse3 worker tasks that take requests. One: no handler awaits (each runs to
completion, see cfs.fuse.adapter) but to lend its worker to parked spares
(cfs.fuse.session.Workers), so a second worker could never run while the first handles
a request; it would only add a lock hand-off and two task switches to every request."""

CLUSTER_FUSE_WORKERS = 32
"""In a cluster, fsync and close-after-write await the replicas and a read may await a
chunk from a peer: other requests must be served meanwhile."""


class DaemonError(CfsError):
    pass


class Daemon:
    """Owns the node's store, filesystem, FUSE session and control server for one run."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self._lock_fd: int | None = None
        self.counters = FuseCounters()
        """The FUSE adapter's counts, read by the node's metrics (mountd.metrics)."""
        self._metrics_socket: socket.socket | None = None

    def run(self) -> int:
        self._prepare_data_dir()
        self._lock()
        try:
            if self.config.metrics is not None:
                self._metrics_socket = bind(*self.config.metrics)  # a taken port fails before any mount
            self._clean_stale_mounts()
            self.config.fuse_root.mkdir(exist_ok=True, mode=0o700)
            store = Store(self.config.store_dir, self.config.store)
            try:
                fs = Filesystem(store, dirty_limit=self.config.write_cache_bytes)
                fs.recover()
                records = NodeRecords(store)
                coord = self._coordinator()
                evictions_in, evictions_out = trio.open_memory_channel[Eviction](64)
                cluster = ClusterNode(fs, records, coord, self.config.cluster, evictions_in, Stopping())
                workers = session.Workers(CLUSTER_FUSE_WORKERS if self.config.cluster.clustered else FUSE_WORKERS)
                self._mount_fuse(fs, cluster, workers)
                try:
                    trio.run(self._main, fs, records, coord, cluster, evictions_out, workers)
                finally:
                    lifecycle.close()
            finally:
                store.close()
        finally:
            if self._metrics_socket is not None:
                self._metrics_socket.close()
            self._unlock()
        log.info("stopped")
        return 0

    def _prepare_data_dir(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.config.data_dir, 0o700)

    def _lock(self) -> None:
        path = self.config.data_dir / "mountd.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DaemonError(f"another cfs daemon (pid {other}) is using {self.config.data_dir}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _clean_stale_mounts(self) -> None:
        """Detach what a crashed daemon left mounted: its volume binds and its FUSE root."""
        store = Store(self.config.store_dir, self.config.store)
        try:
            recorded = NodeRecords(store).mounts()
        finally:
            store.close()
        for path in [*recorded, str(self.config.fuse_root)]:
            while mounts.unmount_if_mounted(Path(path)):
                log.warning("detached %s, left mounted by a previous run", path)

    def _coordinator(self) -> Coordinator:
        """etcd for a cluster member; the embedded single-node coordinator otherwise."""
        cluster = self.config.cluster
        if cluster.etcd is not None:
            return EtcdCoordinator(cluster.etcd, ttl=int(cluster.lease_ttl))
        return LocalCoordinator(self.config.coord_dir)

    def _mount_fuse(self, fs: Filesystem, cluster: ClusterNode, workers: session.Workers) -> None:
        try:
            lifecycle.mount(Operations(fs, cluster, workers=workers, counters=self.counters), self.config.fuse_root,
                            allow_other=os.geteuid() == 0)
        except RuntimeError as exc:
            raise DaemonError(f"cannot mount FUSE at {self.config.fuse_root}: {exc} "
                              "(is /dev/fuse there, and fuse3 installed?)") from None

    async def _main(self, fs: Filesystem, records: NodeRecords, coord: Coordinator, cluster: ClusterNode,
                    evictions: trio.MemoryReceiveChannel[Eviction], workers: session.Workers) -> None:
        async with coord:
            await self._serve(fs, records, cluster, evictions, workers)

    async def _serve(self, fs: Filesystem, records: NodeRecords, cluster: ClusterNode,
                     evictions: trio.MemoryReceiveChannel[Eviction], workers: session.Workers) -> None:
        service = NodeService(self.config, fs, records, cluster)
        metrics = NodeMetrics(self.counters, fs, records, cluster)
        control = ControlServer(self.config.socket_path, service, stats=metrics.stats)
        stopping = cluster.stopping
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals, stopping)
            nursery.start_soon(self._fuse, nursery, workers)
            nursery.start_soon(self._commit_timer, fs)
            with trio.CancelScope() as starting:  # a stop asked for during the start cuts it short
                nursery.start_soon(self._cancel_when_asked, stopping, starting)
                await nursery.start(cluster.run)
                nursery.start_soon(service.run_evictions, evictions)
                await self._tune_fuse()
                # Mounts first, socket second: a client that can talk to us finds them in place.
                await service.restore_mounts()
                nursery.start_soon(service.watch_unmounts)
                if self.config.plugin_socket is not None:
                    driver = VolumeDriver(service, self.config.plugin_mount_root)
                    await nursery.start(PluginServer(self.config.plugin_socket, driver).serve)
                if self._metrics_socket is not None:
                    await nursery.start(MetricsServer(self._metrics_socket, metrics).serve)
                await nursery.start(control.serve)
                log.info("serving %s (socket %s)", self.config.data_dir, self.config.socket_path)
                _notify(b"READY=1")
                await trio.sleep_forever()
            await self._stop(service, fs, cluster, stopping)
            nursery.cancel_scope.cancel()

    async def _stop(self, service: NodeService, fs: Filesystem, cluster: ClusterNode, stopping: Stopping) -> None:
        """Detach the host mounts, commit, then the cluster's part (ClusterNode.stop), all
        bounded by ``--stop-timeout``; the control socket and the peers are served until
        the end (a peer stopping at the same moment may still wait for this node)."""
        stopping.start(self.config.stop_timeout)
        log.info("stopping (%s) within %g s: unmounting volumes", stopping.why, self.config.stop_timeout)
        _notify(b"STOPPING=1")
        await service.unbind_all()
        try:
            fs.sync()  # written blocks of files still open at the signal; durable here from now on
        except CfsError as exc:
            log.error("could not store everything written before stopping: %s", exc)
        await cluster.stop()
        log.info("stop took %.1f s%s", trio.current_time() - (stopping.started_at or 0.0),
                 " (cut short by a second signal)" if stopping.at_once else "")

    async def _fuse(self, nursery: trio.Nursery, workers: session.Workers) -> None:
        """pyfuse3's workers; if the session ends on its own (fusermount -u), stop the node."""
        await session.run(workers, spin_us=self.config.fuse_spin_us)
        log.warning("the FUSE session ended; stopping")
        nursery.cancel_scope.cancel()

    async def _tune_fuse(self) -> None:
        """Raise the connection's read-ahead (cfs.fuse.tuning) once INIT is answered: a
        stat of the mount from a worker thread returns only after that, while this
        thread's FUSE workers answer it."""
        await trio.to_thread.run_sync(os.stat, self.config.fuse_root)
        tuning.raise_read_ahead(self.config.fuse_root)

    async def _commit_timer(self, fs: Filesystem) -> None:
        while True:
            await trio.sleep(self.config.commit_interval)
            try:
                fs.sync()
            except CfsError as exc:
                log.error("background commit failed: %s", exc)

    async def _watch_signals(self, stopping: Stopping) -> None:
        """The first SIGTERM or SIGINT asks for a stop; the next ones cut it short."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not stopping.asked.is_set():
                    log.info("received %s", name)
                    stopping.request(name)
                else:
                    log.warning("received %s while stopping: stopping at once, without waiting for peers or etcd", name)
                    stopping.now()

    async def _cancel_when_asked(self, stopping: Stopping, starting: trio.CancelScope) -> None:
        """The stop's clock starts when it is asked for, also while the start unwinds."""
        await stopping.asked.wait()
        stopping.start(self.config.stop_timeout)
        starting.cancel()


def _notify(state: bytes) -> None:
    """Tell systemd (Type=notify) how we are, when it asked."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address if not address.startswith("@") else "\0" + address[1:])
        sock.send(state)
