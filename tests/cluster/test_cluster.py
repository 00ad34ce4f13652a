"""A volume moving between real node daemons: etcd, three ``cfs-mountd`` on loopback,
real FUSE mounts and system calls, no mocks (fixture: ``tests.cluster.cluster``).

Every volume has replicas=2, so its writer ships to one of the two other nodes: the one
rendezvous placement picks (``Cluster.replica_of``). Tests name nodes by role: ``a``
writes first, ``r`` holds a's replica, ``b`` is the third node, which catches up from
``r`` and fetches chunks on demand. Waits poll with a deadline; nothing here measures speed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import (
    EMPTY,
    EXPIRY_TTL,
    REFUSED,
    VOLUME,
    Cluster,
    Member,
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
from tests.mount.test_crash import WRITER, logged_facts, verify

pytestmark = pytest.mark.mount

# --- moves ------------------------------------------------------------------------------

def test_move_takeover_plain_and_back(cluster: Cluster) -> None:
    """A tree written and fsync'd on a is whole on b after ``--takeover`` (b catches up
    from r and fetches chunks), b's writes are whole on a after a plain umount + mount,
    and a third move with takeover to r keeps everything; fsck is clean everywhere."""
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=1)

    mb = mount(b, takeover=True)
    wait_for("a's mount to be taken away", lambda: not a.is_mounted(ma), timeout=10)
    assert_tree(mb, expected)
    assert b.inspect(VOLUME)["writer"]["node_id"] == b.node_id

    expected |= make_tree(mb, seed=2)
    (mb / "s1" / "d0" / "f0.bin").unlink()
    del expected["s1/d0/f0.bin"]
    os.rename(mb / "s1" / "d2", mb / "s1" / "d2-renamed")
    expected = {k.replace("s1/d2/", "s1/d2-renamed/"): v for k, v in expected.items()}
    fsync_dir(mb / "s1")
    fsync_dir(mb / "s1" / "d0")
    b.cli("umount", str(mb))
    assert not b.is_mounted(mb)

    ma = mount(a)
    assert_tree(ma, expected)
    assert tree_hashes(ma).keys() == expected.keys()

    expected |= make_tree(ma, seed=3)
    mr = mount(r, takeover=True)
    wait_for("a's mount to be taken away", lambda: not a.is_mounted(ma), timeout=10)
    assert_tree(mr, expected)
    assert tree_hashes(mr).keys() == expected.keys()
    assert_clean(a, r, b)


EXPIRY = pytest.mark.parametrize("cluster", [pytest.param({"lease_ttl": EXPIRY_TTL}, id="expiry-ttl")],
                                 indirect=True)
"""The cluster of a test that waits for a dead node to be declared down."""


@EXPIRY
def test_mount_refused_while_held_names_holder(cluster: Cluster) -> None:
    """Without --takeover, mounting a volume a live node holds fails naming that node; once
    the holder is dead and its etcd lease expired, a plain mount takes the volume."""
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=4, dirs=2)

    for other in (r, b):
        refused = other.cli("mount", VOLUME, str(other.mount_dir(VOLUME)), check=False)
        assert refused.returncode != 0
        assert a.node_id in refused.stderr and a.address in refused.stderr, refused.stderr
        assert not other.is_mounted(other.mount_dir(VOLUME))
        assert a.is_mounted(ma), "a refused mount elsewhere must leave the holder's mount alone"
    assert (ma / "still-here").write_bytes(b"x") == 1

    a.kill()
    wait_until_down(b, a, cluster)
    mb = mount(b)
    assert_tree(mb, expected)


# --- node loss ----------------------------------------------------------------------------

def run_writer_until(mount_point: Path, log: Path, facts: int) -> subprocess.Popen[bytes]:
    """Start the crash workload on ``mount_point`` and return once it logged ``facts`` facts."""
    writer = subprocess.Popen([sys.executable, str(WRITER), str(mount_point), str(log), "7"],
                              stdin=subprocess.DEVNULL)
    try:
        wait_for(f"the writer to log {facts} durable facts",
                 lambda: writer.poll() is not None or (log.exists() and len(log.read_text().splitlines()) >= facts),
                 timeout=60, interval=0.02)
        assert writer.poll() is None, "the writer stopped before the kill point"
    except BaseException:
        stop_process(writer)
        raise
    return writer


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@EXPIRY
def test_node_loss_keeps_everything_fsynced_and_rereplicates(cluster: Cluster) -> None:
    """kill -9 of the writer in the middle of a workload: r takes over with everything a had
    fsync'd, fsck is clean, and once a is down r re-replicates to b (a's place): b
    acknowledges every record, by records (r's log reaches back to the start), and the
    volume is not degraded; b alone, with a and r both dead, still serves every fsync'd
    byte."""
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    log = cluster.base / "writer.log"
    writer = run_writer_until(ma, log, facts=40)
    try:
        a.kill()
        writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    facts = logged_facts(log)
    assert len(facts) >= 40

    mr = mount(r, takeover=True)
    assert verify(mr, facts) > 0
    assert_clean(r)

    # re-replication: once a is down, r's replicator ships to b, which had nothing
    wait_until_down(r, a, cluster)
    [a_listed] = [line for line in r.cli("node", "ls").stdout.splitlines() if line.startswith(a.node_id[:12])]
    assert "down since" in a_listed, a_listed

    def settled() -> dict[str, Any] | None:
        repl = r.inspect(VOLUME)["replication"]
        done = repl["replicas"] == {b.node_id: repl["head"]} and repl["degraded"] is None and not repl["failing"]
        return repl if done else None
    repl = wait_for("b to hold every record of r's and the volume to be whole again", settled, timeout=60)
    assert repl == {"epoch": r.inspect(VOLUME)["writer"]["epoch"], "head": repl["head"],
                    "replicas": {b.node_id: repl["head"]}, "degraded": None, "failing": {}, "copied": {},
                    "state": "writing", "fenced": False, "prefetched_chunks": 0}, repl
    report = b.fsck()
    assert report["clean"], report["lines"]
    assert report["counts"]["remote_chunks"] == 0, report["counts"]
    assert report["counts"]["chunks"] > 0

    # the proof that b holds a whole copy: with r gone too, b serves everything alone
    r.kill()
    mb = mount(b, takeover=True)
    assert verify(mb, facts) > 0
    assert_clean(b)


# --- fencing ------------------------------------------------------------------------------

def up_nodes(observer: Member) -> set[str]:
    return {n["node_id"] for n in observer.node_ls() if n["state"] == "up"}


@pytest.mark.parametrize("cluster", [
    pytest.param({"lease_ttl": EXPIRY_TTL}, id="registration-expires"),
    pytest.param({"lease_ttl": 60}, id="registration-outlives-freeze"),
], indirect=True)
def test_fenced_writer_is_refused_and_unmounts(cluster: Cluster) -> None:
    """a is frozen (SIGSTOP) while b takes the volume over; a write issued on a meanwhile
    (to a file opened before) runs when a resumes: either the write or, if a took it, its
    fsync fails with EROFS (EIO for a handle of a copy a has dropped). a logs that it was
    fenced, unmounts and drops its copy, and neither b nor r ever shows a byte of that
    write: the file is there, empty, as it was made durable before the freeze.

    While a is frozen the write(2) waits in the kernel for a's answer to a GETXATTR
    (security.capability: the kernel's check whether the write must drop privileges); its
    WRITE request is sent only once a answered that, after it resumed, so it may reach a
    at any point of the fence: before it (then the fsync fails), after it (EROFS), or
    after a dropped its copy (EIO; it used to be ENOENT, which failed this test under load).

    With the short etcd lease, a's registration is gone when it resumes (the test waits
    until b lists a as down). With one that outlives the freeze (checked: a is still up),
    a still believes it holds the volume: it learns otherwise from etcd's lease record or
    from the replicas' STALE_EPOCH refusals, whichever comes first (the refusals alone
    are checked in test_bad_peers)."""
    vid = create_volume(cluster["a"])["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=5, dirs=2)

    late = Writer(ma, "late.bin", cluster.base / "late.json")
    try:
        late.do("open")
        assert late.wait_step("open") == "ok"
        fsync_dir(ma)
        expected["late.bin"] = EMPTY
        a.freeze()
        late.do("write", "fsync")  # the write blocks in the kernel: a does not answer
        mb = mount(b, takeover=True)
        assert_tree(mb, expected)
        # (with the long lease b may still ship to the frozen a: one file)
        expected |= write_file(mb, "b-wrote.bin", seed=6)
        assert late.running() and "write" not in late.steps(), \
            f"a write on a frozen daemon's mount cannot have finished: {late.steps()}"
        if cluster.lease_ttl == EXPIRY_TTL:
            wait_until_down(b, a, cluster)
        else:
            assert a.node_id in up_nodes(b), "a's registration was to outlive the freeze"

        a.resume()
        wait_for("a to log that it was fenced", lambda: a.log_lines("fenced"), timeout=15)
        wait_for("a's mount to go away", lambda: not a.is_mounted(ma), timeout=15)
        taken = late.result()
    finally:
        late.kill()
    refused_at_write = [{"started": "ok", "open": "ok", "write": code} for code in REFUSED]
    refused_at_fsync = [{"started": "ok", "open": "ok", "write": "ok", "fsync": code} for code in REFUSED]
    assert taken in refused_at_write + refused_at_fsync, \
        f"a late write on a fenced node: expected the write or its fsync to fail with EROFS or EIO: {taken}"
    wait_for("a to discard its copy", lambda: a.log_lines("discarded"), timeout=15)

    assert_tree(mb, expected)
    expected |= write_file(mb, "b-wrote-after.bin", seed=7)
    b.cli("umount", str(mb))
    mr = mount(r)
    assert tree_hashes(mr) == expected
    assert_clean(r, b)
