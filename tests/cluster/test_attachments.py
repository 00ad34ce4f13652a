"""Attachments and size limits across a cluster, through the control API (what CSI's
ControllerPublishVolume and volume expansion use; tests/csi drives them through gRPC):
a volume attached to one node at a time, taken over from a node it is no longer attached
to when mounted where it is; a raised size limit is the catalog's, taken by the node that
writes the volume when asked and by the node that writes it next. Three real daemons, a
real etcd, real mounts."""

from __future__ import annotations

import errno
import random

import pytest

from tests.cluster.cluster import (
    Cluster, assert_clean, assert_tree, create_volume, make_tree, mount, roles, wait_for, write_file, write_synced,
)
from tools.client import RemoteError


def test_a_mount_takes_the_volume_over_from_a_node_it_is_no_longer_attached_to(cluster: Cluster) -> None:
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    attached = a.api("volume.publish", name="vol", node_id=a.node_id)
    assert (attached["node_id"], attached["read_only"]) == (a.node_id, False)
    ma = mount(a)
    expected = make_tree(ma, seed=61, dirs=2)
    for read_only in (False, True):  # one node at a time, whatever the mode
        with pytest.raises(RemoteError, match=a.node_id) as refused:
            b.api("volume.publish", name="vol", node_id=b.node_id, read_only=read_only)
        assert refused.value.kind == "AttachedElsewhere"
    plain = b.cli("mount", "vol", str(b.mount_dir("vol")), check=False)  # not attached to b: a keeps it
    assert plain.returncode != 0 and a.node_id in plain.stderr, plain.stderr

    # the orchestrator moves it: detached from a (which still has it mounted), attached to b
    assert b.api("volume.unpublish", name="vol", node_id=a.node_id) == {"detached": 1}
    b.api("volume.publish", name="vol", node_id=b.node_id)
    mb = mount(b)  # no --takeover: attached here, held by a node it is not attached to
    assert_tree(mb, expected)
    assert b.inspect("vol")["writer"]["node_id"] == b.node_id
    wait_for("a to let the volume go", lambda: not a.is_mounted(ma))
    assert [x["node_id"] for x in r.api("volume.attachments", name="vol")] == [b.node_id]

    b.cli("umount", str(mb))
    busy = b.cli("volume", "rm", "vol", check=False)  # attached to a live node: not removed
    assert busy.returncode != 0 and "attached" in busy.stderr, busy.stderr
    assert b.api("volume.unpublish", name="vol") == {"detached": 1}
    assert b.api("volume.unpublish", name="vol", node_id="not-a-node") == {"detached": 0}
    b.cli("volume", "rm", "vol")
    assert_clean(a, r, b)


def test_a_raised_limit_is_taken_by_the_writer_when_asked_and_by_the_next_writer(cluster: Cluster) -> None:
    vid = cluster["a"].cli("volume", "create", "vol", "-o", "replicas=2", "-o", "size=1M", json_out=True)["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    write_file(ma, "first", seed=1, size=900_000)
    rng = random.Random(2)
    with pytest.raises(OSError) as full:
        write_synced(ma / "second", rng.randbytes(300_000))
    assert full.value.errno == errno.ENOSPC

    assert b.api("volume.expand", name="vol", size="4M")["size_bytes"] == 4 << 20  # the catalog, from any node
    assert a.inspect("vol")["size_bytes"] == 1 << 20  # the writer has not taken it yet
    assert a.api("volume.expand", name="vol") == {"name": "vol", "size_bytes": 4 << 20, "here_bytes": 4 << 20}
    write_file(ma, "second", seed=3, size=300_000)  # the mounted volume takes more at once
    assert b.api("volume.expand", name="vol", size="2M")["size_bytes"] == 4 << 20  # never lowered
    with pytest.raises(RemoteError, match="positive"):
        b.api("volume.expand", name="vol", size="0")
    with pytest.raises(RemoteError, match="not a size"):
        b.api("volume.expand", name="vol", size="lots")
    assert a.inspect("vol")["size_bytes"] == 4 << 20

    b.api("volume.expand", name="vol", size="8M")  # raised while a writes it, and not taken there
    a.cli("umount", str(ma))
    mb = mount(b)  # the next writer takes the catalog's limit as it opens the volume
    assert b.inspect("vol")["size_bytes"] == 8 << 20
    write_file(mb, "third", seed=4, size=3_000_000)
    b.cli("umount", str(mb))
    assert_clean(a, r, b)
