"""What the node does when asked: the operations behind the control API.

``NodeService`` owns the node's mount table (which volume is bound where, recorded
through ``NodeRecords``); the filesystem core and the cluster node are handed in. Its
methods run on the trio thread; the ones that touch host paths await worker threads for
the system calls (see mountd.mounts). Nothing here needs space on the store's disk
but creating a volume: on a full disk every other call still works.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import trio

from cfs import check
from cfs.coord.api import NODE_ID_LEN, Attachment, VolumeSpec
from cfs.types import NodeId, VolumeId
from cfs.durability import OPTION as DURABILITY, durability_of, parse_durability
from cfs.errors import CfsError, NodeNotFound, UserError, VolumeBusy, VolumeNotFound
from cfs.fs import DEFAULT_BLOCK_SIZE, Filesystem, quota
from cfs.names import is_snapshot_name, split_snapshot_name, validate_catalog_name, validate_volume_name
from cfs.store import NodeRecords
from mountd import mounts
from mountd.cluster.node import ClusterNode
from mountd.cluster.writer import Eviction
from mountd.config import DaemonConfig

log = logging.getLogger(__name__)

CREATE_OPTIONS = {"block_size", "uid", "gid", "mode", "size", "replicas", "durability", "from"}
"""``size`` limits the bytes the volume holds (bytes, or 10G, 512M, 1GiB; 0: no limit): see cfs.fs.quota.
``durability``: ``available`` (the default) or ``strict``, what an fsync promises when a
replica does not answer (cfs.durability).
``from``: a snapshot (``VOLUME@SNAPSHOT``) or a volume to clone (cfs.store.snapshots)."""
FROM_SOURCE = {"block_size", "uid", "gid", "mode"}
"""Options a clone takes from its source, not from the request."""


MAX_REPLICAS = 5

WATCH_SECONDS = 0.5
"""How long ``watch_unmounts``' worker thread waits for a change before it looks up."""


class NodeService:
    def __init__(self, config: DaemonConfig, fs: Filesystem, records: NodeRecords, cluster: ClusterNode) -> None:
        self.config = config
        self.fs = fs
        self.records = records
        self.cluster = cluster
        self.started = time.time()
        self._mount_lock = trio.Lock()
        self._bound: set[str] = set()
        """The recorded mounts this run bound and has not let go. One that leaves the mount
        table was unmounted from outside (umount(8)): ``_forget_unmounted`` forgets it."""

    # --- volumes -------------------------------------------------------------------

    async def volume_create(self, name: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
        validate_volume_name(name)
        opts = dict(options or {})
        unknown = sorted(set(opts) - CREATE_OPTIONS)
        if unknown:
            raise UserError(f"unknown volume option(s): {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(CREATE_OPTIONS))})")
        if "from" in opts:
            return await self._clone(name, str(opts.pop("from")), opts)
        block_size = _int_option(opts, "block_size", DEFAULT_BLOCK_SIZE)
        uid, gid = _int_option(opts, "uid", 0), _int_option(opts, "gid", 0)
        mode = int(str(opts.get("mode", "755")), 8) if _octal(opts.get("mode", "755")) else None
        if mode is None:
            raise UserError(f"option mode={opts['mode']!r} is not an octal permission like 755")
        _normalise(opts)
        replicas = self._replicas_option(opts)
        record = await self.cluster.create_volume(
            name, block_size=block_size, uid=uid, gid=gid, mode=mode, replicas=replicas,
            options={k: str(v) for k, v in opts.items()})
        log.info("created volume %s (block size %d)", name, record.block_size)
        return self._describe(record.name)

    async def _clone(self, name: str, source: str, opts: dict[str, Any]) -> dict[str, Any]:
        validate_catalog_name(source)
        taken = sorted(FROM_SOURCE & set(opts))
        if taken:
            raise UserError(f"option(s) {', '.join(taken)} come from the volume or snapshot a clone is made "
                            "from; a clone takes size, replicas and durability")
        replicas = self._replicas_option(opts)
        _normalise(opts)
        options = {**{k: str(v) for k, v in opts.items()}, "from": source}  # shown by inspect; Docker compares it
        record = await self.cluster.clone_volume(name, source, options=options, replicas=replicas)
        log.info("created volume %s as a clone of %s", name, source)
        return self._describe(record.name)

    @staticmethod
    def _replicas_option(opts: dict[str, Any]) -> int | None:
        """The ``replicas`` option taken out of ``opts`` (None: the default)."""
        if "replicas" not in opts:
            return None
        replicas = _int_option(opts, "replicas", 1)
        if not 1 <= replicas <= MAX_REPLICAS:
            raise UserError(f"option replicas={replicas} must be between 1 and {MAX_REPLICAS}")
        del opts["replicas"]
        return replicas

    async def volume_ls(self) -> list[dict[str, Any]]:
        """The cluster's volumes (not their snapshots: ``snapshot_ls``); those this node
        holds no copy of have ``here`` False."""
        specs = {n: s for n, s in (await self.cluster.list_specs()).items() if not is_snapshot_name(n)}
        local = {record.name: record for record in self.records.volumes() if not is_snapshot_name(record.name)}
        out = []
        for name in sorted(set(specs) | set(local)):
            info = self._describe(name) if name in local else _describe_spec(name, specs[name])
            info["here"] = name in local
            info["replicas"] = specs[name].replicas if name in specs else 1
            if name in specs:  # the catalog's limit: the one the volume's writer takes
                info["size_bytes"] = quota.limit_of(specs[name].options)
            out.append(info)
        return out

    async def volume_inspect(self, name: str) -> dict[str, Any]:
        spec = await self.cluster.spec(name)
        if spec is not None and self.records.find(name) is None:
            info = _describe_spec(name, spec)
            info["here"] = False
        else:
            info = self._describe(name)
            info["usage"] = self.fs.volume_usage(name)
        info["replicas"] = spec.replicas if spec is not None else 1
        holder = await self.cluster.coord.holder(name)
        info["writer"] = None if holder is None else {
            "node_id": holder.lease.node_id.hex(), "address": holder.address, "epoch": holder.lease.epoch,
            "alive": holder.alive}
        info["replication"] = self.cluster.volume_status(VolumeId(bytes.fromhex(info["id"])))
        return info

    async def volume_info(self, name: str) -> dict[str, Any]:
        """What ``volume_inspect`` says without the usage scan (cheap enough for every Docker ``Get``).

        A volume of the cluster that this node holds no copy of yet is described from the
        cluster catalog: mounting it here moves it here. ``replicas`` comes from the
        catalog (1 for a volume it does not know)."""
        validate_catalog_name(name)
        spec = await self.cluster.spec(name)
        try:
            info = self._describe(name)
        except VolumeNotFound:
            if spec is None:
                raise
            info = _describe_spec(name, spec)
        info["replicas"] = spec.replicas if spec is not None else 1
        if spec is not None:  # the catalog's limit: the one the volume's writer takes
            info["size_bytes"] = quota.limit_of(spec.options)
        return info

    async def volume_rm(self, name: str) -> dict[str, Any]:
        if is_snapshot_name(name):
            raise UserError(f"{name!r} is a snapshot: remove it with cfs snapshot rm")
        return await self._remove(name, "volume")

    async def _remove(self, name: str, kind: str) -> dict[str, Any]:
        where = self._mounted_at(name)
        if where:
            raise VolumeBusy(f"{kind} {name!r} is mounted at {', '.join(where)}; unmount it first")
        await self.cluster.remove_volume(name)
        log.info("removed %s %s", kind, name)
        return {"removed": name}

    # --- CSI: attachments, expansion, health, stats -------------------------------------

    async def volume_publish(self, name: str, node_id: str, read_only: bool = False) -> dict[str, Any]:
        """Attach the volume to a node (CSI's ControllerPublishVolume): that node may mount
        it, and takes it over from a node it is not attached to (ClusterNode.open_volume).
        Refused while another live node is attached (one node at a time)."""
        validate_volume_name(name)
        attachment = await self.cluster.coord.attach(name, _node_id(node_id), read_only=bool(read_only))
        log.info("volume %s attached to node %s%s", name, node_id, " (read-only)" if read_only else "")
        return _attachment(attachment)

    async def volume_unpublish(self, name: str, node_id: str | None = None) -> dict[str, Any]:
        """Detach the volume from a node (None: from every node); nothing attached is done too."""
        validate_volume_name(name)
        try:
            node = None if node_id is None else _node_id(node_id)
        except NodeNotFound:
            return {"detached": 0}  # a node that cannot exist holds nothing
        return {"detached": await self.cluster.coord.detach(name, node)}

    async def volume_attachments(self, name: str | None = None) -> list[dict[str, Any]]:
        if name is not None:
            validate_volume_name(name)
        return [_attachment(a) for a in await self.cluster.coord.attachments(name)]

    async def volume_expand(self, name: str, size: Any = None) -> dict[str, Any]:
        """Raise the volume's size limit in the catalog to ``size`` (bytes or 10G; never
        lowered) and take it here if this node writes the volume; without ``size``, take
        the catalog's limit here (CSI's NodeExpandVolume). ``size_bytes``: the catalog's
        limit (0: none); ``here_bytes``: the limit in force on this node's copy, if any."""
        validate_volume_name(name)
        if size is None:
            limit = await self.cluster.take_size_limit(name)
        else:
            limit = quota.limit_of((await self.cluster.expand_volume(name, quota.parse_size(size))).options)
        record = self.records.find(name)
        return {"name": name, "size_bytes": limit,
                "here_bytes": None if record is None else self.fs.volume_space(name)["size_bytes"]}

    async def volume_condition(self, name: str) -> dict[str, Any]:
        """Whether the volume is in trouble as this node sees it, and why (ClusterNode.condition)."""
        validate_volume_name(name)
        abnormal, message = await self.cluster.condition(name)
        return {"name": name, "abnormal": abnormal, "message": message}

    async def volume_stats(self, name: str) -> dict[str, Any]:
        """Space and inodes of this node's copy (CSI's NodeGetVolumeStats): bytes in use and
        the size limit (0: none), the store disk's free bytes (what a volume without a
        limit may still take), inodes in use and inode numbers left."""
        validate_volume_name(name)
        space = self.fs.volume_space(name)
        inodes, inodes_free = self.fs.volume_inodes(name)
        return {**space, "free_bytes": self.records.space()["free_bytes"], "inodes": inodes,
                "inodes_free": inodes_free}

    # --- snapshots -----------------------------------------------------------------

    async def snapshot_create(self, volume: str, name: str) -> dict[str, Any]:
        """Snapshot ``volume`` as ``volume@name``: on this node, or on the node that writes
        the volume (see ClusterNode.create_snapshot)."""
        validate_volume_name(volume)
        validate_volume_name(name)
        full = await self.cluster.create_snapshot(volume, name)
        log.info("took snapshot %s", full)
        if self.records.find(full) is not None:
            return {**self._describe_snapshot(full), "here": True}
        return await self.snapshot_inspect(full)

    async def snapshot_ls(self, volume: str | None = None) -> list[dict[str, Any]]:
        """The cluster's snapshots, of one volume or of all; ``here``: a copy is on this node."""
        specs = {n: s for n, s in (await self.cluster.list_specs()).items() if is_snapshot_name(n)}
        local = {r.name for r in self.records.volumes() if is_snapshot_name(r.name)}
        out = []
        for name in sorted(set(specs) | local):
            of, snap = split_snapshot_name(name)
            if volume is not None and of != volume:
                continue
            info = self._describe_snapshot(name) if name in local else _describe_spec(name, specs[name])
            info.update({"volume": of, "snapshot": snap, "here": name in local})
            out.append(info)
        return out

    async def snapshot_inspect(self, name: str) -> dict[str, Any]:
        split_snapshot_name(name)
        if self.records.find(name) is not None:
            info = self._describe_snapshot(name)
            info["exclusive_bytes"] = self.fs.exclusive_bytes(name)
            info["here"] = True
            return info
        spec = await self.cluster.spec(name)
        if spec is None:
            raise VolumeNotFound(f"no snapshot named {name!r}")
        info = _describe_spec(name, spec)
        info["options"] = {k: v for k, v in info["options"].items() if k not in ("snapshot", "snapshot_of")}
        return {**info, "snapshot_of": spec.options.get("snapshot_of"), "here": False}

    async def snapshot_rm(self, name: str) -> dict[str, Any]:
        split_snapshot_name(name)
        return await self._remove(name, "snapshot")

    def _describe_snapshot(self, name: str) -> dict[str, Any]:
        info = self._describe(name)
        info["options"] = {k: v for k, v in info["options"].items() if k not in ("snapshot", "snapshot_of")}
        record = self.records.volume(name)
        info["snapshot_of"] = record.options.get("snapshot_of")
        return info

    def _describe(self, name: str) -> dict[str, Any]:
        record = self.records.volume(name)
        return {
            "name": record.name, "id": record.volume_id.hex(), "block_size": record.block_size,
            "created": _iso(record.created_ns / 1e9), "options": record.options,
            "durability": durability_of(record.options).value, "mountpoints": self._mounted_at(name),
            **self.fs.volume_space(name),  # used_bytes; size_bytes, the limit (0: none)
        }

    def _recorded(self) -> dict[str, tuple[str, bool]]:
        return self.records.mounts()

    def _mounted_at(self, name: str) -> list[str]:
        return sorted(path for path, (volume, _ro) in self._recorded().items() if volume == name)

    # --- mounts --------------------------------------------------------------------

    async def mount(self, name: str, path: str, read_only: bool = False,
                    takeover: bool = False) -> dict[str, Any]:
        """Bind the volume at ``path``; the node becomes its writer first (it may move here)."""
        if is_snapshot_name(name):
            read_only = True  # a snapshot never changes
        async with self._mount_lock:
            await self._forget_unmounted()  # a umount(8) of this path or volume a moment ago
            target = await trio.to_thread.run_sync(mounts.check_target, path)
            await self.cluster.open_volume(name, takeover=bool(takeover))
            try:
                await trio.to_thread.run_sync(mounts.bind, self.config.fuse_root / name, target, read_only)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await self.cluster.close_volume(name)
                raise
            self.records.record_mount(str(target), name, read_only)
            self._bound.add(str(target))
        log.info("mounted volume %s at %s%s", name, target, " (read-only)" if read_only else "")
        return {"volume": name, "mountpoint": str(target), "read_only": read_only}

    async def mount_ls(self) -> list[dict[str, Any]]:
        """The mounts this node keeps (recorded, bound again at each start): path, volume,
        read-only, and whether the path is a mount point now."""
        points = await trio.to_thread.run_sync(mounts.mount_points)
        return [{"path": path, "volume": name, "read_only": read_only, "mounted": path in points}
                for path, (name, read_only) in sorted(self._recorded().items())]

    async def umount(self, path: str, lazy: bool = False) -> dict[str, Any]:
        """Unmount and forget a mount; ``lazy`` detaches it even while a process still uses it."""
        async with self._mount_lock:
            target = Path(os.path.abspath(path))
            recorded = self._recorded()
            key = str(target) if str(target) in recorded else str(target.resolve()) if target.exists() else str(target)
            if key not in recorded:
                raise UserError(f"{target} is not a cfs mount of this node")
            name = recorded[key][0]
            if await trio.to_thread.run_sync(mounts.is_mount_point, Path(key)):
                try:
                    await trio.to_thread.run_sync(mounts.unmount, Path(key), bool(lazy))
                except OSError as exc:
                    raise UserError(f"cannot unmount {key}: {exc.strerror} (is a process using it?)") from None
            self.records.drop_mount(key)
            self._bound.discard(key)
            await self.cluster.close_volume(name)
        log.info("unmounted volume %s from %s", name, key)
        return {"volume": name, "mountpoint": key}

    async def watch_unmounts(self) -> None:
        """Forget the mounts unmounted from outside cfs, as they go.

        A plain ``umount DIR`` (umount(8), or umount2 by any program: systemd at shutdown,
        ``umount -l``) detaches a volume's bind mount without a word to the FUSE session,
        which serves every volume and goes on. The mount table tells: each change to it
        wakes this task (``mounts.wait_for_change``, in a worker thread that looks up every
        ``WATCH_SECONDS`` so that a stop does not wait for it longer), and a mount this run
        made that is gone is dropped from the records and its volume closed, which lets
        its lease go. ``mount`` does the same first, so a mount right after a umount(8)
        never waits for this task."""
        table = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while True:
                if await trio.to_thread.run_sync(mounts.wait_for_change, table, WATCH_SECONDS):
                    async with self._mount_lock:
                        await self._forget_unmounted()
        finally:
            os.close(table)

    async def _forget_unmounted(self) -> None:
        """Drop the mounts of ``_bound`` that left the mount table (the mount lock held)."""
        if not self._bound:
            return
        points = await trio.to_thread.run_sync(mounts.mount_points)
        for path in sorted(self._bound - points):
            if path not in self._bound:  # let go meanwhile (unbind_all at a stop)
                continue
            self._bound.discard(path)
            recorded = self._recorded().get(path)
            if recorded is None:
                continue
            self.records.drop_mount(path)
            log.info("volume %s was unmounted from %s outside cfs (umount): forgot the mount", recorded[0], path)
            try:
                await self.cluster.close_volume(recorded[0])
            except CfsError as exc:
                log.error("could not close volume %s: %s", recorded[0], exc)

    async def restore_mounts(self) -> None:
        """Bind again every recorded mount (after a restart, clean or not)."""
        for path, (name, read_only) in sorted(self._recorded().items()):
            try:
                target = await trio.to_thread.run_sync(mounts.check_target, path)
                await self.cluster.open_volume(name)
            except CfsError as exc:
                log.error("could not remount volume %s at %s: %s", name, path, exc)
                continue
            try:
                await trio.to_thread.run_sync(mounts.bind, self.config.fuse_root / name, target, read_only)
                self._bound.add(path)
                log.info("remounted volume %s at %s", name, path)
            except OSError as exc:
                await self.cluster.close_volume(name)
                log.error("could not remount volume %s at %s: %s", name, path, exc)

    async def run_evictions(self, evictions: trio.MemoryReceiveChannel[Eviction]) -> None:
        """Unmount volumes this node may not write any more (fenced, or taken over)."""
        async for eviction in evictions:
            async with self._mount_lock:
                for path, (name, _ro) in sorted(self._recorded().items()):
                    if name != eviction.volume:
                        continue
                    try:
                        if await trio.to_thread.run_sync(mounts.is_mount_point, Path(path)):
                            await trio.to_thread.run_sync(mounts.unmount, Path(path), True)
                    except OSError as exc:
                        log.error("could not unmount %s: %s", path, exc)
                    self.records.drop_mount(path)
                    self._bound.discard(path)
                    log.warning("unmounted volume %s from %s: %s", name, path, eviction.reason)
                    await self.cluster.close_volume(name)

    async def unbind_all(self) -> None:
        """Detach every volume mount before the FUSE session ends, keeping the records
        (bound again at the next start: ``watch_unmounts`` must not forget them)."""
        self._bound.clear()
        for path in sorted(self._recorded()):
            target = Path(path)
            try:
                if await trio.to_thread.run_sync(mounts.is_mount_point, target):
                    await trio.to_thread.run_sync(mounts.unmount, target, True)
            except OSError as exc:
                log.error("could not unmount %s: %s", path, exc)

    # --- node ----------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "data_dir": str(self.config.data_dir),
            "uptime_seconds": round(time.time() - self.started, 1),
            "volumes": len(self.records.volumes()), "mounts": {p: v for p, (v, _ro) in self._recorded().items()},
            "store": self.records.space(),
            "kernel_lookups": len(self.fs.lookups),
            "cluster": {
                "node_id": self.cluster.node_id.hex(), "name": self.cluster.config.name,
                "etcd": self.cluster.config.etcd,
                "address": self.cluster.config.advertise,
                "writing": self.cluster.writing(), "degraded": self.cluster.degraded(),
                "members": self.cluster.members.states(),
                "members_refreshed": None if self.cluster.members.refreshed_ns is None
                else _iso(self.cluster.members.refreshed_ns / 1e9),
                "self_heal": {"rounds": self.cluster.healer.rounds, "copied": self.cluster.healer.shipped},
                "transfers": [t.to_json() for t in self.cluster.transfers.snapshot()],
                "transfers_ended": [t.to_json() for t in self.cluster.transfers.finished()],
            },
        }

    async def node_ls(self) -> list[dict[str, Any]]:
        out = []
        for node in await self.cluster.coord.nodes():
            state = node.state.value
            text = state if node.down_since_ns is None else f"down since {_iso(node.down_since_ns / 1e9)}"
            out.append({"node_id": node.node_id.hex(), "address": node.address, "state": state,
                        "state_text": text, "down_since": None if node.down_since_ns is None
                        else _iso(node.down_since_ns / 1e9), "capacity": node.capacity,
                        "chunks": node.chunks, "self": node.node_id == self.cluster.node_id})
        return out

    async def node_stop(self) -> dict[str, Any]:
        """Ask the daemon to stop, as SIGTERM does (mountd.cluster.stopping); the reply comes
        at once, the stop takes up to ``stop_timeout`` seconds more. ``cfs node stop`` then
        waits for the process to be gone."""
        log.info("stop asked for over the control socket")
        self.cluster.stopping.request("cfs node stop")
        return {"pid": os.getpid(), "stop_timeout": self.config.stop_timeout}

    async def node_drain(self, draining: bool = True) -> dict[str, Any]:
        """Mark the node draining (or not). ``still_here`` lists what keeps it from leaving:
        volumes it writes (unmount or move them) and copies not yet made elsewhere;
        ``transfers`` the copies in flight on this node, ``transfers_ended`` the last ones
        that ended (copies between other nodes show in their ``cfs status``)."""
        await self.cluster.coord.set_draining(self.cluster.node_id, bool(draining))
        waiting: list[str] = []
        if draining:
            waiting = sorted(set(self.cluster.writing()) | set(await self.cluster.healer.still_needed()))
        return {"node_id": self.cluster.node_id.hex(), "draining": bool(draining), "still_here": waiting,
                "transfers": [t.to_json() for t in self.cluster.transfers.snapshot()],
                "transfers_ended": [t.to_json() for t in self.cluster.transfers.finished()]}

    async def fsck(self, volume: str | None, repair: bool,
                   progress: Callable[[str, int, int], None]) -> dict[str, Any]:
        """Check (and repair) the store while the node keeps serving.

        The check hashes every chunk in a worker thread, on a snapshot, so FUSE requests
        go on meanwhile. Repairs must run on the store's thread, in its batch (the LMDB
        thread rule), and must see what changed since the snapshot (reference counts are
        node-wide): only when there is something to repair does a second pass run here,
        holding up requests for a walk of the metadata; it hashes nothing, and takes the
        chunks the first pass found damaged as damaged (docs/CONCURRENCY.md)."""
        if volume is not None:
            self.records.volume(volume)
        if repair and volume is not None and self._mounted_at(volume):
            raise VolumeBusy(f"volume {volume!r} is mounted; unmount it before --repair")
        self.fs.sync()
        report = await trio.to_thread.run_sync(
            lambda: check.check_snapshot(self.fs.store, volume, progress=progress))
        if repair and report.repairable:
            report = check.check(self.fs.store, volume, repair=True, progress=progress,
                                 damaged=report.damaged_chunks)
        return report.to_json()


def _node_id(raw: Any) -> NodeId:
    """A node id as the control API takes it (hex); NodeNotFound for anything that cannot be one."""
    try:
        node = bytes.fromhex(raw) if isinstance(raw, str) else b""
    except ValueError:
        node = b""
    if len(node) != NODE_ID_LEN:
        raise NodeNotFound(f"no node {raw!r}: node ids are {2 * NODE_ID_LEN} hex digits (cfs node ls)")
    return NodeId(node)


def _attachment(attachment: Attachment) -> dict[str, Any]:
    return {"volume": attachment.volume, "node_id": attachment.node_id.hex(), "read_only": attachment.read_only,
            "attached": _iso(attachment.attached_ns / 1e9)}


def _describe_spec(name: str, spec: VolumeSpec) -> dict[str, Any]:
    """A volume as the cluster catalog has it (no copy on this node)."""
    size = spec.options.get("size", "0")
    return {"name": name, "id": spec.volume_id.hex(), "block_size": spec.block_size,
            "created": _iso(spec.created_ns / 1e9), "options": dict(spec.options),
            "durability": durability_of(spec.options).value, "mountpoints": [],
            "used_bytes": 0, "size_bytes": int(size) if size.isdigit() else 0}


def _normalise(opts: dict[str, Any]) -> None:
    """Options kept as the volume's, validated and in the form the node reads: ``size`` in
    bytes, ``durability`` by its mode's name (UserError for a value that means nothing)."""
    if "size" in opts:
        opts["size"] = str(quota.parse_size(opts["size"]))
    if DURABILITY in opts:
        opts[DURABILITY] = parse_durability(opts[DURABILITY]).value


def _int_option(opts: dict[str, Any], key: str, default: int) -> int:
    raw = opts.get(key, default)
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise UserError(f"option {key}={raw!r} is not a whole number") from None


def _octal(raw: Any) -> bool:
    return isinstance(raw, (str, int)) and all(c in "01234567" for c in str(raw)) and 0 < len(str(raw)) <= 4


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
