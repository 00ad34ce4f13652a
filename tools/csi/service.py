"""CSI's Identity, Controller and Node services over the node daemon (docs/DESIGN.md, "CSI").

A thin adapter, as cfs.fuse.adapter is for FUSE: each call checks its request
(``tools.csi.checks``: a malformed one changes nothing), asks the daemon through its
control socket (``tools.csi.daemon``), and answers in CSI's terms. Errors leave through
one edge, ``rpc``: an ``Abort`` becomes its gRPC status, anything unexpected INTERNAL
with a traceback in the log.

* Volumes are cfs volumes, their CSI ids their names; snapshots are ``volume@snapshot``.
* ControllerPublishVolume attaches the volume to the node in the catalog
  (``volume.publish``); NodeStageVolume mounts it at the staging path (``mount``, which
  takes the volume's lease here, taking it over from a node it is no longer attached
  to), NodePublishVolume mounts it again at the target; the unpublish and unstage calls
  unmount, and are done when nothing is there.
* CreateSnapshot is ``snapshot.create`` (taken by the node that writes the volume),
  ControllerExpandVolume ``volume.expand`` (the catalog's limit), NodeExpandVolume has
  the node take it (``volume.expand`` without a size).

Concurrency: gRPC runs calls in a thread pool. Calls about one volume (or snapshot name)
run one at a time (``KeyedLocks``), so two identical calls at once act as one after the
other: the second finds what the first did and answers the same. The daemon serialises
what reaches it from several plugins.
"""

from __future__ import annotations

import calendar
import contextlib
import errno
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2, wrappers_pb2

from cfs.faults import crash_point
from tools.csi import checks
from tools.csi.checks import Abort, invalid, required
from tools.csi.daemon import Daemon
from tools.csi.generated import csi_pb2, csi_pb2_grpc

log = logging.getLogger(__name__)

PLUGIN_NAME = "csi.cfs.dev"
SPEC_VERSION = "1.9.0"
TOPOLOGY_KEY = "topology.csi.cfs.dev/cluster"
"""The one topology segment: the cluster's name, the same on every node, since a volume is
reachable from every node of its cluster."""
READ_ONLY_CONTEXT = "cfs.dev/read-only"
"""ControllerPublishVolume's publish_context: whether the attachment is read-only."""

Code = grpc.StatusCode
Mode = csi_pb2.VolumeCapability.AccessMode.Mode
Request = TypeVar("Request")
Response = TypeVar("Response")


class KeyedLocks:
    """One lock per key (a volume's id), made on first use and dropped after last."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


def rpc(key: Callable[[Any], str] | None = None) -> Callable[[Callable[..., Response]], Callable[..., Response]]:
    """The edge every call passes: run it (under the lock of ``key(request)``), and turn
    ``Abort`` into its status, anything else into INTERNAL."""
    def wrap(method: Callable[..., Response]) -> Callable[..., Response]:
        @functools.wraps(method)
        def handler(self: Base, request: Any, context: grpc.ServicerContext) -> Response:
            name = method.__name__
            try:
                if key is None:
                    return method(self, request, context)
                with self.locks.hold(key(request)):
                    return method(self, request, context)
            except Abort as exc:
                log.info("%s: %s: %s", name, exc.code.name, exc.message)
                context.abort(exc.code, exc.message)
            except Exception:
                log.exception("%s failed", name)
                context.abort(Code.INTERNAL, f"internal error in {name} (see the cfs csi log)")
            raise AssertionError("context.abort returned")  # it raises
        return handler
    return wrap


class Base:
    """What the three services share: the daemon, the locks, and views of cfs objects."""

    def __init__(self, daemon: Daemon, locks: KeyedLocks) -> None:
        self.daemon = daemon
        self.locks = locks

    def topology(self) -> csi_pb2.Topology:
        cluster = self.daemon.call("status")["cluster"]["name"]
        return csi_pb2.Topology(segments={TOPOLOGY_KEY: cluster})

    def volume(self, info: dict[str, Any], topology: csi_pb2.Topology) -> csi_pb2.Volume:
        source = info["options"].get("from")
        content = None
        if source and "@" in source:
            content = csi_pb2.VolumeContentSource(snapshot=csi_pb2.VolumeContentSource.SnapshotSource(
                snapshot_id=source))
        elif source:
            content = csi_pb2.VolumeContentSource(volume=csi_pb2.VolumeContentSource.VolumeSource(volume_id=source))
        return csi_pb2.Volume(capacity_bytes=info["size_bytes"], volume_id=info["name"], content_source=content,
                              accessible_topology=[topology])

    def condition(self, name: str) -> csi_pb2.VolumeCondition:
        state = self.daemon.call("volume.condition", name=name)
        return csi_pb2.VolumeCondition(abnormal=state["abnormal"], message=state["message"])


def _volume_key(request: Any) -> str:
    return f"volume:{request.volume_id}"


# --- Identity --------------------------------------------------------------------------

class Identity(Base, csi_pb2_grpc.IdentityServicer):
    def __init__(self, daemon: Daemon, locks: KeyedLocks, *, controller: bool) -> None:
        super().__init__(daemon, locks)
        self.controller = controller

    @rpc()
    def GetPluginInfo(self, request: csi_pb2.GetPluginInfoRequest,
                      context: grpc.ServicerContext) -> csi_pb2.GetPluginInfoResponse:
        return csi_pb2.GetPluginInfoResponse(name=PLUGIN_NAME, vendor_version=metadata.version("cfs"),
                                             manifest={"csi-spec": SPEC_VERSION})

    @rpc()
    def GetPluginCapabilities(self, request: csi_pb2.GetPluginCapabilitiesRequest,
                              context: grpc.ServicerContext) -> csi_pb2.GetPluginCapabilitiesResponse:
        Service = csi_pb2.PluginCapability.Service
        Expansion = csi_pb2.PluginCapability.VolumeExpansion
        caps = [csi_pb2.PluginCapability(service=Service(type=Service.VOLUME_ACCESSIBILITY_CONSTRAINTS)),
                csi_pb2.PluginCapability(volume_expansion=Expansion(type=Expansion.ONLINE))]
        if self.controller:
            caps.insert(0, csi_pb2.PluginCapability(service=Service(type=Service.CONTROLLER_SERVICE)))
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=caps)

    @rpc()
    def Probe(self, request: csi_pb2.ProbeRequest, context: grpc.ServicerContext) -> csi_pb2.ProbeResponse:
        """Ready when the node daemon answers; FAILED_PRECONDITION (the spec's "not
        healthy") when it does not."""
        try:
            self.daemon.call("status", timeout=10)
        except Abort as exc:
            raise Abort(Code.FAILED_PRECONDITION, f"the cfs node daemon does not answer: {exc.message}") from None
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))


# --- Controller ------------------------------------------------------------------------

RPC = csi_pb2.ControllerServiceCapability.RPC
CONTROLLER_CAPABILITIES = (
    RPC.CREATE_DELETE_VOLUME, RPC.PUBLISH_UNPUBLISH_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY,
    RPC.CREATE_DELETE_SNAPSHOT, RPC.LIST_SNAPSHOTS, RPC.CLONE_VOLUME, RPC.PUBLISH_READONLY, RPC.EXPAND_VOLUME,
    RPC.LIST_VOLUMES_PUBLISHED_NODES, RPC.VOLUME_CONDITION, RPC.GET_VOLUME, RPC.SINGLE_NODE_MULTI_WRITER,
)


class Controller(Base, csi_pb2_grpc.ControllerServicer):
    @rpc()
    def ControllerGetCapabilities(self, request: csi_pb2.ControllerGetCapabilitiesRequest,
                                  context: grpc.ServicerContext) -> csi_pb2.ControllerGetCapabilitiesResponse:
        return csi_pb2.ControllerGetCapabilitiesResponse(capabilities=[
            csi_pb2.ControllerServiceCapability(rpc=RPC(type=cap)) for cap in CONTROLLER_CAPABILITIES])

    @rpc(key=lambda r: f"volume:{r.name}")
    def CreateVolume(self, request: csi_pb2.CreateVolumeRequest,
                     context: grpc.ServicerContext) -> csi_pb2.CreateVolumeResponse:
        name = checks.new_name(request.name, "volume")
        checks.capabilities(request.volume_capabilities)
        if request.mutable_parameters:
            raise invalid("mutable_parameters need the MODIFY_VOLUME capability, which cfs does not serve")
        params = checks.parameters(request.parameters)
        capacity_range = request.capacity_range if request.HasField("capacity_range") else None
        limit, _most = checks.capacity(capacity_range)
        source = self._source(request)
        topology = self.topology()
        if request.HasField("accessibility_requirements"):
            wanted = list(request.accessibility_requirements.requisite)
            if wanted and all(dict(t.segments) != dict(topology.segments) for t in wanted):
                raise Abort(Code.RESOURCE_EXHAUSTED, f"cfs volumes are reachable from the topology "
                            f"{dict(topology.segments)} only, which accessibility_requirements does not allow")
        info = self.daemon.find("volume.info", name=name)
        if info is None:
            self._check_source(source, limit)
            options = {**params, **({"size": str(limit)} if limit else {}), **({"from": source} if source else {})}
            try:
                self.daemon.call("volume.create", name=name, options=options)
            except Abort as exc:
                if exc.code is not Code.ALREADY_EXISTS:  # another plugin made it meanwhile: compared below
                    raise
            crash_point("csi-volume-created")
            info = self.daemon.call("volume.info", name=name)
        self._check_same(info, params, capacity_range, source)
        return csi_pb2.CreateVolumeResponse(volume=self.volume(info, topology))

    @staticmethod
    def _source(request: csi_pb2.CreateVolumeRequest) -> str | None:
        """The cfs name of the volume or snapshot a new volume is cloned from; NOT_FOUND for
        an id that cannot name one."""
        if not request.HasField("volume_content_source"):
            return None
        content = request.volume_content_source
        kind = content.WhichOneof("type")
        if kind == "snapshot":
            snapshot_id = required(content.snapshot.snapshot_id, "volume_content_source.snapshot.snapshot_id")
            if checks.snapshot_parts(snapshot_id) is None:
                raise Abort(Code.NOT_FOUND, f"no snapshot {snapshot_id!r}")
            return snapshot_id
        if kind == "volume":
            volume_id = required(content.volume.volume_id, "volume_content_source.volume.volume_id")
            if checks.volume_name(volume_id) is None:
                raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
            return volume_id
        raise invalid("volume_content_source: snapshot or volume is required")

    def _check_source(self, source: str | None, limit: int) -> None:
        """The source exists (NOT_FOUND), and fits the size asked for (OUT_OF_RANGE)."""
        if source is None:
            return
        op = "snapshot.inspect" if "@" in source else "volume.info"
        found = self.daemon.find(op, name=source)
        if found is None:
            raise Abort(Code.NOT_FOUND, f"the source {source!r} does not exist")
        if limit and found["used_bytes"] > limit:
            raise Abort(Code.OUT_OF_RANGE, f"the source {source!r} holds {found['used_bytes']} bytes, more than "
                        f"the {limit} asked for")

    @staticmethod
    def _check_same(info: dict[str, Any], params: dict[str, str], capacity_range: csi_pb2.CapacityRange | None,
                    source: str | None) -> None:
        """An existing volume answers a CreateVolume of its name only if it is what was
        asked for; ALREADY_EXISTS naming what differs."""
        differs = []
        if not checks.fits(info["size_bytes"], capacity_range):
            differs.append(f"its size limit is {info['size_bytes'] or 'none'}")
        if "block_size" in params and int(params["block_size"]) != info["block_size"]:
            differs.append(f"its block size is {info['block_size']}")
        if "replicas" in params and int(params["replicas"]) != info["replicas"]:
            differs.append(f"it has {info['replicas']} replicas")
        if "durability" in params and params["durability"] != info["durability"]:
            differs.append(f"its durability is {info['durability']}")
        if info["options"].get("from") != source:
            differs.append(f"its content source is {info['options'].get('from') or 'none'}")
        if differs:
            raise Abort(Code.ALREADY_EXISTS, f"volume {info['name']!r} exists, and not as asked: {'; '.join(differs)}")

    @rpc(key=_volume_key)
    def DeleteVolume(self, request: csi_pb2.DeleteVolumeRequest,
                     context: grpc.ServicerContext) -> csi_pb2.DeleteVolumeResponse:
        name = checks.volume_name(required(request.volume_id, "volume_id"))
        if name is not None and self.daemon.find("volume.info", name=name) is not None:
            try:
                self.daemon.call("volume.rm", name=name)
            except Abort as exc:
                if exc.code is not Code.NOT_FOUND:  # gone meanwhile: done
                    raise
        return csi_pb2.DeleteVolumeResponse()

    @rpc(key=_volume_key)
    def ControllerPublishVolume(self, request: csi_pb2.ControllerPublishVolumeRequest,
                                context: grpc.ServicerContext) -> csi_pb2.ControllerPublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        node_id = required(request.node_id, "node_id")
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        mode = checks.capability(request.volume_capability)
        name = checks.volume_name(volume_id)
        if name is None or self.daemon.find("volume.info", name=name) is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        read_only = request.readonly or mode in checks.READER_MODES
        attached = self.daemon.call("volume.publish", name=name, node_id=node_id, read_only=read_only)
        return csi_pb2.ControllerPublishVolumeResponse(
            publish_context={READ_ONLY_CONTEXT: "true" if attached["read_only"] else "false"})

    @rpc(key=_volume_key)
    def ControllerUnpublishVolume(self, request: csi_pb2.ControllerUnpublishVolumeRequest,
                                  context: grpc.ServicerContext) -> csi_pb2.ControllerUnpublishVolumeResponse:
        name = checks.volume_name(required(request.volume_id, "volume_id"))
        if name is not None:  # an id that cannot be a volume is attached nowhere
            self.daemon.call("volume.unpublish", name=name, node_id=request.node_id or None)
        return csi_pb2.ControllerUnpublishVolumeResponse()

    @rpc()
    def ValidateVolumeCapabilities(self, request: csi_pb2.ValidateVolumeCapabilitiesRequest,
                                   context: grpc.ServicerContext) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        volume_id = required(request.volume_id, "volume_id")
        if not request.volume_capabilities:
            raise invalid("volume_capabilities is required")
        name = checks.volume_name(volume_id)
        info = None if name is None else self.daemon.find("volume.info", name=name)
        if info is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        problems = [why for cap in request.volume_capabilities if (why := checks.unsupported(cap))]
        if request.volume_context:
            problems.append("volume_context: cfs volumes have none")
        if request.mutable_parameters:
            problems.append("mutable_parameters: cfs serves no MODIFY_VOLUME")
        try:
            params = checks.parameters(request.parameters)
            if "block_size" in params and int(params["block_size"]) != info["block_size"]:
                problems.append(f"block_size: the volume's is {info['block_size']}")
            if "replicas" in params and int(params["replicas"]) != info["replicas"]:
                problems.append(f"replicas: the volume has {info['replicas']}")
            if "durability" in params and params["durability"] != info["durability"]:
                problems.append(f"durability: the volume's is {info['durability']}")
        except Abort as exc:
            problems.append(exc.message)
        if problems:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message="; ".join(problems))
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_capabilities=request.volume_capabilities, parameters=request.parameters)
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    @rpc()
    def ListVolumes(self, request: csi_pb2.ListVolumesRequest,
                    context: grpc.ServicerContext) -> csi_pb2.ListVolumesResponse:
        where = checks.page(request.max_entries, request.starting_token)
        volumes = {v["name"]: v for v in self.daemon.call("volume.ls")}
        names, next_token = checks.paginate(list(volumes), where)
        attached: dict[str, list[str]] = {}
        for attachment in self.daemon.call("volume.attachments"):
            attached.setdefault(attachment["volume"], []).append(attachment["node_id"])
        topology = self.topology()
        entries = []
        for name in names:
            try:
                condition = self.condition(name)
            except Abort as exc:
                if exc.code is Code.NOT_FOUND:
                    continue  # removed since the listing
                raise
            entries.append(csi_pb2.ListVolumesResponse.Entry(
                volume=self.volume(volumes[name], topology),
                status=csi_pb2.ListVolumesResponse.VolumeStatus(published_node_ids=attached.get(name, []),
                                                                volume_condition=condition)))
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=next_token)

    @rpc(key=_volume_key)
    def ControllerGetVolume(self, request: csi_pb2.ControllerGetVolumeRequest,
                            context: grpc.ServicerContext) -> csi_pb2.ControllerGetVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        name = checks.volume_name(volume_id)
        info = None if name is None else self.daemon.find("volume.info", name=name)
        if name is None or info is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        nodes = [a["node_id"] for a in self.daemon.call("volume.attachments", name=name)]
        return csi_pb2.ControllerGetVolumeResponse(
            volume=self.volume(info, self.topology()),
            status=csi_pb2.ControllerGetVolumeResponse.VolumeStatus(published_node_ids=nodes,
                                                                    volume_condition=self.condition(name)))

    @rpc()
    def GetCapacity(self, request: csi_pb2.GetCapacityRequest,
                    context: grpc.ServicerContext) -> csi_pb2.GetCapacityResponse:
        """The free bytes of this node's store: where a new volume's first copy is made
        (the healer places its replicas on nodes with room). Capabilities, parameters or
        a topology cfs cannot serve have no capacity: 0."""
        unservable = any(checks.unsupported(cap) for cap in request.volume_capabilities)
        try:
            checks.parameters(request.parameters)
        except Abort:
            unservable = True
        if request.HasField("accessible_topology") and \
                dict(request.accessible_topology.segments) != dict(self.topology().segments):
            unservable = True
        free = 0 if unservable else self.daemon.call("status")["store"]["free_bytes"]
        return csi_pb2.GetCapacityResponse(available_capacity=max(0, free))

    @rpc(key=lambda r: f"snapshot:{r.name}")
    def CreateSnapshot(self, request: csi_pb2.CreateSnapshotRequest,
                       context: grpc.ServicerContext) -> csi_pb2.CreateSnapshotResponse:
        """A snapshot named ``name`` of the source volume: ``volume@name``. CSI's snapshot
        names are the orchestrator's and unique across volumes; cfs's are per volume, so a
        name taken by another volume's snapshot is ALREADY_EXISTS."""
        source_id = required(request.source_volume_id, "source_volume_id")
        snap = checks.new_name(request.name, "snapshot")
        if request.parameters:
            raise invalid(f"unknown parameter(s) {', '.join(sorted(request.parameters))}: snapshots take none")
        volume = checks.volume_name(source_id)
        if volume is None:
            raise Abort(Code.NOT_FOUND, f"no volume {source_id!r}")
        taken = self._snapshots_named(snap)
        if not taken:
            if self.daemon.find("volume.info", name=volume) is None:
                raise Abort(Code.NOT_FOUND, f"no volume {source_id!r}")
            try:
                self.daemon.call("snapshot.create", volume=volume, name=snap)
            except Abort as exc:
                if exc.code is not Code.ALREADY_EXISTS:
                    raise
            taken = self._snapshots_named(snap)
        other = [s["name"] for s in taken if s["volume"] != volume]
        if other:
            raise Abort(Code.ALREADY_EXISTS, f"snapshot name {snap!r} is taken by {', '.join(other)}, "
                        f"not of volume {volume!r}")
        if not taken:
            raise Abort(Code.ABORTED, f"snapshot {volume}@{snap} was removed as it was made; try again")
        return csi_pb2.CreateSnapshotResponse(snapshot=_snapshot(taken[0]))

    def _snapshots_named(self, snap: str) -> list[dict[str, Any]]:
        return [s for s in self.daemon.call("snapshot.ls") if s["snapshot"] == snap]

    @rpc(key=lambda r: f"snapshot:{r.snapshot_id.partition('@')[2]}")
    def DeleteSnapshot(self, request: csi_pb2.DeleteSnapshotRequest,
                       context: grpc.ServicerContext) -> csi_pb2.DeleteSnapshotResponse:
        snapshot_id = required(request.snapshot_id, "snapshot_id")
        if checks.snapshot_parts(snapshot_id) is not None:
            try:
                self.daemon.call("snapshot.rm", name=snapshot_id)
            except Abort as exc:
                if exc.code is not Code.NOT_FOUND:
                    raise
        return csi_pb2.DeleteSnapshotResponse()

    @rpc()
    def ListSnapshots(self, request: csi_pb2.ListSnapshotsRequest,
                      context: grpc.ServicerContext) -> csi_pb2.ListSnapshotsResponse:
        where = checks.page(request.max_entries, request.starting_token)
        found = {s["name"]: s for s in self.daemon.call("snapshot.ls")}
        if request.snapshot_id:
            found = {n: s for n, s in found.items() if n == request.snapshot_id}
        if request.source_volume_id:
            found = {n: s for n, s in found.items() if s["volume"] == request.source_volume_id}
        names, next_token = checks.paginate(list(found), where)
        return csi_pb2.ListSnapshotsResponse(
            entries=[csi_pb2.ListSnapshotsResponse.Entry(snapshot=_snapshot(found[n])) for n in names],
            next_token=next_token)

    @rpc(key=_volume_key)
    def ControllerExpandVolume(self, request: csi_pb2.ControllerExpandVolumeRequest,
                               context: grpc.ServicerContext) -> csi_pb2.ControllerExpandVolumeResponse:
        """The catalog's size limit raised to ``required_bytes`` (never lowered). The node
        that writes the volume takes it at NodeExpandVolume (or when it next opens it)."""
        volume_id = required(request.volume_id, "volume_id")
        if not request.HasField("capacity_range"):
            raise invalid("capacity_range is required")
        if request.HasField("volume_capability"):
            checks.capability(request.volume_capability)
        want, most = checks.capacity(request.capacity_range)
        if not want:
            raise invalid("capacity_range: required_bytes or limit_bytes is required")
        name = checks.volume_name(volume_id)
        if name is None or self.daemon.find("volume.info", name=name) is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        limit = self.daemon.call("volume.expand", name=name, size=want)["size_bytes"]
        if most and limit > most:
            raise Abort(Code.OUT_OF_RANGE, f"volume {name!r} has a size limit of {limit} bytes already, more than "
                        f"limit_bytes {most}; it is never made smaller")
        # A volume without a limit holds any size: the capacity asked for is there.
        return csi_pb2.ControllerExpandVolumeResponse(capacity_bytes=limit or want, node_expansion_required=True)


def _snapshot(info: dict[str, Any]) -> csi_pb2.Snapshot:
    created = calendar.timegm(time.strptime(info["created"], "%Y-%m-%dT%H:%M:%SZ"))
    return csi_pb2.Snapshot(size_bytes=info["used_bytes"], snapshot_id=info["name"], source_volume_id=info["volume"],
                            creation_time=timestamp_pb2.Timestamp(seconds=created), ready_to_use=True)


# --- Node -------------------------------------------------------------------------------

NodeRPC = csi_pb2.NodeServiceCapability.RPC
NODE_CAPABILITIES = (NodeRPC.STAGE_UNSTAGE_VOLUME, NodeRPC.GET_VOLUME_STATS, NodeRPC.EXPAND_VOLUME,
                     NodeRPC.VOLUME_CONDITION, NodeRPC.SINGLE_NODE_MULTI_WRITER)


class Node(Base, csi_pb2_grpc.NodeServicer):
    @rpc()
    def NodeGetCapabilities(self, request: csi_pb2.NodeGetCapabilitiesRequest,
                            context: grpc.ServicerContext) -> csi_pb2.NodeGetCapabilitiesResponse:
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[
            csi_pb2.NodeServiceCapability(rpc=NodeRPC(type=cap)) for cap in NODE_CAPABILITIES])

    @rpc()
    def NodeGetInfo(self, request: csi_pb2.NodeGetInfoRequest,
                    context: grpc.ServicerContext) -> csi_pb2.NodeGetInfoResponse:
        cluster = self.daemon.call("status")["cluster"]
        return csi_pb2.NodeGetInfoResponse(node_id=cluster["node_id"], accessible_topology=csi_pb2.Topology(
            segments={TOPOLOGY_KEY: cluster["name"]}))

    def _mounts(self) -> dict[str, dict[str, Any]]:
        """The node's recorded mounts by path."""
        return {m["path"]: m for m in self.daemon.call("mount.ls")}

    def _existing(self, name: str) -> None:
        if self.daemon.find("volume.info", name=name) is None:
            raise Abort(Code.NOT_FOUND, f"no volume {name!r}")

    @rpc(key=_volume_key)
    def NodeStageVolume(self, request: csi_pb2.NodeStageVolumeRequest,
                        context: grpc.ServicerContext) -> csi_pb2.NodeStageVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        path = _path(required(request.staging_target_path, "staging_target_path"))
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        mode = checks.capability(request.volume_capability)
        name = checks.volume_name(volume_id)
        if name is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        read_only = mode in checks.READER_MODES or request.publish_context.get(READ_ONLY_CONTEXT) == "true"
        there = self._mounts().get(path)
        if there is not None:
            _same(there, name, read_only, path)
            return csi_pb2.NodeStageVolumeResponse()
        self._existing(name)
        self.daemon.call("mount", name=name, path=path, read_only=read_only)
        return csi_pb2.NodeStageVolumeResponse()

    @rpc(key=_volume_key)
    def NodeUnstageVolume(self, request: csi_pb2.NodeUnstageVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodeUnstageVolumeResponse:
        """Unmount the staging path; nothing staged there (also a path already gone) is done."""
        volume_id = required(request.volume_id, "volume_id")
        path = _path(required(request.staging_target_path, "staging_target_path"))
        self._unmount(volume_id, path)
        return csi_pb2.NodeUnstageVolumeResponse()

    @rpc(key=_volume_key)
    def NodePublishVolume(self, request: csi_pb2.NodePublishVolumeRequest,
                          context: grpc.ServicerContext) -> csi_pb2.NodePublishVolumeResponse:
        volume_id = required(request.volume_id, "volume_id")
        target = _path(required(request.target_path, "target_path"))
        if not request.HasField("volume_capability"):
            raise invalid("volume_capability is required")
        mode = checks.capability(request.volume_capability)
        if not request.staging_target_path:
            raise Abort(Code.FAILED_PRECONDITION, "staging_target_path is required: stage the volume first "
                        "(STAGE_UNSTAGE_VOLUME)")
        staging = _path(request.staging_target_path)
        name = checks.volume_name(volume_id)
        if name is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        self._existing(name)
        mounts = self._mounts()
        staged = mounts.get(staging)
        if staged is None or staged["volume"] != name:
            raise Abort(Code.FAILED_PRECONDITION, f"volume {name!r} is not staged at {staging}: NodeStageVolume first")
        read_only = request.readonly or mode in checks.READER_MODES or staged["read_only"]
        there = mounts.get(target)
        if there is not None:
            _same(there, name, read_only, target)
            return csi_pb2.NodePublishVolumeResponse()
        others = sorted(p for p, m in mounts.items() if m["volume"] == name and p not in (staging, target))
        if others and mode not in checks.SHARED_ON_NODE:
            raise Abort(Code.FAILED_PRECONDITION, f"volume {name!r} is published at {', '.join(others)} already; "
                        f"access mode {Mode.Name(mode)} allows one target (SINGLE_NODE_MULTI_WRITER allows more)")
        made = _make_target(target)
        try:
            self.daemon.call("mount", name=name, path=target, read_only=read_only)
        except BaseException:
            if made:
                _remove_target(target)
            raise
        return csi_pb2.NodePublishVolumeResponse()

    @rpc(key=_volume_key)
    def NodeUnpublishVolume(self, request: csi_pb2.NodeUnpublishVolumeRequest,
                            context: grpc.ServicerContext) -> csi_pb2.NodeUnpublishVolumeResponse:
        """Unmount the target path and remove the directory NodePublishVolume made there;
        nothing published there (also a path already gone) is done."""
        volume_id = required(request.volume_id, "volume_id")
        target = _path(required(request.target_path, "target_path"))
        if self._unmount(volume_id, target):
            _remove_target(target)
        return csi_pb2.NodeUnpublishVolumeResponse()

    def _unmount(self, volume_id: str, path: str) -> bool:
        """Unmount ``path`` if it holds ``volume_id`` here; whether the path is free of it."""
        there = self._mounts().get(path)
        if there is None:
            return True
        if there["volume"] != volume_id:
            log.warning("%s holds volume %s, not %s: left alone", path, there["volume"], volume_id)
            return False
        try:
            self.daemon.call("umount", path=path, codes={"UserError": Code.FAILED_PRECONDITION})
        except Abort as exc:
            if path in self._mounts():
                raise
            log.info("%s was unmounted meanwhile (%s)", path, exc.message)
        return True

    @rpc(key=_volume_key)
    def NodeGetVolumeStats(self, request: csi_pb2.NodeGetVolumeStatsRequest,
                           context: grpc.ServicerContext) -> csi_pb2.NodeGetVolumeStatsResponse:
        """Bytes: in use, and what the volume may still take (its size limit, or the node's
        free disk without one, whichever is less); inodes: in use, and the numbers left.
        The condition: the daemon's view (fenced, degraded, copies), or a dead mount here."""
        volume_id = required(request.volume_id, "volume_id")
        path = _path(required(request.volume_path, "volume_path"))
        name = checks.volume_name(volume_id)
        if name is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        self._existing(name)
        there = self._mounts().get(path)
        if there is None or there["volume"] != name:
            raise Abort(Code.NOT_FOUND, f"volume {name!r} is not mounted at {path} on this node")
        stats = self.daemon.call("volume.stats", name=name)
        used, limit, free = stats["used_bytes"], stats["size_bytes"], stats["free_bytes"]
        available = min(max(0, limit - used), free) if limit else free
        Unit = csi_pb2.VolumeUsage.Unit
        usage = [csi_pb2.VolumeUsage(unit=Unit.BYTES, used=used, available=available,
                                     total=limit if limit else used + free),
                 csi_pb2.VolumeUsage(unit=Unit.INODES, used=stats["inodes"], available=stats["inodes_free"],
                                     total=min(checks.MAX_INT64, stats["inodes"] + stats["inodes_free"]))]
        condition = self.condition(name)
        dead = _dead(path) if there["mounted"] else f"{path} is not mounted"
        if dead is not None:
            condition = csi_pb2.VolumeCondition(abnormal=True, message=dead)
        return csi_pb2.NodeGetVolumeStatsResponse(usage=usage, volume_condition=condition)

    @rpc(key=_volume_key)
    def NodeExpandVolume(self, request: csi_pb2.NodeExpandVolumeRequest,
                         context: grpc.ServicerContext) -> csi_pb2.NodeExpandVolumeResponse:
        """This node takes the catalog's size limit (ControllerExpandVolume raised it): a
        FUSE filesystem has nothing to grow, only the limit it enforces."""
        volume_id = required(request.volume_id, "volume_id")
        path = _path(required(request.volume_path, "volume_path"))
        if request.HasField("volume_capability"):
            checks.capability(request.volume_capability)
        want, _most = checks.capacity(request.capacity_range if request.HasField("capacity_range") else None)
        name = checks.volume_name(volume_id)
        if name is None:
            raise Abort(Code.NOT_FOUND, f"no volume {volume_id!r}")
        self._existing(name)
        there = self._mounts().get(path)
        if there is None or there["volume"] != name:
            raise Abort(Code.NOT_FOUND, f"volume {name!r} is not mounted at {path} on this node")
        limit = self.daemon.call("volume.expand", name=name)["size_bytes"]
        if limit and want > limit:
            raise Abort(Code.OUT_OF_RANGE, f"volume {name!r} may hold {limit} bytes; ControllerExpandVolume raises "
                        f"that to {want} first")
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=limit or want)


def _path(raw: str) -> str:
    """A path of the request as the daemon records it: absolute, symbolic links resolved."""
    if not os.path.isabs(raw):
        raise invalid(f"{raw!r} is not an absolute path")
    return os.path.realpath(raw)


def _same(there: dict[str, Any], name: str, read_only: bool, path: str) -> None:
    """A mount already at ``path`` answers a stage or publish only if it is the one asked for."""
    if there["volume"] != name:
        raise Abort(Code.ALREADY_EXISTS, f"{path} holds volume {there['volume']!r}, not {name!r}")
    if there["read_only"] != read_only:
        mode = "read-only" if there["read_only"] else "read-write"
        raise Abort(Code.ALREADY_EXISTS, f"volume {name!r} is mounted {mode} at {path} already")


def _make_target(target: str) -> bool:
    """The target directory (the plugin makes it, the spec says); whether it was made now."""
    try:
        os.mkdir(target, 0o750)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        raise invalid(f"the parent of target_path {target} does not exist") from None


def _remove_target(target: str) -> None:
    try:
        os.rmdir(target)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove the target directory %s: %s", target, exc)


def _dead(path: str) -> str | None:
    """Why the mount at ``path`` cannot serve (its FUSE server gone), or None."""
    try:
        os.statvfs(path)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return f"the mount at {path} is dead (its daemon stopped); it is bound again when the daemon starts"
        return f"the mount at {path} cannot be read: {exc.strerror}"
    return None
