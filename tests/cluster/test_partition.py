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
    EMPTY,
    EXPIRY_TTL,
    REFUSED,
    VOLUME,
    Cluster,
    Writer,
    assert_clean,
    assert_tree,
    create_volume,
    fsync_dir,
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
def partitionable(request: pytest.FixtureRequest, cluster_base: Path) -> Iterator[Cluster]:
    """Three nodes, each in its own network namespace; skipped where that cannot be done.
    Indirect parameters are keyword arguments of ``Cluster``."""
    why = netns.available()
    if why is not None:
        pytest.skip(f"network namespaces unavailable: {why}")
    network = netns.Network()
    cluster = Cluster(cluster_base, network=network, **getattr(request, "param", {}))
    try:
        network.setup()
        cluster.start(3)
        yield cluster
    finally:
        cluster.close()


def test_writer_cut_from_peers_loses_the_volume(partitionable: Cluster) -> None:
    """a keeps etcd but loses its peers; b takes over (a cannot be asked to release).
    Writes a had taken but not made durable are in flight: their fsync after the takeover
    fails (EROFS, or EIO for a handle of a copy a has dropped), whether it comes at once
    (before or while a learns from etcd that its lease is gone) or only after a logged
    that it was fenced, unmounted and dropped its copy. After the link is back nothing of
    those writes shows anywhere.

    The writers open their files before the cut and fsync the directory, so the empty
    files are on r and b shows them; they write after the cut (a still holds the lease:
    the writes are taken), so no byte of theirs can have reached another node. (A write
    before the cut could be shipped by a's commit timer within a second; its fsync would
    then rightly succeed.)"""
    cluster, network = partitionable, partitionable.network
    assert network is not None
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=21, dirs=2)

    at_once = Writer(ma, "at-once.bin", cluster.base / "at-once.json")
    after_drop = Writer(ma, "after-drop.bin", cluster.base / "after-drop.json")
    try:
        for writer in (at_once, after_drop):
            writer.do("open")
            assert writer.wait_step("open") == "ok"
        fsync_dir(ma)
        expected |= {"at-once.bin": EMPTY, "after-drop.bin": EMPTY}
        network.cut_peers(a.name)
        for writer in (at_once, after_drop):
            writer.do("write")
            assert writer.wait_step("write") == "ok"

        mb = mount(b, takeover=True)
        assert b.inspect(VOLUME)["writer"]["node_id"] == b.node_id
        at_once.do("fsync")
        wait_for("a to log that it was fenced", lambda: a.log_lines("fenced"), timeout=15)
        wait_for("a's mount to go away", lambda: not a.is_mounted(ma), timeout=15)
        wait_for("a to discard its copy", lambda: a.log_lines("discarded"), timeout=15)
        after_drop.do("fsync")
        steps = {"at once": at_once.result(), "after the drop": after_drop.result()}
    finally:
        at_once.kill()
        after_drop.kill()
    shown_on_b = {name: (mb / name).stat().st_size for name in ("at-once.bin", "after-drop.bin")}
    assert_tree(mb, expected)
    expected |= write_file(mb, "b-wrote.bin", seed=22)
    network.heal_peers(a.name)
    assert_tree(mb, expected)
    b.cli("umount", str(mb))
    mr = mount(r)
    assert tree_hashes(mr) == expected
    assert_clean(r, b)

    # last, so that a wrong outcome here still lets every claim above be checked
    for when, taken in steps.items():
        fsync = taken.get("fsync")
        assert taken == {"started": "ok", "open": "ok", "write": "ok", "fsync": fsync} and fsync in REFUSED, \
            f"fsync {when} of a write in flight on a node that lost the volume: {taken} " \
            f"(expected the fsync to fail with EROFS or EIO; sizes on b, the new writer: {shown_on_b})"


@pytest.mark.parametrize("partitionable", [pytest.param({"lease_ttl": EXPIRY_TTL}, id="expiry-ttl")],
                         indirect=True)
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
