"""Each CSI call as csi-sanity (kubernetes-csi/csi-test, pkg/sanity) checks it, written
as our own tests from the CSI spec v1.9.0: missing and invalid arguments, ids that name
nothing, idempotency, pagination, the access cfs refuses, and the gRPC code the spec
names for each case; a refused call changes nothing. One real daemon and one real plugin
(gRPC over its unix socket) serve the module; volumes are real, mounts are real."""

from __future__ import annotations

import concurrent.futures
import errno
import os
from pathlib import Path

import grpc
import pytest

from tests.csi.plugin import Mode, Plugin, call, cap, create_request, refused
from tools.csi.generated import csi_pb2 as pb

Code = grpc.StatusCode
GiB = 1 << 30
SANITY_MAX_NAME = 128
"""csi-sanity's MaxNameLength: CSI's size limit of a string field."""


def volumes(csi: Plugin) -> list[str]:
    return [e.volume.volume_id for e in call(csi.controller.ListVolumes, pb.ListVolumesRequest()).entries]


def snapshots(csi: Plugin) -> list[str]:
    return [e.snapshot.snapshot_id for e in call(csi.controller.ListSnapshots, pb.ListSnapshotsRequest()).entries]


def node_id(csi: Plugin) -> str:
    return str(call(csi.node.NodeGetInfo, pb.NodeGetInfoRequest()).node_id)


def mounted(path: Path) -> bool:
    return os.path.ismount(path)


def stage_request(volume: str, path: Path, mode: int = Mode.SINGLE_NODE_WRITER,
                  context: dict[str, str] | None = None) -> pb.NodeStageVolumeRequest:
    return pb.NodeStageVolumeRequest(volume_id=volume, staging_target_path=str(path), volume_capability=cap(mode),
                                     publish_context=context or {})


def publish_request(volume: str, staging: Path, target: Path, mode: int = Mode.SINGLE_NODE_WRITER,
                    readonly: bool = False) -> pb.NodePublishVolumeRequest:
    return pb.NodePublishVolumeRequest(volume_id=volume, staging_target_path=str(staging), target_path=str(target),
                                       volume_capability=cap(mode), readonly=readonly)


def dirs(workdir: Path, name: str) -> tuple[Path, Path]:
    """A staging directory (made, as the orchestrator does) and a target path whose parent
    exists (the plugin makes the target itself)."""
    staging = workdir / "staging" / name
    staging.mkdir(parents=True)
    parent = workdir / "pods" / name
    parent.mkdir(parents=True)
    return staging, parent / "mount"


# --- Identity ---------------------------------------------------------------------------

def test_identity(csi: Plugin) -> None:
    info = call(csi.identity.GetPluginInfo, pb.GetPluginInfoRequest())
    assert info.name == "csi.cfs.dev" and info.vendor_version and info.manifest["csi-spec"] == "1.9.0"
    caps = call(csi.identity.GetPluginCapabilities, pb.GetPluginCapabilitiesRequest()).capabilities
    Service, Expansion = pb.PluginCapability.Service, pb.PluginCapability.VolumeExpansion
    assert {c.service.type for c in caps if c.HasField("service")} == {
        Service.CONTROLLER_SERVICE, Service.VOLUME_ACCESSIBILITY_CONSTRAINTS}
    assert [c.volume_expansion.type for c in caps if c.HasField("volume_expansion")] == [Expansion.ONLINE]
    assert call(csi.identity.Probe, pb.ProbeRequest()).ready.value


# --- Controller ------------------------------------------------------------------------

def test_controller_capabilities_and_capacity(csi: Plugin) -> None:
    RPC = pb.ControllerServiceCapability.RPC
    caps = {c.rpc.type for c in call(csi.controller.ControllerGetCapabilities,
                                     pb.ControllerGetCapabilitiesRequest()).capabilities}
    assert caps == {RPC.CREATE_DELETE_VOLUME, RPC.PUBLISH_UNPUBLISH_VOLUME, RPC.LIST_VOLUMES, RPC.GET_CAPACITY,
                    RPC.CREATE_DELETE_SNAPSHOT, RPC.LIST_SNAPSHOTS, RPC.CLONE_VOLUME, RPC.PUBLISH_READONLY,
                    RPC.EXPAND_VOLUME, RPC.LIST_VOLUMES_PUBLISHED_NODES, RPC.VOLUME_CONDITION, RPC.GET_VOLUME,
                    RPC.SINGLE_NODE_MULTI_WRITER}
    free = csi.daemon.api("status")["store"]["free_bytes"]
    capacity = call(csi.controller.GetCapacity, pb.GetCapacityRequest()).available_capacity
    assert 0 < capacity and abs(capacity - free) < 64 << 20  # the node's store: the same, give or take a commit
    topology = call(csi.node.NodeGetInfo, pb.NodeGetInfoRequest()).accessible_topology
    assert call(csi.controller.GetCapacity, pb.GetCapacityRequest(volume_capabilities=[cap()],
                                                                  accessible_topology=topology)).available_capacity
    for unservable in (pb.GetCapacityRequest(volume_capabilities=[cap(Mode.MULTI_NODE_MULTI_WRITER)]),
                       pb.GetCapacityRequest(volume_capabilities=[cap(block=True)]),
                       pb.GetCapacityRequest(parameters={"fstype": "ext4"}),
                       pb.GetCapacityRequest(accessible_topology=pb.Topology(segments={"zone": "z1"}))):
        assert call(csi.controller.GetCapacity, unservable).available_capacity == 0


def test_create_volume_refuses_what_it_cannot_serve_and_changes_nothing(csi: Plugin) -> None:
    before = volumes(csi)
    bad = [
        (pb.CreateVolumeRequest(volume_capabilities=[cap()]), Code.INVALID_ARGUMENT, "name is required"),
        (pb.CreateVolumeRequest(name="nocaps"), Code.INVALID_ARGUMENT, "volume_capabilities is required"),
        (pb.CreateVolumeRequest(name="blk", volume_capabilities=[cap(block=True)]), Code.INVALID_ARGUMENT,
         "block volumes are not served"),
        (pb.CreateVolumeRequest(name="ext", volume_capabilities=[cap(fs_type="ext4")]), Code.INVALID_ARGUMENT,
         "ext4"),
        (create_request("bad name"), Code.INVALID_ARGUMENT, "volume name"),
        (create_request("unknown-param", fstype="ext4"), Code.INVALID_ARGUMENT, "unknown parameter(s) fstype"),
        (create_request("bad-replicas", replicas="two"), Code.INVALID_ARGUMENT, "not a whole number"),
        (create_request("many-replicas", replicas="9"), Code.INVALID_ARGUMENT, "between 1 and 5"),
        (create_request("bad-block", block_size="1000"), Code.INVALID_ARGUMENT, "power of two"),
        (pb.CreateVolumeRequest(name="range", volume_capabilities=[cap()],
                                capacity_range=pb.CapacityRange(required_bytes=2, limit_bytes=1)),
         Code.OUT_OF_RANGE, "above limit_bytes"),
        (pb.CreateVolumeRequest(name="mutable", volume_capabilities=[cap()], mutable_parameters={"a": "b"}),
         Code.INVALID_ARGUMENT, "MODIFY_VOLUME"),
        (pb.CreateVolumeRequest(name="elsewhere", volume_capabilities=[cap()],
                                accessibility_requirements=pb.TopologyRequirement(
                                    requisite=[pb.Topology(segments={"zone": "z9"})])),
         Code.RESOURCE_EXHAUSTED, "accessibility_requirements"),
    ]
    for mode in (Mode.MULTI_NODE_READER_ONLY, Mode.MULTI_NODE_SINGLE_WRITER, Mode.MULTI_NODE_MULTI_WRITER):
        bad.append((create_request(f"multi-{mode}", mode=mode), Code.INVALID_ARGUMENT, "one node at a time"))
    for request, code, match in bad:
        refused(code, csi.controller.CreateVolume, request, match)
    assert volumes(csi) == before


def test_create_volume_is_idempotent_by_name(csi: Plugin) -> None:
    first = call(csi.controller.CreateVolume, create_request("idem", GiB, replicas="1")).volume
    assert (first.volume_id, first.capacity_bytes) == ("idem", GiB)
    assert [dict(t.segments) for t in first.accessible_topology] == [{"topology.csi.cfs.dev/cluster": "cfs"}]
    again = call(csi.controller.CreateVolume, create_request("idem", GiB, replicas="1")).volume
    assert again == first
    refused(Code.ALREADY_EXISTS, csi.controller.CreateVolume, create_request("idem", 2 * GiB), "size limit")
    refused(Code.ALREADY_EXISTS, csi.controller.CreateVolume, create_request("idem", GiB, block_size="4096"),
            "block size is 65536")
    refused(Code.ALREADY_EXISTS, csi.controller.CreateVolume, create_request("idem", GiB, snapshot="idem@s"),
            "content source is none")
    within = pb.CreateVolumeRequest(name="idem", volume_capabilities=[cap()],
                                    capacity_range=pb.CapacityRange(required_bytes=GiB // 2, limit_bytes=GiB))
    assert call(csi.controller.CreateVolume, within).volume == first  # a range the volume satisfies
    assert volumes(csi).count("idem") == 1
    unlimited = call(csi.controller.CreateVolume, create_request("unlimited")).volume
    assert unlimited.capacity_bytes == 0  # no limit: capacity unknown, as the spec puts it
    longest = "n" * SANITY_MAX_NAME
    assert call(csi.controller.CreateVolume, create_request(longest, GiB)).volume.volume_id == longest
    for name in ("idem", "unlimited", longest):
        call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=name))


def test_identical_calls_at_once_act_as_one(csi: Plugin, workdir: Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: call(csi.controller.CreateVolume, create_request("racy", GiB)).volume,
                             range(8)))
        assert all(v == made[0] for v in made) and volumes(csi).count("racy") == 1
        nid = node_id(csi)
        publish = pb.ControllerPublishVolumeRequest(volume_id="racy", node_id=nid, volume_capability=cap())
        contexts = list(pool.map(lambda _: call(csi.controller.ControllerPublishVolume, publish).publish_context,
                                 range(4)))
        assert all(c == contexts[0] for c in contexts)
        staging, target = dirs(workdir, "racy")
        list(pool.map(lambda _: call(csi.node.NodeStageVolume, stage_request("racy", staging)), range(4)))
        list(pool.map(lambda _: call(csi.node.NodePublishVolume, publish_request("racy", staging, target)),
                      range(4)))
        mounts = [m for m in csi.daemon.api("mount.ls") if m["volume"] == "racy"]
        assert sorted(m["path"] for m in mounts) == sorted([str(staging), str(target)])
        taken = list(pool.map(lambda _: call(csi.controller.CreateSnapshot, pb.CreateSnapshotRequest(
            source_volume_id="racy", name="racy-snap")).snapshot, range(4)))
        assert all(s == taken[0] for s in taken) and snapshots(csi).count("racy@racy-snap") == 1
        list(pool.map(lambda _: call(csi.node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(
            volume_id="racy", target_path=str(target))), range(4)))
        list(pool.map(lambda _: call(csi.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(
            volume_id="racy", staging_target_path=str(staging))), range(4)))
    assert not mounted(staging) and not target.exists()
    call(csi.controller.ControllerUnpublishVolume, pb.ControllerUnpublishVolumeRequest(volume_id="racy"))
    call(csi.controller.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id="racy@racy-snap"))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="racy"))


def test_volumes_from_a_snapshot_and_from_a_volume(csi: Plugin, workdir: Path) -> None:
    call(csi.controller.CreateVolume, create_request("origin", 64 << 20))
    staging, _target = dirs(workdir, "origin")
    call(csi.node.NodeStageVolume, stage_request("origin", staging))
    (staging / "data").write_bytes(os.urandom(300_000))
    snap = call(csi.controller.CreateSnapshot, pb.CreateSnapshotRequest(source_volume_id="origin",
                                                                        name="origin-snap")).snapshot
    assert snap.snapshot_id == "origin@origin-snap" and snap.source_volume_id == "origin" and snap.ready_to_use
    assert snap.size_bytes >= 300_000 and snap.creation_time.seconds > 0
    from_snap = call(csi.controller.CreateVolume, create_request("from-snap", 64 << 20, snapshot=snap.snapshot_id))
    assert from_snap.volume.content_source.snapshot.snapshot_id == snap.snapshot_id
    from_vol = call(csi.controller.CreateVolume, create_request("from-vol", 64 << 20, volume="origin"))
    assert from_vol.volume.content_source.volume.volume_id == "origin"
    again = call(csi.controller.CreateVolume, create_request("from-snap", 64 << 20, snapshot=snap.snapshot_id))
    assert again.volume == from_snap.volume
    refused(Code.NOT_FOUND, csi.controller.CreateVolume, create_request("x1", snapshot="origin@nothing"),
            "does not exist")
    refused(Code.NOT_FOUND, csi.controller.CreateVolume, create_request("x2", snapshot="not-a-snapshot-id"))
    refused(Code.NOT_FOUND, csi.controller.CreateVolume, create_request("x3", volume="nothing"), "does not exist")
    refused(Code.OUT_OF_RANGE, csi.controller.CreateVolume, create_request("x4", 4096, volume="origin"),
            "more than the 4096 asked for")
    assert not {"x1", "x2", "x3", "x4"} & set(volumes(csi))
    call(csi.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id="origin",
                                                                 staging_target_path=str(staging)))
    # volumes and snapshots are independent: the source goes, its snapshot and clones stay
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="origin"))
    assert "origin@origin-snap" in snapshots(csi)
    for name in ("from-snap", "from-vol"):
        call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=name))
    call(csi.controller.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))


def test_delete_volume(csi: Plugin) -> None:
    refused(Code.INVALID_ARGUMENT, csi.controller.DeleteVolume, pb.DeleteVolumeRequest(), "volume_id is required")
    for missing in ("no-such-volume", "not a volume id", "a@b"):
        call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=missing))
    call(csi.controller.CreateVolume, create_request("doomed"))
    call(csi.controller.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
        volume_id="doomed", node_id=node_id(csi), volume_capability=cap()))
    refused(Code.FAILED_PRECONDITION, csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="doomed"),
            "attached")
    assert "doomed" in volumes(csi)
    call(csi.controller.ControllerUnpublishVolume, pb.ControllerUnpublishVolumeRequest(volume_id="doomed"))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="doomed"))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="doomed"))
    assert "doomed" not in volumes(csi)


def test_validate_volume_capabilities(csi: Plugin) -> None:
    call(csi.controller.CreateVolume, create_request("valid", replicas="1"))
    validate = csi.controller.ValidateVolumeCapabilities
    refused(Code.INVALID_ARGUMENT, validate, pb.ValidateVolumeCapabilitiesRequest(volume_capabilities=[cap()]))
    refused(Code.INVALID_ARGUMENT, validate, pb.ValidateVolumeCapabilitiesRequest(volume_id="valid"),
            "volume_capabilities is required")
    refused(Code.NOT_FOUND, validate, pb.ValidateVolumeCapabilitiesRequest(volume_id="nothing",
                                                                           volume_capabilities=[cap()]))
    ok = call(validate, pb.ValidateVolumeCapabilitiesRequest(
        volume_id="valid", volume_capabilities=[cap(), cap(Mode.SINGLE_NODE_READER_ONLY)],
        parameters={"replicas": "1"}))
    assert list(ok.confirmed.volume_capabilities) == [cap(), cap(Mode.SINGLE_NODE_READER_ONLY)]
    for caps, params, why in (([cap(Mode.MULTI_NODE_READER_ONLY)], {}, "one node at a time"),
                              ([cap(), cap(block=True)], {}, "block"),
                              ([cap()], {"replicas": "2"}, "replicas"),
                              ([cap()], {"fstype": "x"}, "unknown parameter")):
        answer = call(validate, pb.ValidateVolumeCapabilitiesRequest(volume_id="valid", volume_capabilities=caps,
                                                                     parameters=params))
        assert not answer.HasField("confirmed") and why in answer.message
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="valid"))


def test_list_volumes_pages_and_tokens(csi: Plugin) -> None:
    refused(Code.ABORTED, csi.controller.ListVolumes, pb.ListVolumesRequest(starting_token="invalid-token"))
    refused(Code.INVALID_ARGUMENT, csi.controller.ListVolumes, pb.ListVolumesRequest(max_entries=-1))
    names = [f"page-{i}" for i in range(5)]
    for name in names:
        call(csi.controller.CreateVolume, create_request(name))
    everything = volumes(csi)
    seen: list[str] = []
    token = ""
    while True:
        page = call(csi.controller.ListVolumes, pb.ListVolumesRequest(max_entries=2, starting_token=token))
        assert len(page.entries) <= 2
        seen += [e.volume.volume_id for e in page.entries]
        for entry in page.entries:  # LIST_VOLUMES_PUBLISHED_NODES and VOLUME_CONDITION: always there
            assert entry.HasField("status") and entry.status.HasField("volume_condition")
            assert not entry.status.volume_condition.abnormal
        token = page.next_token
        if not token:
            break
    assert seen == everything == sorted(everything)
    first = call(csi.controller.ListVolumes, pb.ListVolumesRequest(max_entries=2))
    for entry in first.entries:  # the page's volumes go; its token still leads on
        call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=entry.volume.volume_id))
    call(csi.controller.CreateVolume, create_request("page-9"))  # added between the pages, after them
    rest = call(csi.controller.ListVolumes, pb.ListVolumesRequest(starting_token=first.next_token))
    listed = [e.volume.volume_id for e in rest.entries]
    assert "page-9" in listed and not {e.volume.volume_id for e in first.entries} & set(listed)
    for name in [*names, "page-9"]:
        call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=name))


def test_controller_publish_and_unpublish(csi: Plugin) -> None:
    publish, unpublish = csi.controller.ControllerPublishVolume, csi.controller.ControllerUnpublishVolume
    nid = node_id(csi)
    call(csi.controller.CreateVolume, create_request("attach"))
    refused(Code.INVALID_ARGUMENT, publish, pb.ControllerPublishVolumeRequest(), "volume_id is required")
    refused(Code.INVALID_ARGUMENT, publish, pb.ControllerPublishVolumeRequest(volume_id="attach"), "node_id")
    refused(Code.INVALID_ARGUMENT, publish, pb.ControllerPublishVolumeRequest(volume_id="attach", node_id=nid),
            "volume_capability is required")
    refused(Code.INVALID_ARGUMENT, publish, pb.ControllerPublishVolumeRequest(
        volume_id="attach", node_id=nid, volume_capability=cap(Mode.MULTI_NODE_MULTI_WRITER)), "one node at a time")
    refused(Code.NOT_FOUND, publish, pb.ControllerPublishVolumeRequest(
        volume_id="fake-vol-id-1", node_id=nid, volume_capability=cap()), "no volume")
    for fake in ("fake-node-id-0123456789", "00" * 16):
        refused(Code.NOT_FOUND, publish, pb.ControllerPublishVolumeRequest(
            volume_id="attach", node_id=fake, volume_capability=cap()), "no node")
    assert csi.daemon.api("volume.attachments") == []
    request = pb.ControllerPublishVolumeRequest(volume_id="attach", node_id=nid, volume_capability=cap())
    context = call(publish, request).publish_context
    assert dict(context) == {"cfs.dev/read-only": "false"}
    assert call(publish, request).publish_context == context
    refused(Code.ALREADY_EXISTS, publish, pb.ControllerPublishVolumeRequest(
        volume_id="attach", node_id=nid, volume_capability=cap(), readonly=True), "read-write")
    status = call(csi.controller.ControllerGetVolume, pb.ControllerGetVolumeRequest(volume_id="attach")).status
    assert list(status.published_node_ids) == [nid]
    refused(Code.INVALID_ARGUMENT, unpublish, pb.ControllerUnpublishVolumeRequest(), "volume_id is required")
    call(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id="attach", node_id="fake-node-id"))
    assert [a["volume"] for a in csi.daemon.api("volume.attachments")] == ["attach"]
    call(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id="attach", node_id=nid))
    call(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id="attach", node_id=nid))
    call(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id="no-such-volume", node_id=nid))
    assert csi.daemon.api("volume.attachments") == []
    reader = pb.ControllerPublishVolumeRequest(volume_id="attach", node_id=nid,
                                               volume_capability=cap(Mode.SINGLE_NODE_READER_ONLY))
    assert dict(call(publish, reader).publish_context) == {"cfs.dev/read-only": "true"}
    call(unpublish, pb.ControllerUnpublishVolumeRequest(volume_id="attach"))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="attach"))


def test_controller_get_volume(csi: Plugin) -> None:
    get = csi.controller.ControllerGetVolume
    refused(Code.INVALID_ARGUMENT, get, pb.ControllerGetVolumeRequest())
    refused(Code.NOT_FOUND, get, pb.ControllerGetVolumeRequest(volume_id="nothing"))
    refused(Code.NOT_FOUND, get, pb.ControllerGetVolumeRequest(volume_id="a@b"))
    made = call(csi.controller.CreateVolume, create_request("got", 8 << 20)).volume
    got = call(get, pb.ControllerGetVolumeRequest(volume_id="got"))
    assert got.volume == made and list(got.status.published_node_ids) == []
    assert not got.status.volume_condition.abnormal and "1 (1 wanted)" in got.status.volume_condition.message
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="got"))


def test_snapshots(csi: Plugin) -> None:
    create, delete, ls = csi.controller.CreateSnapshot, csi.controller.DeleteSnapshot, csi.controller.ListSnapshots
    for volume in ("snap-a", "snap-b"):
        call(csi.controller.CreateVolume, create_request(volume))
    refused(Code.INVALID_ARGUMENT, create, pb.CreateSnapshotRequest(source_volume_id="snap-a"), "name is required")
    refused(Code.INVALID_ARGUMENT, create, pb.CreateSnapshotRequest(name="s"), "source_volume_id is required")
    refused(Code.INVALID_ARGUMENT, create, pb.CreateSnapshotRequest(source_volume_id="snap-a", name="a b"))
    refused(Code.INVALID_ARGUMENT, create, pb.CreateSnapshotRequest(source_volume_id="snap-a", name="s",
                                                                    parameters={"x": "y"}), "snapshots take none")
    refused(Code.NOT_FOUND, create, pb.CreateSnapshotRequest(source_volume_id="no-volume", name="s"))
    before = snapshots(csi)
    first = call(create, pb.CreateSnapshotRequest(source_volume_id="snap-a", name="one")).snapshot
    assert call(create, pb.CreateSnapshotRequest(source_volume_id="snap-a", name="one")).snapshot == first
    refused(Code.ALREADY_EXISTS, create, pb.CreateSnapshotRequest(source_volume_id="snap-b", name="one"),
            "snap-a@one")
    longest = "s" * SANITY_MAX_NAME
    call(create, pb.CreateSnapshotRequest(source_volume_id="snap-a", name=longest))
    names = [f"p{i}" for i in range(4)]
    for name in names:
        call(create, pb.CreateSnapshotRequest(source_volume_id="snap-b", name=name))
    assert sorted(snapshots(csi)) == sorted([*before, "snap-a@one", f"snap-a@{longest}",
                                              *[f"snap-b@{n}" for n in names]])
    by_id = call(ls, pb.ListSnapshotsRequest(snapshot_id="snap-a@one")).entries
    assert [e.snapshot for e in by_id] == [first]
    assert call(ls, pb.ListSnapshotsRequest(snapshot_id="none-exist-id")).entries == []
    assert call(ls, pb.ListSnapshotsRequest(snapshot_id="snap-a@none")).entries == []
    of_b = [e.snapshot.snapshot_id for e in call(ls, pb.ListSnapshotsRequest(source_volume_id="snap-b")).entries]
    assert of_b == [f"snap-b@{n}" for n in names]
    assert call(ls, pb.ListSnapshotsRequest(source_volume_id="no-volume")).entries == []
    page = call(ls, pb.ListSnapshotsRequest(max_entries=2, source_volume_id="snap-b"))
    assert len(page.entries) == 2 and page.next_token
    rest = call(ls, pb.ListSnapshotsRequest(starting_token=page.next_token, source_volume_id="snap-b"))
    assert [e.snapshot.snapshot_id for e in [*page.entries, *rest.entries]] == of_b and not rest.next_token
    refused(Code.ABORTED, ls, pb.ListSnapshotsRequest(starting_token="invalid-token"))
    refused(Code.INVALID_ARGUMENT, delete, pb.DeleteSnapshotRequest(), "snapshot_id is required")
    for gone in ("snap-a@none", "not-a-snapshot-id", "nothing@x"):
        call(delete, pb.DeleteSnapshotRequest(snapshot_id=gone))
    for sid in ["snap-a@one", f"snap-a@{longest}", *[f"snap-b@{n}" for n in names]]:
        call(delete, pb.DeleteSnapshotRequest(snapshot_id=sid))
        call(delete, pb.DeleteSnapshotRequest(snapshot_id=sid))
    assert snapshots(csi) == before
    for volume in ("snap-a", "snap-b"):
        call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume))


def test_controller_expand_volume(csi: Plugin) -> None:
    expand = csi.controller.ControllerExpandVolume
    call(csi.controller.CreateVolume, create_request("grow", 1 << 20))
    refused(Code.INVALID_ARGUMENT, expand, pb.ControllerExpandVolumeRequest(
        capacity_range=pb.CapacityRange(required_bytes=1)), "volume_id is required")
    refused(Code.INVALID_ARGUMENT, expand, pb.ControllerExpandVolumeRequest(volume_id="grow"),
            "capacity_range is required")
    refused(Code.NOT_FOUND, expand, pb.ControllerExpandVolumeRequest(
        volume_id="nothing", capacity_range=pb.CapacityRange(required_bytes=2 << 20)))
    refused(Code.INVALID_ARGUMENT, expand, pb.ControllerExpandVolumeRequest(
        volume_id="grow", capacity_range=pb.CapacityRange(required_bytes=2 << 20),
        volume_capability=cap(Mode.MULTI_NODE_MULTI_WRITER)))
    grown = call(expand, pb.ControllerExpandVolumeRequest(volume_id="grow",
                                                          capacity_range=pb.CapacityRange(required_bytes=4 << 20)))
    assert (grown.capacity_bytes, grown.node_expansion_required) == (4 << 20, True)
    smaller = call(expand, pb.ControllerExpandVolumeRequest(volume_id="grow",
                                                            capacity_range=pb.CapacityRange(required_bytes=2 << 20)))
    assert smaller.capacity_bytes == 4 << 20  # never made smaller: already as large, OK
    refused(Code.OUT_OF_RANGE, expand, pb.ControllerExpandVolumeRequest(
        volume_id="grow", capacity_range=pb.CapacityRange(required_bytes=1 << 20, limit_bytes=2 << 20)),
            "never made smaller")
    assert call(csi.controller.ControllerGetVolume,
                pb.ControllerGetVolumeRequest(volume_id="grow")).volume.capacity_bytes == 4 << 20
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="grow"))


# --- Node -------------------------------------------------------------------------------

def test_node_capabilities_and_info(csi: Plugin) -> None:
    RPC = pb.NodeServiceCapability.RPC
    caps = {c.rpc.type for c in call(csi.node.NodeGetCapabilities, pb.NodeGetCapabilitiesRequest()).capabilities}
    assert caps == {RPC.STAGE_UNSTAGE_VOLUME, RPC.GET_VOLUME_STATS, RPC.EXPAND_VOLUME, RPC.VOLUME_CONDITION,
                    RPC.SINGLE_NODE_MULTI_WRITER}
    info = call(csi.node.NodeGetInfo, pb.NodeGetInfoRequest())
    status = csi.daemon.api("status")["cluster"]
    assert info.node_id == status["node_id"] and len(info.node_id) == 32
    assert dict(info.accessible_topology.segments) == {"topology.csi.cfs.dev/cluster": status["name"]}


def test_node_stage_and_unstage(csi: Plugin, workdir: Path) -> None:
    stage, unstage = csi.node.NodeStageVolume, csi.node.NodeUnstageVolume
    call(csi.controller.CreateVolume, create_request("staged"))
    staging, _target = dirs(workdir, "staged")
    refused(Code.INVALID_ARGUMENT, stage, pb.NodeStageVolumeRequest(staging_target_path=str(staging),
                                                                    volume_capability=cap()), "volume_id")
    refused(Code.INVALID_ARGUMENT, stage, pb.NodeStageVolumeRequest(volume_id="staged", volume_capability=cap()),
            "staging_target_path is required")
    refused(Code.INVALID_ARGUMENT, stage, pb.NodeStageVolumeRequest(volume_id="staged",
                                                                    staging_target_path=str(staging)),
            "volume_capability is required")
    refused(Code.INVALID_ARGUMENT, stage, stage_request("staged", staging, Mode.MULTI_NODE_MULTI_WRITER))
    refused(Code.INVALID_ARGUMENT, stage, stage_request("staged", Path("relative/path")), "absolute")
    refused(Code.NOT_FOUND, stage, stage_request("fake-vol-id-2", staging))
    assert not mounted(staging) and csi.daemon.api("mount.ls") == []
    call(stage, stage_request("staged", staging))
    call(stage, stage_request("staged", staging))  # staged already, the same way: OK
    assert mounted(staging)
    refused(Code.ALREADY_EXISTS, stage, stage_request("staged", staging, Mode.SINGLE_NODE_READER_ONLY),
            "read-write")
    refused(Code.INVALID_ARGUMENT, unstage, pb.NodeUnstageVolumeRequest(staging_target_path=str(staging)))
    refused(Code.INVALID_ARGUMENT, unstage, pb.NodeUnstageVolumeRequest(volume_id="staged"))
    call(unstage, pb.NodeUnstageVolumeRequest(volume_id="staged", staging_target_path=str(staging)))
    call(unstage, pb.NodeUnstageVolumeRequest(volume_id="staged", staging_target_path=str(staging)))
    assert not mounted(staging) and staging.is_dir()  # the staging directory is the orchestrator's
    call(unstage, pb.NodeUnstageVolumeRequest(volume_id="staged", staging_target_path=str(workdir / "gone")))
    call(stage, stage_request("staged", staging, Mode.SINGLE_NODE_READER_ONLY))  # read-only access: a read-only mount
    with pytest.raises(OSError) as read_only:
        (staging / "f").write_bytes(b"x")
    assert read_only.value.errno == errno.EROFS
    call(unstage, pb.NodeUnstageVolumeRequest(volume_id="staged", staging_target_path=str(staging)))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="staged"))


def test_node_publish_and_unpublish(csi: Plugin, workdir: Path) -> None:
    publish, unpublish = csi.node.NodePublishVolume, csi.node.NodeUnpublishVolume
    call(csi.controller.CreateVolume, create_request("pub"))
    staging, target = dirs(workdir, "pub")
    refused(Code.INVALID_ARGUMENT, publish, pb.NodePublishVolumeRequest(target_path=str(target),
                                                                        volume_capability=cap()), "volume_id")
    refused(Code.INVALID_ARGUMENT, publish, pb.NodePublishVolumeRequest(volume_id="pub", volume_capability=cap()),
            "target_path is required")
    refused(Code.INVALID_ARGUMENT, publish, pb.NodePublishVolumeRequest(volume_id="pub", target_path=str(target)),
            "volume_capability is required")
    refused(Code.FAILED_PRECONDITION, publish, pb.NodePublishVolumeRequest(
        volume_id="pub", target_path=str(target), volume_capability=cap()), "staging_target_path is required")
    refused(Code.FAILED_PRECONDITION, publish, publish_request("pub", staging, target), "not staged")
    refused(Code.NOT_FOUND, publish, publish_request("fake-vol-id-3", staging, target))
    assert not target.exists()  # refused: nothing made
    call(csi.node.NodeStageVolume, stage_request("pub", staging))
    call(publish, publish_request("pub", staging, target))
    call(publish, publish_request("pub", staging, target))  # published already, the same way: OK
    assert mounted(target)
    (target / "seen-through-staging").write_bytes(b"one volume")
    assert (staging / "seen-through-staging").read_bytes() == b"one volume"
    refused(Code.ALREADY_EXISTS, publish, publish_request("pub", staging, target, readonly=True), "read-write")
    second = target.parent.parent / "second" / "mount"
    second.parent.mkdir(parents=True)
    refused(Code.FAILED_PRECONDITION, publish, publish_request("pub", staging, second,
                                                               Mode.SINGLE_NODE_SINGLE_WRITER), "allows one target")
    assert not second.exists()
    call(publish, publish_request("pub", staging, second, Mode.SINGLE_NODE_MULTI_WRITER, readonly=True))
    assert (second / "seen-through-staging").read_bytes() == b"one volume"
    with pytest.raises(OSError) as read_only:
        (second / "g").write_bytes(b"x")
    assert read_only.value.errno == errno.EROFS
    refused(Code.INVALID_ARGUMENT, unpublish, pb.NodeUnpublishVolumeRequest(target_path=str(target)))
    refused(Code.INVALID_ARGUMENT, unpublish, pb.NodeUnpublishVolumeRequest(volume_id="pub"))
    for path in (second, target):
        call(unpublish, pb.NodeUnpublishVolumeRequest(volume_id="pub", target_path=str(path)))
        assert not path.exists()  # the plugin removes the directory it made
        call(unpublish, pb.NodeUnpublishVolumeRequest(volume_id="pub", target_path=str(path)))
    call(csi.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id="pub", staging_target_path=str(staging)))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="pub"))


def test_node_volume_stats(csi: Plugin, workdir: Path) -> None:
    stats = csi.node.NodeGetVolumeStats
    call(csi.controller.CreateVolume, create_request("stats", 8 << 20))
    staging, target = dirs(workdir, "stats")
    refused(Code.INVALID_ARGUMENT, stats, pb.NodeGetVolumeStatsRequest(volume_path="/some/path"), "volume_id")
    refused(Code.INVALID_ARGUMENT, stats, pb.NodeGetVolumeStatsRequest(volume_id="stats"), "volume_path")
    refused(Code.NOT_FOUND, stats, pb.NodeGetVolumeStatsRequest(volume_id="fake-vol-id-4", volume_path="/some/path"))
    refused(Code.NOT_FOUND, stats, pb.NodeGetVolumeStatsRequest(volume_id="stats", volume_path=str(target)),
            "not mounted")
    call(csi.node.NodeStageVolume, stage_request("stats", staging))
    call(csi.node.NodePublishVolume, publish_request("stats", staging, target))
    for i in range(3):
        (target / f"f{i}").write_bytes(os.urandom(100_000))
    os.sync()
    answer = call(stats, pb.NodeGetVolumeStatsRequest(volume_id="stats", volume_path=str(target),
                                                      staging_target_path=str(staging)))
    Unit = pb.VolumeUsage.Unit
    usage = {u.unit: u for u in answer.usage}
    assert usage[Unit.BYTES].total == 8 << 20 and 300_000 <= usage[Unit.BYTES].used < 1 << 20
    assert usage[Unit.BYTES].available == (8 << 20) - usage[Unit.BYTES].used
    assert usage[Unit.INODES].used == 4 and usage[Unit.INODES].available > 1 << 30  # the root and three files
    assert usage[Unit.INODES].total == usage[Unit.INODES].used + usage[Unit.INODES].available
    assert not answer.volume_condition.abnormal
    assert call(stats, pb.NodeGetVolumeStatsRequest(volume_id="stats", volume_path=str(staging))).usage
    call(csi.node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(volume_id="stats", target_path=str(target)))
    call(csi.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id="stats", staging_target_path=str(staging)))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="stats"))


def test_node_expand_volume_raises_the_limit_of_the_mounted_volume(csi: Plugin, workdir: Path) -> None:
    expand = csi.node.NodeExpandVolume
    call(csi.controller.CreateVolume, create_request("nodegrow", 1 << 20))
    staging, target = dirs(workdir, "nodegrow")
    refused(Code.INVALID_ARGUMENT, expand, pb.NodeExpandVolumeRequest(volume_path=str(target)), "volume_id")
    refused(Code.INVALID_ARGUMENT, expand, pb.NodeExpandVolumeRequest(volume_id="nodegrow"), "volume_path")
    refused(Code.NOT_FOUND, expand, pb.NodeExpandVolumeRequest(volume_id="fake-vol-id-5", volume_path="/some/path"))
    call(csi.node.NodeStageVolume, stage_request("nodegrow", staging))
    call(csi.node.NodePublishVolume, publish_request("nodegrow", staging, target))
    big = os.urandom(3 << 20)
    with pytest.raises(OSError) as full:
        (target / "big").write_bytes(big)
    assert full.value.errno == errno.ENOSPC
    call(csi.controller.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
        volume_id="nodegrow", capacity_range=pb.CapacityRange(required_bytes=8 << 20)))
    grown = call(expand, pb.NodeExpandVolumeRequest(volume_id="nodegrow", volume_path=str(target),
                                                    capacity_range=pb.CapacityRange(required_bytes=8 << 20)))
    assert grown.capacity_bytes == 8 << 20
    (target / "big").write_bytes(big)  # the mounted volume takes it now: no remount
    assert (staging / "big").read_bytes() == big
    refused(Code.OUT_OF_RANGE, expand, pb.NodeExpandVolumeRequest(
        volume_id="nodegrow", volume_path=str(target), capacity_range=pb.CapacityRange(required_bytes=16 << 20)),
            "ControllerExpandVolume")
    call(csi.node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(volume_id="nodegrow", target_path=str(target)))
    call(csi.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id="nodegrow",
                                                                 staging_target_path=str(staging)))
    call(csi.controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="nodegrow"))
