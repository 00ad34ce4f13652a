"""Self-heal and repair across real node daemons (fixture: ``tests.cluster.cluster``).

* A volume nobody has mounted loses one of its two copies with its node: the healer of
  the node holding the other copy copies it to the third node, chunks included.
* A chunk damaged on the writer's disk is fetched from the replica, verified and
  rewritten: the read returns the right bytes and fsck is clean afterwards.
* Removing a volume drops its copies on the other nodes.
* Draining a node copies what it holds elsewhere; a node that joins takes its share;
  a volume that moved fetches its chunks in the background.
"""

from __future__ import annotations

import os

import pytest

from cfs.repl import placement
from cfs.types import NodeId
from tests.cluster.cluster import (
    EXPIRY_TTL,
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


def written_by_a(cluster: Cluster, seed: int) -> tuple[Member, Member, Member, dict[str, str]]:
    """a writes a tree into a new replicas=2 volume and unmounts it: (a, its replica r,
    the third node, the tree's hashes). Nobody writes the volume afterwards."""
    a = cluster["a"]
    info = a.cli("volume", "create", VOLUME, "-o", "replicas=2", json_out=True)
    r = cluster.replica_of(info["id"], a, cluster.nodes)
    third = next(n for n in cluster.nodes if n is not a and n is not r)
    mnt = a.mount_dir(VOLUME)
    a.cli("mount", VOLUME, str(mnt))
    expected = make_tree(mnt, seed=seed, dirs=2, files_per_dir=3)
    fsync_dir(mnt)
    a.cli("umount", str(mnt))
    return a, r, third, expected


@pytest.mark.parametrize("cluster", [pytest.param({"lease_ttl": EXPIRY_TTL}, id="expiry-ttl")], indirect=True)
def test_a_lost_copy_of_an_unmounted_volume_is_made_again(cluster: Cluster) -> None:
    a, r, third, expected = written_by_a(cluster, seed=7)   # copies on a and r
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
    creator = cluster["a"]
    info = creator.cli("volume", "create", VOLUME, "-o", "replicas=2", "-o", "block_size=4096", json_out=True)
    # the writer is a node whose copy the healer keeps while the volume is not mounted
    # (it drops a surplus copy, and the damaged chunk with it, before the remount)
    a = cluster.first_placed(info["id"])
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
    assert any(chunk in line and "repaired" in line for line in a.log_lines("repaired")), a.log_text()[-6000:]
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


def test_a_moved_volume_fetches_its_chunks_in_the_background(cluster: Cluster) -> None:
    a, r, third, expected = written_by_a(cluster, seed=13)
    where = third.mount_dir(VOLUME)
    third.cli("mount", VOLUME, str(where))          # the metadata catches up; no chunk is here
    wait_for("the chunks to arrive without being read",
             lambda: third.fsck()["counts"]["remote_chunks"] == 0
             and third.inspect(VOLUME)["replication"]["prefetched_chunks"] > 0, timeout=30)
    for node in (a, r):
        node.stop()                                 # nobody else could serve them now
    assert tree_hashes(where) == expected


SHARE_VOLUMES = 14
"""Node ids are random: d ranks first among three for a volume with chance 1/3, so for
none of 14 with chance (2/3)**14, 0.3%."""


def test_a_node_that_joins_takes_its_share(cluster: Cluster) -> None:
    """Volumes a writes keep their copy on a plus the node placement picks among the
    others. After d joins, the next write of each volume ships to d where d now ranks
    first; the copy it displaced, now behind, is dropped once nobody writes the volume."""
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    ids = {}
    for i in range(SHARE_VOLUMES):
        name = f"share{i}"
        ids[name] = a.cli("volume", "create", name, "-o", "replicas=2", json_out=True)["id"]
        write_round(a, name, b"before")
    [d] = cluster.add_nodes(1)
    for name in ids:
        write_round(a, name, b"after")

    def ident(node: Member) -> NodeId:
        return NodeId(bytes.fromhex(node.node_id))

    def expected(name: str) -> set[str]:
        """a, and the node a's replicator picks among the others now that d is there."""
        [replica] = placement.choose(bytes.fromhex(ids[name]), [ident(b), ident(c), ident(d)], 1)
        return {a.node_id, replica.hex()}

    def holders(name: str) -> set[str]:
        return {n.node_id for n in cluster.nodes if volume_here(n, name)}

    assert any(d.node_id in expected(name) for name in ids), "d ranks first for none: rerun (p=0.3%)"
    wait_for("every volume's copies to be the expected two",
             lambda: all(holders(name) == expected(name) for name in ids), timeout=60)
    for node in cluster.nodes:
        assert node.fsck()["clean"]
    for name in [n for n in ids if d.node_id in expected(n)]:  # d's share reads whole from d
        holder = d
        where = holder.mount_dir(name)
        holder.cli("mount", name, str(where), "--takeover")
        assert (where / "after").read_bytes() == b"after"
        holder.cli("umount", str(where))


def write_round(node: Member, name: str, content: bytes) -> None:
    mnt = node.mount_dir(name)
    node.cli("mount", name, str(mnt))
    (mnt / content.decode()).write_bytes(content)
    fsync_dir(mnt)
    node.cli("umount", str(mnt))
