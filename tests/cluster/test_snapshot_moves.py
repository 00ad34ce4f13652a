"""Snapshots and clones across a cluster: they replicate with their volume, move with it,
outlive the node that took them, and clones made on another node hold what the
snapshot held (three real daemons, a real etcd, real mounts)."""

from __future__ import annotations

from cfs.repl import placement
from cfs.types import NodeId
from tests.cluster.cluster import (
    Cluster, Member, assert_clean, assert_tree, create_volume, make_tree, mount, replicated, roles, tree_hashes,
    wait_for,
)


def snapshots_here(node: Member) -> set[str]:
    return {s["name"] for s in node.api("snapshot.ls") if s["here"]}


def test_a_snapshot_replicates_moves_and_outlives_its_writer(cluster: Cluster) -> None:
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=31, dirs=2)
    a.cli("snapshot", "create", "vol", "s1")
    (ma / "after-the-snapshot").write_bytes(b"not in it")
    wait_for("r to hold every record", lambda: replicated(a), timeout=30)
    assert "vol@s1" in snapshots_here(r)            # r replayed the snapshot event from a's log

    # the volume moves to b: b catches up from the log, and takes the snapshot on the way
    a.cli("umount", str(ma))
    mb = mount(b)
    assert (mb / "after-the-snapshot").exists()
    assert "vol@s1" in snapshots_here(b)
    sb = b.mount_dir("snap")
    b.cli("mount", "vol@s1", str(sb))
    assert tree_hashes(sb) == expected
    b.cli("umount", str(sb))

    # the node that took it dies: a node without a copy mounts it, copied whole from one that has
    a.kill()
    assert b.inspect("vol")["writer"]["node_id"] == b.node_id
    b.cli("umount", str(mb))
    b.cli("snapshot", "rm", "vol@s1")
    assert b.api("snapshot.ls") == []               # gone from the catalog, and from b
    wait_for("r to drop its copy of the removed snapshot", lambda: r.api("snapshot.ls") == [], timeout=60)
    assert_clean(r, b)


def test_a_clone_on_another_node_holds_what_the_snapshot_held(cluster: Cluster) -> None:
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=41, dirs=2)
    a.cli("snapshot", "create", "vol", "base")
    (ma / "later").write_bytes(b"after")
    # b holds no copy of the volume or the snapshot: it copies the snapshot, then clones it
    b.cli("volume", "create", "copy", "--from-snapshot", "vol@base", "-o", "replicas=2")
    mc = mount(b, "copy")
    assert_tree(mc, expected)
    assert not (mc / "later").exists()
    (mc / "written-in-the-clone").write_bytes(b"mine")
    assert not (ma / "written-in-the-clone").exists()
    wait_for("the clone's replica to hold it", lambda: replicated(b, "copy"), timeout=60)
    assert_clean(a, r, b)


def test_a_snapshot_asked_of_a_node_that_does_not_write_the_volume_is_taken_by_the_writer(cluster: Cluster) -> None:
    """b is asked for a snapshot of a volume that a writes: b asks a (TakeSnapshot), which
    takes it at one instant of its own and enters it in the catalog; the volume stays
    where it is, mounted."""
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=51, dirs=2)
    taken = b.cli("snapshot", "create", "vol", "s", json_out=True)
    assert taken["name"] == "vol@s" and taken["here"] is False and taken["snapshot_of"] == vid
    assert a.inspect("vol")["writer"]["node_id"] == a.node_id and a.is_mounted(ma)  # nothing moved
    assert "vol@s" in snapshots_here(a)
    assert a.log_lines("asks for a snapshot") and not b.log_lines("asks for a snapshot")
    (ma / "after-the-snapshot").write_bytes(b"not in it")
    sb = b.mount_dir("snap")
    b.cli("mount", "vol@s", str(sb))  # copied whole to b from a node that has it
    assert tree_hashes(sb) == expected
    b.cli("umount", str(sb))
    again = b.cli("snapshot", "create", "vol", "s", check=False)
    assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
    assert [s["name"] for s in b.api("snapshot.ls")] == ["vol@s"]
    assert_clean(a, r, b)


def test_a_mounted_snapshot_is_not_dropped_as_a_surplus_copy(cluster: Cluster) -> None:
    """Every node mounts the snapshot, so every node holds a copy of it: one more than its
    replicas. The healer drops a surplus copy (on the node ranked last for the snapshot),
    but not while it is mounted, though no file of it is open: a snapshot has no writer,
    its mounts keep it. Once unmounted, the surplus copy goes."""
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=61, dirs=2)
    a.cli("snapshot", "create", "vol", "s1")
    wait_for("r to hold every record", lambda: replicated(a), timeout=30)
    a.cli("umount", str(ma))
    snap_id = a.api("snapshot.inspect", name="vol@s1")["id"]
    by_id = {NodeId(bytes.fromhex(n.node_id)): n for n in (a, r, b)}
    last = by_id[placement.rank(bytes.fromhex(snap_id), list(by_id))[-1]]
    mounted = {}
    for node in (a, r, b):
        mounted[node.name] = path = node.mount_dir("snap")
        node.cli("mount", "vol@s1", str(path))
    rounds = last.status()["cluster"]["self_heal"]["rounds"]
    wait_for(f"two self-heal rounds on {last.name}",
             lambda: last.status()["cluster"]["self_heal"]["rounds"] >= rounds + 2, timeout=60)
    for node in (a, r, b):
        assert tree_hashes(mounted[node.name]) == expected, node.name
    assert "vol@s1" in snapshots_here(last)
    for node in (a, r, b):
        node.cli("umount", str(mounted[node.name]))
    wait_for(f"{last.name} to drop its surplus copy once unmounted",
             lambda: "vol@s1" not in snapshots_here(last), timeout=60)
    assert_clean(a, r, b)
