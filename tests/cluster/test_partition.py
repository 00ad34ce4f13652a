"""Network partitions between real node daemons, each in a network namespace of its own
(``tests.cluster.netns``), cut with ``ip link set … down``. Skipped where namespaces
cannot be made (not root, no ``ip``, no veth or bridge support).

The split-brain case: the writer loses its peers but keeps etcd, so it still believes it
holds the volume while another node takes it over. It must learn it lost the lease and
refuse writes; nothing it wrote after the takeover may show anywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import netns
from tests.cluster.cluster import (
    VOLUME,
    Cluster,
    Writer,
    assert_clean,
    assert_tree,
    create_volume,
    make_tree,
    mount,
    roles,
    tree_hashes,
    wait_for,
    wait_until_down,
    write_file,
)

pytestmark = pytest.mark.mount


@pytest.fixture
def partitionable(cluster_base: Path) -> Iterator[Cluster]:
    """Three nodes, each in its own network namespace; skipped where that cannot be done."""
    why = netns.available()
    if why is not None:
        pytest.skip(f"network namespaces unavailable: {why}")
    network = netns.Network()
    cluster = Cluster(cluster_base, network=network)
    try:
        network.setup()
        cluster.start(3)
        yield cluster
    finally:
        cluster.close()


def test_writer_cut_from_peers_loses_the_volume(partitionable: Cluster) -> None:
    """a keeps etcd but loses its peers; b takes over (a cannot be asked to release). a
    must find out from etcd that its lease is gone: a write there is refused, a logs that
    it was fenced and unmounts; after the link is back nothing of that write shows."""
    cluster, network = partitionable, partitionable.network
    assert network is not None
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=21, dirs=2)

    split = Writer(ma, "split.bin", cluster.base / "split.json")
    try:
        network.cut_peers(a.name)
        mb = mount(b, takeover=True)
        assert_tree(mb, expected)
        expected |= write_file(mb, "b-wrote.bin", seed=22)  # b may ship to a for a while: one file
        assert b.inspect(VOLUME)["writer"]["node_id"] == b.node_id
        split.go()
        steps = split.result()
    finally:
        split.kill()
    assert steps.get("fsync") != "ok", f"a wrote the volume after b took it over: {steps}"
    wait_for("a to log that it was fenced", lambda: a.log_lines("fenced"), timeout=15)
    wait_for("a's mount to go away", lambda: not a.is_mounted(ma), timeout=15)

    network.heal_peers(a.name)
    assert not (mb / "split.bin").exists()
    b.cli("umount", str(mb))
    mr = mount(r)
    assert not (mr / "split.bin").exists()
    assert tree_hashes(mr).keys() == expected.keys()
    assert_tree(mr, expected)
    assert_clean(r, b)


def test_writer_cut_off_entirely_stops_and_the_volume_moves(partitionable: Cluster) -> None:
    """a loses etcd and its peers at once: once its registration is gone it refuses writes
    and unmounts on its own, and b mounts the volume without --takeover (a's etcd lease
    expired) with everything a had fsync'd before the cut."""
    cluster, network = partitionable, partitionable.network
    assert network is not None
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=23, dirs=2)

    network.cut_peers(a.name)
    network.cut_etcd(a.name)
    wait_until_down(b, a, cluster)
    wait_for("a to log that it lost its registration", lambda: a.log_lines("lost its cluster registration"),
             timeout=15)
    wait_for("a's mount to go away", lambda: not a.is_mounted(ma), timeout=15)
    mb = mount(b)
    assert_tree(mb, expected)
    assert tree_hashes(mb).keys() == expected.keys()

    network.heal_etcd(a.name)
    network.heal_peers(a.name)
    expected |= make_tree(mb, seed=24, dirs=1, files_per_dir=2)
    assert_tree(mb, expected)
    assert_clean(b, r)
