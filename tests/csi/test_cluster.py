"""CSI on the three-node cluster fixture (tests/cluster/cluster.py: a real etcd, three
daemons on loopback) with a ``cfs csi`` beside each daemon, as Kubernetes runs one on
every node; controller calls go to a node that does not write the volume, as a
controller Deployment would. A volume used on node a moves to node b with every fsync'd
byte; it cannot be published on b while attached to a; its limit, raised by the
controller, is taken by the mounted volume; a replica that dies makes its condition
abnormal; a snapshot taken through the controller (by the writer, on another node)
clones into a volume on a third node that holds what the snapshot held while the source
changes, and the volume itself clones on a node that does not write it."""

from __future__ import annotations

import errno
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.cluster.cluster import (
    Cluster, Member, assert_clean, assert_tree, make_tree, tree_hashes, wait_for, write_file, write_synced,
)
from tests.csi.plugin import Plugin, call, cap, create_request, refused
from tests.node import mounts_under
from tools.csi.generated import csi_pb2 as pb

Code = grpc.StatusCode
SHORT_TMP = Path(os.environ.get("CFS_TEST_TMP", "/tmp"))
DEGRADED_FOR = 30


class Csi:
    """The cluster and one plugin per node, by the node's name."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.plugins = {m.name: Plugin(m, m.base) for m in cluster.nodes}

    def __getitem__(self, name: str) -> Plugin:
        return self.plugins[name]

    def node_id(self, name: str) -> str:
        return str(call(self[name].node.NodeGetInfo, pb.NodeGetInfoRequest()).node_id)

    def paths(self, name: str, volume: str) -> tuple[Path, Path]:
        member = self.cluster[name]
        staging = member.base / "kubelet" / "staging" / volume
        staging.mkdir(parents=True, exist_ok=True)
        target = member.base / "kubelet" / "pods" / volume / "mount"
        target.parent.mkdir(parents=True, exist_ok=True)
        return staging, target

    def attach_and_mount(self, name: str, volume: str, controller: str = "c") -> Path:
        """ControllerPublish to node ``name``, then stage and publish there: the target."""
        self[controller].controller.ControllerPublishVolume(pb.ControllerPublishVolumeRequest(
            volume_id=volume, node_id=self.node_id(name), volume_capability=cap()), timeout=120)
        staging, target = self.paths(name, volume)
        call(self[name].node.NodeStageVolume, pb.NodeStageVolumeRequest(
            volume_id=volume, staging_target_path=str(staging), volume_capability=cap()))
        call(self[name].node.NodePublishVolume, pb.NodePublishVolumeRequest(
            volume_id=volume, staging_target_path=str(staging), target_path=str(target), volume_capability=cap()))
        return target

    def unmount_and_detach(self, name: str, volume: str, controller: str = "c") -> None:
        staging, target = self.paths(name, volume)
        call(self[name].node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(volume_id=volume,
                                                                                target_path=str(target)))
        call(self[name].node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id=volume,
                                                                            staging_target_path=str(staging)))
        call(self[controller].controller.ControllerUnpublishVolume, pb.ControllerUnpublishVolumeRequest(
            volume_id=volume, node_id=self.node_id(name)))


@pytest.fixture
def csi() -> Iterator[Csi]:
    base = Path(tempfile.mkdtemp(prefix="cfs-csicl-", dir=SHORT_TMP))
    base.chmod(0o755)
    # A dead node's registration outlives the test's checks of a degraded volume (it lapses
    # only after 30 s; then the writer would pick another replica and heal): no race.
    with Cluster(base, lease_ttl=DEGRADED_FOR) as cluster:
        cluster.start(3)
        running = Csi(cluster)
        try:
            for plugin in running.plugins.values():
                plugin.start()
            yield running
        finally:
            for plugin in running.plugins.values():
                plugin.stop()
                plugin.kill()
    if not mounts_under(base):
        shutil.rmtree(base, ignore_errors=True)


def writer_of(csi: Csi, volume: str) -> Member:
    holder = csi.cluster["c"].inspect(volume)["writer"]
    return next(m for m in csi.cluster.nodes if m.node_id == holder["node_id"])


def test_a_volume_moves_to_another_node_with_every_fsynced_byte(csi: Csi) -> None:
    a, b, c = csi.cluster["a"], csi.cluster["b"], csi.cluster["c"]
    volume = call(csi["c"].controller.CreateVolume, create_request("pvc-move", 1 << 20, replicas="2")).volume
    assert volume.capacity_bytes == 1 << 20
    on_a = csi.attach_and_mount("a", "pvc-move")
    assert writer_of(csi, "pvc-move") is a
    expected: dict[str, str] = {}
    (on_a / "dir").mkdir()
    for i, size in enumerate((0, 1, 65535, 65537, 200_000, 300_000)):  # fsync'd each
        expected.update(write_file(on_a, f"dir/f{i}", seed=71 + i, size=size))
    with pytest.raises(OSError) as full:
        write_synced(on_a / "more", random.Random(73).randbytes(500_000))
    assert full.value.errno == errno.ENOSPC  # 1 MiB: full
    (on_a / "more").unlink()

    # a volume attached to a live node is not attached to another, read-only or not
    for readonly in (False, True):
        message = refused(Code.FAILED_PRECONDITION, csi["c"].controller.ControllerPublishVolume,
                          pb.ControllerPublishVolumeRequest(volume_id="pvc-move", node_id=csi.node_id("b"),
                                                            volume_capability=cap(), readonly=readonly))
        assert csi.node_id("a") in message

    # the controller raises the limit; the node that writes the volume takes it, mounted
    grown = call(csi["c"].controller.ControllerExpandVolume, pb.ControllerExpandVolumeRequest(
        volume_id="pvc-move", capacity_range=pb.CapacityRange(required_bytes=4 << 20)))
    assert grown.capacity_bytes == 4 << 20 and grown.node_expansion_required
    assert call(csi["a"].node.NodeExpandVolume, pb.NodeExpandVolumeRequest(
        volume_id="pvc-move", volume_path=str(on_a))).capacity_bytes == 4 << 20
    expected.update(write_file(on_a, "more", seed=74, size=500_000))
    stats = call(csi["a"].node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(volume_id="pvc-move",
                                                                                volume_path=str(on_a)))
    assert stats.usage[0].total == 4 << 20 and not stats.volume_condition.abnormal

    # the pod moves to b: unpublished, unstaged and detached on a, then attached, staged, published on b
    csi.unmount_and_detach("a", "pvc-move")
    on_b = csi.attach_and_mount("b", "pvc-move")
    assert writer_of(csi, "pvc-move") is b
    assert_tree(on_b, expected)
    assert b.inspect("pvc-move")["size_bytes"] == 4 << 20  # b took the catalog's limit as it opened it
    got = call(csi["c"].controller.ControllerGetVolume, pb.ControllerGetVolumeRequest(volume_id="pvc-move"))
    assert list(got.status.published_node_ids) == [csi.node_id("b")]
    assert not got.status.volume_condition.abnormal, got.status.volume_condition.message

    # the node b replicates to dies: b's fsyncs time out into degraded, and both views say so
    replica = csi.cluster.replica_of(b.inspect("pvc-move")["id"], b, csi.cluster.nodes)
    replica.kill()
    csi[replica.name].kill()
    write_file(on_b, "after-the-loss", seed=75, size=1000)
    wait_for("b to see the volume degraded", lambda: b.inspect("pvc-move")["replication"]["degraded"])
    ask = csi["b"]  # the writer's plugin, as the Node and a controller beside it see it
    condition = call(ask.controller.ControllerGetVolume,
                     pb.ControllerGetVolumeRequest(volume_id="pvc-move")).status.volume_condition
    assert condition.abnormal and "degraded" in condition.message, condition
    node_view = call(ask.node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(
        volume_id="pvc-move", volume_path=str(on_b))).volume_condition
    assert node_view.abnormal and "degraded" in node_view.message
    listed = call(ask.controller.ListVolumes, pb.ListVolumesRequest()).entries
    assert [e.status.volume_condition.abnormal for e in listed if e.volume.volume_id == "pvc-move"] == [True]
    survivors = [m for m in (a, b, c) if m is not replica]
    csi.unmount_and_detach("b", "pvc-move", controller="b")
    assert_clean(*survivors)


def test_a_snapshot_through_the_controller_clones_onto_a_third_node(csi: Csi) -> None:
    a, b, c = csi.cluster["a"], csi.cluster["b"], csi.cluster["c"]
    call(csi["c"].controller.CreateVolume, create_request("pvc-src", 64 << 20, replicas="2"))
    on_a = csi.attach_and_mount("a", "pvc-src")
    at_snapshot = make_tree(on_a, seed=81, dirs=2, files_per_dir=3)

    # c's controller is asked; a writes the volume and takes the snapshot (TakeSnapshot)
    snap = call(csi["c"].controller.CreateSnapshot, pb.CreateSnapshotRequest(source_volume_id="pvc-src",
                                                                             name="snapshot-1")).snapshot
    assert (snap.snapshot_id, snap.source_volume_id, snap.ready_to_use) == ("pvc-src@snapshot-1", "pvc-src", True)
    assert writer_of(csi, "pvc-src") is a and os.path.ismount(on_a)  # nothing moved

    # the source changes on a while the clone is made and used on b
    changed = sorted(at_snapshot)[0]
    write_synced(on_a / changed, b"changed after the snapshot")
    write_file(on_a, "added-after", seed=82, size=70_000)
    clone = call(csi["c"].controller.CreateVolume, create_request("pvc-clone", 64 << 20,
                                                                  snapshot=snap.snapshot_id, replicas="2"))
    assert clone.volume.content_source.snapshot.snapshot_id == snap.snapshot_id
    on_b = csi.attach_and_mount("b", "pvc-clone")
    assert tree_hashes(on_b) == at_snapshot  # exactly the snapshot: not the change, not the addition
    write_synced(on_b / "written-in-the-clone", b"only here")
    write_synced(on_a / "written-in-the-source", b"only there")
    assert not (on_a / "written-in-the-clone").exists() and not (on_b / "written-in-the-source").exists()
    assert (on_a / changed).read_bytes() == b"changed after the snapshot"

    # a clone of the volume as it is now, asked of c while a writes it: through a snapshot a takes
    now = tree_hashes(on_a)
    whole = call(csi["c"].controller.CreateVolume, create_request("pvc-now", 64 << 20, volume="pvc-src"))
    assert whole.volume.content_source.volume.volume_id == "pvc-src"
    write_synced(on_a / "after-the-clone", b"not in it")
    on_c = csi.attach_and_mount("c", "pvc-now")
    assert tree_hashes(on_c) == now
    assert [e.snapshot.snapshot_id for e in call(csi["c"].controller.ListSnapshots,
                                                 pb.ListSnapshotsRequest()).entries] == [snap.snapshot_id]
    csi.unmount_and_detach("c", "pvc-now")
    call(csi["c"].controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="pvc-now"))
    csi.unmount_and_detach("a", "pvc-src")
    csi.unmount_and_detach("b", "pvc-clone")
    call(csi["c"].controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="pvc-src"))
    assert "pvc-src@snapshot-1" in [e.snapshot.snapshot_id for e in call(
        csi["c"].controller.ListSnapshots, pb.ListSnapshotsRequest()).entries]  # snapshots outlive their volume
    call(csi["c"].controller.DeleteSnapshot, pb.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id))
    call(csi["c"].controller.DeleteVolume, pb.DeleteVolumeRequest(volume_id="pvc-clone"))
    assert_clean(a, b, c)
