"""A volume's life as Kubernetes drives it, on one node, and the crashes CSI must survive.

The external-provisioner's and kubelet's call sequence (create, controller publish,
stage, publish, write and fsync, unpublish, unstage, controller unpublish) through the
real plugin and daemon, with the data checked through a second staging; then a kill -9
of the node daemon between stage and publish, and of the plugin in the middle of
CreateVolume (cfs.faults crash points: right after the request reached the daemon, and
right after the daemon answered): a retry of the same call succeeds, and nothing is left
half-made or made twice."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import grpc

from tests.cluster.cluster import write_synced
from tests.csi.plugin import Plugin, call, cap, create_request, refused
from tests.node import Node
from tools.csi.generated import csi_pb2 as pb

Code = grpc.StatusCode


def sequence_paths(base: Path, name: str) -> tuple[Path, Path]:
    staging = base / "kubelet" / "staging" / name
    staging.mkdir(parents=True)
    target = base / "kubelet" / "pods" / name / "mount"
    target.parent.mkdir(parents=True)
    return staging, target


def written(root: Path, seed: int) -> dict[str, str]:
    """Files written and fsync'd under ``root`` (sizes across 64 KiB blocks); {name: sha256}."""
    rng = random.Random(seed)
    (root / "dir").mkdir(exist_ok=True)
    out = {}
    for i, size in enumerate((0, 1, 65535, 65537, 300_001)):
        data = rng.randbytes(size)
        write_synced(root / "dir" / f"f{i}", data)
        out[f"dir/f{i}"] = hashlib.sha256(data).hexdigest()
    return out


def hashes(root: Path, names: dict[str, str]) -> dict[str, str]:
    return {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}


def fsck_clean(daemon: Node) -> None:
    report = daemon.cli("fsck", json_out=True)
    assert report["clean"], report["lines"]


def test_the_provisioner_and_kubelet_sequence(plugin: Plugin, short_tmp: Path) -> None:
    ctl, node = plugin.controller, plugin.node
    volume = call(ctl.CreateVolume, create_request("pvc-0b3f", 64 << 20, replicas="1")).volume
    assert (volume.volume_id, volume.capacity_bytes) == ("pvc-0b3f", 64 << 20)
    info = call(node.NodeGetInfo, pb.NodeGetInfoRequest())
    context = call(ctl.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(
        volume_id=volume.volume_id, node_id=info.node_id, volume_capability=cap())).publish_context
    staging, target = sequence_paths(short_tmp, "pvc-0b3f")
    call(node.NodeStageVolume, pb.NodeStageVolumeRequest(
        volume_id=volume.volume_id, staging_target_path=str(staging), volume_capability=cap(),
        publish_context=context))
    call(node.NodePublishVolume, pb.NodePublishVolumeRequest(
        volume_id=volume.volume_id, staging_target_path=str(staging), target_path=str(target),
        volume_capability=cap(), publish_context=context))
    expected = written(target, seed=7)
    stats = call(node.NodeGetVolumeStats, pb.NodeGetVolumeStatsRequest(volume_id=volume.volume_id,
                                                                       volume_path=str(target)))
    assert stats.usage[0].used >= 65535 + 65537 + 300_001 and not stats.volume_condition.abnormal
    call(node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(volume_id=volume.volume_id,
                                                                 target_path=str(target)))
    call(node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id=volume.volume_id,
                                                             staging_target_path=str(staging)))
    call(ctl.ControllerUnpublishVolume, pb.ControllerUnpublishVolumeRequest(volume_id=volume.volume_id,
                                                                            node_id=info.node_id))
    assert not target.exists() and not os.path.ismount(staging)
    assert plugin.daemon.api("mount.ls") == [] and plugin.daemon.api("volume.attachments") == []

    # the next pod: the data is in the volume, also across a restart of the daemon
    plugin.daemon.stop()
    plugin.daemon.start()
    call(node.NodeStageVolume, pb.NodeStageVolumeRequest(volume_id=volume.volume_id,
                                                         staging_target_path=str(staging), volume_capability=cap()))
    assert hashes(staging, expected) == expected
    call(node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id=volume.volume_id,
                                                             staging_target_path=str(staging)))
    call(ctl.DeleteVolume, pb.DeleteVolumeRequest(volume_id=volume.volume_id))
    assert plugin.daemon.api("volume.ls") == []
    fsck_clean(plugin.daemon)


def test_kill_9_of_the_daemon_between_stage_and_publish(plugin: Plugin, short_tmp: Path) -> None:
    ctl, node = plugin.controller, plugin.node
    call(ctl.CreateVolume, create_request("pvc-kill", 64 << 20))
    node_id = call(node.NodeGetInfo, pb.NodeGetInfoRequest()).node_id
    call(ctl.ControllerPublishVolume, pb.ControllerPublishVolumeRequest(volume_id="pvc-kill", node_id=node_id,
                                                                        volume_capability=cap()))
    staging, target = sequence_paths(short_tmp, "pvc-kill")
    stage = pb.NodeStageVolumeRequest(volume_id="pvc-kill", staging_target_path=str(staging),
                                      volume_capability=cap())
    publish = pb.NodePublishVolumeRequest(volume_id="pvc-kill", staging_target_path=str(staging),
                                          target_path=str(target), volume_capability=cap())
    call(node.NodeStageVolume, stage)
    expected = written(staging, seed=11)
    plugin.daemon.kill()

    refused(Code.UNAVAILABLE, node.NodePublishVolume, publish, "not running")  # the kubelet retries later
    assert not target.exists()
    refused(Code.FAILED_PRECONDITION, plugin.identity.Probe, pb.ProbeRequest(), "does not answer")

    plugin.daemon.start()  # detaches the dead mount and binds the recorded one again
    call(node.NodeStageVolume, stage)  # the same call again: staged, nothing to do
    call(node.NodePublishVolume, publish)
    assert hashes(target, expected) == expected
    assert sorted((m["path"], m["mounted"]) for m in plugin.daemon.api("mount.ls")) == sorted(
        [(str(staging), True), (str(target), True)])
    call(node.NodeUnpublishVolume, pb.NodeUnpublishVolumeRequest(volume_id="pvc-kill", target_path=str(target)))
    call(node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id="pvc-kill",
                                                             staging_target_path=str(staging)))
    call(ctl.ControllerUnpublishVolume, pb.ControllerUnpublishVolumeRequest(volume_id="pvc-kill"))
    fsck_clean(plugin.daemon)


def test_kill_9_of_the_plugin_during_create_volume(node: Node, short_tmp: Path) -> None:
    """The plugin dies with the request at the daemon (it finishes it alone), and again
    after the daemon answered (the orchestrator never hears): the retry answers the volume
    made, once, for a plain volume and for a clone of a snapshot."""
    plugin = Plugin(node, short_tmp)
    try:
        cases = [("sent-volume.create", create_request("pvc-a", 32 << 20)),
                 ("csi-volume-created", create_request("pvc-b", 32 << 20))]
        for point, request in cases:
            plugin.env = {"CFS_CRASH_AT": point}
            plugin.start()
            refused(Code.UNAVAILABLE, plugin.controller.CreateVolume, request)
            assert plugin.wait_exit() == -9  # killed where it was asked to die, not elsewhere
            plugin.env = {}
            plugin.start()
            made = call(plugin.controller.CreateVolume, request).volume
            assert (made.volume_id, made.capacity_bytes) == (request.name, 32 << 20)
            refused(Code.ALREADY_EXISTS, plugin.controller.CreateVolume, create_request(request.name, 64 << 20))
            plugin.stop()
        assert [v["name"] for v in node.api("volume.ls")] == ["pvc-a", "pvc-b"]

        staging, _target = sequence_paths(short_tmp, "pvc-a")
        plugin.start()
        call(plugin.node.NodeStageVolume, pb.NodeStageVolumeRequest(
            volume_id="pvc-a", staging_target_path=str(staging), volume_capability=cap()))
        expected = written(staging, seed=13)
        call(plugin.controller.CreateSnapshot, pb.CreateSnapshotRequest(source_volume_id="pvc-a", name="snap"))
        call(plugin.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id="pvc-a",
                                                                        staging_target_path=str(staging)))
        plugin.stop()
        clone = create_request("pvc-clone", 32 << 20, snapshot="pvc-a@snap")
        plugin.env = {"CFS_CRASH_AT": "csi-volume-created"}
        plugin.start()
        refused(Code.UNAVAILABLE, plugin.controller.CreateVolume, clone)
        assert plugin.wait_exit() == -9
        plugin.env = {}
        plugin.start()
        assert call(plugin.controller.CreateVolume, clone).volume.content_source.snapshot.snapshot_id == "pvc-a@snap"
        assert [v["name"] for v in node.api("volume.ls")] == ["pvc-a", "pvc-b", "pvc-clone"]
        clone_staging, _ = sequence_paths(short_tmp, "pvc-clone")
        call(plugin.node.NodeStageVolume, pb.NodeStageVolumeRequest(
            volume_id="pvc-clone", staging_target_path=str(clone_staging), volume_capability=cap()))
        assert hashes(clone_staging, expected) == expected
        call(plugin.node.NodeUnstageVolume, pb.NodeUnstageVolumeRequest(volume_id="pvc-clone",
                                                                        staging_target_path=str(clone_staging)))
        fsck_clean(node)
    finally:
        plugin.stop()
        plugin.kill()
