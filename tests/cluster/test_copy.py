"""Whole-volume copies across real node daemons (fixture: ``tests.cluster.cluster``).

The daemons keep only 5 change-log records beyond what every replica has
(``--changelog-retain 5``). After many fsync'd writes on a (replicas=2) the log no
longer reaches back to the volume's start, so when a's replica r dies, the third node b
cannot be brought up by records: a's replicator copies the volume to b whole, then
ships records after the copy, and the volume does not stay degraded. b then takes the
volume over and serves every file by itself; fsck is clean there. A second case: a
node that takes a volume over while its copy is older than any retained log asks for a
whole copy before it fetches the rest. Both ends of each copy show it among the
transfers that ended (``cfs status``), with the same bytes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.cluster import (
    EXPIRY_TTL,
    Cluster,
    Member,
    assert_clean,
    assert_tree,
    create_volume,
    fsync_dir,
    make_tree,
    mount,
    replicated,
    roles,
    wait_for,
    wait_until_down,
    write_file,
)

pytestmark = pytest.mark.mount

def ended(node: Member, kind: str, direction: str, peer: Member) -> list[dict[str, Any]]:
    """The transfers of volume vol with ``peer`` that ``node`` shows as ended, done."""
    return [t for t in node.status()["cluster"]["transfers_ended"] if t["volume"] == "vol" and t["kind"] == kind
            and t["direction"] == direction and t["peer"] == peer.node_id and t["state"] == "done"]


RETAIN = 5
SMALL_LOG = {"daemon_args": ["--changelog-retain", str(RETAIN)]}


@pytest.mark.parametrize("cluster", [pytest.param(SMALL_LOG | {"lease_ttl": EXPIRY_TTL}, id="retain-5")],
                         indirect=True)
def test_a_new_replica_is_copied_whole_after_a_node_loss(cluster: Cluster) -> None:
    info = create_volume(cluster["a"])
    a, r, b = roles(cluster, info["id"])
    ma = mount(a)
    expected = make_tree(ma, seed=11, dirs=3, files_per_dir=4)
    for i in range(12):
        expected |= write_file(ma, f"extra-{i}", seed=100 + i, size=20_000 + 3000 * i)
    fsync_dir(ma)
    repl = wait_for("r to hold every record", lambda: replicated(a), timeout=20)
    assert repl["head"] > 3 * RETAIN             # the log forgot the volume's beginning

    r.kill()
    wait_until_down(a, r, cluster)
    expected |= write_file(ma, "after-loss", seed=999)   # waits out the copy or the timeout
    repl = wait_for("a to copy the volume whole to b and ship it the rest",
                    lambda: (x := replicated(a)) and set(x["replicas"]) == {b.node_id} and x,
                    timeout=3 * cluster.lease_ttl + 30)
    assert b.node_id in repl["copied"], repl
    assert any("copying the volume whole" in line for line in a.log_lines("whole"))
    # both ends showed it: a sent it against the volume's bytes in use, b counted the same
    [sent] = ended(a, "replica", "out", b)
    [received] = ended(b, "incoming", "in", a)
    assert sent["bytes_done"] == sent["bytes_total"] == received["bytes_done"] > 0
    wait_for("the volume to be whole again", lambda: a.inspect("vol")["replication"]["degraded"] is None,
             timeout=20)

    mb = mount(b, takeover=True)
    assert_tree(mb, expected)
    assert_clean(b)


@pytest.mark.parametrize("cluster", [pytest.param(SMALL_LOG, id="retain-5")], indirect=True)
def test_a_mount_far_behind_pulls_a_whole_copy(cluster: Cluster) -> None:
    """b holds a copy that stopped long ago (it was a's replica only while r was away);
    b then takes the volume over: the most advanced copy's log no longer reaches back to
    b's, so b asks for a whole copy (``PushCopy``) before it fetches the rest."""
    info = create_volume(cluster["a"])
    a, r, b = roles(cluster, info["id"])
    ma = mount(a)
    expected = make_tree(ma, seed=21, dirs=1, files_per_dir=3)
    wait_for("r to hold every record", lambda: replicated(a), timeout=20)
    assert r.stop() == 0
    wait_until_down(a, r, cluster)
    expected |= write_file(ma, "while-r-is-away", seed=5)
    wait_for("b to hold every record",
             lambda: (x := replicated(a)) and set(x["replicas"]) == {b.node_id} and x, timeout=40)
    r.start()
    cluster.wait_members(3)
    for i in range(10):                          # b's copy falls far behind: it is not a target now
        expected |= write_file(ma, f"later-{i}", seed=300 + i, size=30_000)
    fsync_dir(ma)
    wait_for("r to hold every record again",
             lambda: (x := replicated(a)) and set(x["replicas"]) == {r.node_id} and x, timeout=40)

    mb = mount(b, takeover=True)
    assert_tree(mb, expected)
    assert any("copying the volume whole from it" in line for line in b.log_lines("whole"))
    [source] = [n for n in (a, r) if ended(n, "catch-up", "out", b)]   # PushCopy, sent for b's catch-up
    # b may have had a whole copy from the same source before (as a replica while r was
    # away, if a's log had already moved past its beginning): the catch-up's is one of them
    [sent] = ended(source, "catch-up", "out", b)
    received = [t["bytes_done"] for t in ended(b, "incoming", "in", source)]
    assert sent["bytes_total"] > 0 and sent["bytes_total"] in received, (sent, received)
    assert_clean(b)
