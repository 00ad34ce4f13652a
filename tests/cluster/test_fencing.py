"""An fsync that arrives after this node's writer was fenced and its copy discarded fails.

The old writer's volume left the open table when it was fenced and closed; an fsync
that arrived after that found nothing to flush (the commit timer had stored the blocks,
or the discard had dropped them) and nothing open to wait for, and succeeded: the
program was told its data was durable when it had been thrown away. Here programs hold
files open on the old writer's mount, between their write and their fsync, fdatasync
or close, until that node has logged that it discarded its copy; only then do they go
on. Steps are driven by the test, not by timing (``tests.cluster.cluster.Writer``).
"""

from __future__ import annotations

import errno

from tests.cluster.cluster import (
    Cluster, Writer, create_volume, mount, replicated, roles, wait_for, write_synced,
)


def test_an_fsync_after_the_fenced_copy_was_discarded_fails_with_eio(cluster: Cluster) -> None:
    vid = create_volume(cluster["a"])["id"]
    a, _r, b = roles(cluster, vid)
    ma = mount(a)
    held = {last: Writer(ma, f"held-{last}.bin", cluster.base / f"held-{last}.json")
            for last in ("fsync", "fdatasync", "close")}
    try:
        for writer in held.values():
            writer.do("open", "write")
            assert writer.wait_step("write") == "ok"
        wait_for("r to hold every record", lambda: replicated(a), timeout=30)
        a.freeze()                      # a cannot release: b takes the volume over anyway
        mb = mount(b, takeover=True)
        a.resume()
        wait_for("a to log that it discarded its copy", lambda: a.log_lines("discarded"), timeout=60)
        for last, writer in held.items():
            writer.do(last)
        steps = {last: writer.result() for last, writer in held.items()}
    finally:
        for writer in held.values():
            writer.kill()
    for last, taken in steps.items():
        assert taken == {"started": "ok", "open": "ok", "write": "ok", last: errno.EIO}, (last, taken)
    assert "fenced" in a.log_text()
    assert b.inspect("vol")["writer"]["node_id"] == b.node_id
    assert mb.exists()


def test_a_takeover_with_no_reachable_copy_is_refused_and_the_holder_keeps_it(cluster: Cluster) -> None:
    """The only copy is on a (one replica), and a is frozen: b's takeover is refused
    before it touches the lease, so a is not fenced and keeps its volume and data. (It
    used to take the lease, serve an empty volume, and make a drop the only copy.)"""
    a = cluster["a"]
    b = next(n for n in cluster.nodes if n is not a)
    create_volume(a, replicas=1)
    ma = mount(a)
    write_synced(ma / "only-here", b"the only copy" * 1000)
    a.freeze()
    try:
        refused = b.cli("mount", "vol", str(b.mount_dir("vol")), "--takeover", check=False)
    finally:
        a.resume()
    assert refused.returncode == 1
    assert "has no copy on this node nor on any node that answers" in refused.stderr, refused.stderr
    assert (ma / "only-here").read_bytes() == b"the only copy" * 1000
    assert a.inspect("vol")["writer"]["node_id"] == a.node_id
    assert not a.log_lines("fenced") and not b.is_mounted(b.mount_dir("vol"))
    write_synced(ma / "after", b"a still writes it")
