"""Self-heal and repair across real node daemons (fixture: ``tests.cluster.cluster``).

* A volume nobody has mounted loses one of its two copies with its node: the healer of
  the node holding the other copy copies it to the third node, chunks included.
* A chunk damaged on the writer's disk is fetched from the replica, verified and
  rewritten: the read returns the right bytes and fsck is clean afterwards.
* Removing a volume drops its copies on the other nodes.
"""

from __future__ import annotations

import os

import pytest

from tests.cluster.cluster import (
    Cluster,
    Member,
    fsync_dir,
    make_tree,
    tree_hashes,
    wait_for,
)
from tests.mount.test_corruption import flip_chunk_of

pytestmark = pytest.mark.mount

VOLUME = "healme"


def volume_here(node: Member, name: str = VOLUME) -> bool:
    return any(v["name"] == name and v["here"] for v in node.api("volume.ls"))


def test_a_lost_copy_of_an_unmounted_volume_is_made_again(cluster: Cluster) -> None:
    a = cluster["a"]
    info = a.cli("volume", "create", VOLUME, "-o", "replicas=2", json_out=True)
    r = cluster.replica_of(info["id"], a, cluster.nodes)
    third = next(n for n in cluster.nodes if n is not a and n is not r)
    mnt = a.mount_dir(VOLUME)
    a.cli("mount", VOLUME, str(mnt))
    expected = make_tree(mnt, seed=7, dirs=2, files_per_dir=3)
    fsync_dir(mnt)
    a.cli("umount", str(mnt))                      # nobody writes it now: copies on a and r
    assert volume_here(r) and not volume_here(third)

    r.kill()                                       # r's copy is gone with r
    wait_for("the healer to copy the volume to the third node",
             lambda: volume_here(third) and third.inspect(VOLUME)["usage"]["chunks"] > 0, timeout=40)
    wait_for("the copy to be complete",
             lambda: third.fsck()["clean"] and third.fsck()["counts"]["remote_chunks"] == 0
             and third.inspect(VOLUME)["used_bytes"] == a.inspect(VOLUME)["used_bytes"], timeout=30)
    assert a.status()["cluster"]["self_heal"]["copied"].get(VOLUME, 0) > 0
    # the new copy serves the volume on its own: a stops, third mounts it
    a.stop()
    where = third.mount_dir(VOLUME)
    third.cli("mount", VOLUME, str(where))
    assert tree_hashes(where) == expected


def test_a_damaged_chunk_is_repaired_from_the_replica(cluster: Cluster) -> None:
    a = cluster["a"]
    a.cli("volume", "create", VOLUME, "-o", "replicas=2", "-o", "block_size=4096")
    mnt = a.mount_dir(VOLUME)
    a.cli("mount", VOLUME, str(mnt))
    data = os.urandom(5 * 4096)
    path = mnt / "victim"
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())                       # on the replica too before we go on
    ino = os.stat(path).st_ino & ((1 << 40) - 1)
    a.cli("umount", str(mnt))
    assert a.stop() == 0
    chunk = flip_chunk_of(a.data_dir / "store", VOLUME, ino, 2)
    a.start()
    cluster.wait_members(3)
    a.cli("mount", VOLUME, str(mnt))
    assert path.read_bytes() == data               # block 2 came from the replica
    assert any(chunk in line and "repaired" in line for line in a.log_lines("repaired"))
    report = a.fsck()
    assert report["clean"], report["lines"]


def test_removing_a_volume_drops_its_copies_on_other_nodes(cluster: Cluster) -> None:
    a = cluster["a"]
    info = a.cli("volume", "create", VOLUME, "-o", "replicas=2", json_out=True)
    r = cluster.replica_of(info["id"], a, cluster.nodes)
    mnt = a.mount_dir(VOLUME)
    a.cli("mount", VOLUME, str(mnt))
    (mnt / "f").write_bytes(os.urandom(100_000))
    fsync_dir(mnt)
    a.cli("umount", str(mnt))
    assert volume_here(r)
    a.cli("volume", "rm", VOLUME)
    try:
        wait_for("the replica to drop its copy",
                 lambda: not any(v["name"] == VOLUME for v in r.api("volume.ls")), timeout=30)
    except AssertionError:
        print(r.log_text()[-5000:])
        raise
    report = r.fsck()
    assert report["clean"] and report["counts"]["chunks"] == 0, report


def test_draining_a_node_copies_what_it_holds_elsewhere(cluster: Cluster) -> None:
    a = cluster["a"]
    a.cli("volume", "create", VOLUME, "-o", "replicas=1")       # the only copy is on a
    mnt = a.mount_dir(VOLUME)
    a.cli("mount", VOLUME, str(mnt))
    expected = make_tree(mnt, seed=11, dirs=2, files_per_dir=2)
    fsync_dir(mnt)
    refused = a.cli("node", "drain", "--wait", "3", check=False)
    assert refused.returncode != 0 and VOLUME in refused.stderr   # it is mounted here
    a.cli("umount", str(mnt))
    done = a.cli("node", "drain", "--wait", "60", json_out=True)
    assert done["draining"] and done["still_here"] == []
    assert {n["node_id"]: n["state"] for n in a.node_ls()}[a.node_id] == "draining"
    holders = [n for n in cluster.nodes if n is not a and volume_here(n)]
    assert len(holders) == 1
    a.stop()                                                   # a leaves; the data stays
    where = holders[0].mount_dir(VOLUME)
    holders[0].cli("mount", VOLUME, str(where))
    assert tree_hashes(where) == expected
