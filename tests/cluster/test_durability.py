"""What fsync answers when a replica is lost, under each durability (cfs.durability), on a
real cluster: etcd and two ``cfs-mountd`` on loopback, real mounts (``tests.cluster.cluster``).

Two nodes, a volume with replicas=2 written on a, so r (the other node) is its only
replica. r is lost either by kill -9 or by SIGSTOP (frozen: its TCP port still accepts,
nothing answers; the etcd lease outlives the freeze, so it stays the replica a ships to).
Then programs on a write a file each and end with fsync, fdatasync or close, and the test
fsyncs a's directory:

* ``available``: every call succeeds (after the replication timeout at most) and the
  volume is degraded;
* ``strict``: every call fails with EIO, and the volume is degraded.

Either way the bytes stay on a: once r is back (restarted, or resumed) it catches up,
the volume is whole again, an fsync succeeds, and r alone (a stopped) serves every byte,
those whose fsync failed included.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.cluster import (
    LEASE_TTL,
    VOLUME,
    WRITER_PIECE,
    WRITER_REPEAT,
    Cluster,
    Member,
    Writer,
    assert_clean,
    assert_tree,
    mount,
    replicated,
    wait_for,
    write_file,
)

pytestmark = pytest.mark.mount

LASTS = ("fsync", "fdatasync", "close")
"""How each program ends what it wrote: each of them claims durability."""
FREEZE_TTL = 60
"""etcd lease TTL of the nodes when r is frozen: r stays registered (and a's replica)."""


def fsync_dir_outcome(path: Path) -> Any:
    """fsyncdir of ``path``: "ok" or the errno it failed with."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
        return "ok"
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)


def whole(writer: Member) -> dict[str, Any] | None:
    """The writer's replication state once its replica holds every record and nothing is
    degraded or failing."""
    repl = replicated(writer)
    return repl if repl is not None and repl["degraded"] is None and not repl["failing"] else None


@pytest.mark.parametrize("fault", ["kill", "stop"])
@pytest.mark.parametrize("durability", ["available", "strict"])
def test_fsync_with_its_replica_lost(cluster_base: Path, durability: str, fault: str) -> None:
    with Cluster(cluster_base, lease_ttl=FREEZE_TTL if fault == "stop" else LEASE_TTL) as cluster:
        cluster.start(2)
        a, r = cluster["a"], cluster["b"]
        made = a.cli("volume", "create", VOLUME, "-o", "replicas=2", "-o", f"durability={durability}",
                     json_out=True)
        assert made["durability"] == durability and made["options"] == {"durability": durability}
        ma = mount(a)
        expected = write_file(ma, "before.bin", seed=1)
        wait_for("r to hold every record", lambda: whole(a), timeout=30)

        if fault == "kill":
            r.kill()
        else:
            r.freeze()
        writers = {last: Writer(ma, f"during-{last}.bin", cluster.base / f"during-{last}.json") for last in LASTS}
        try:
            for last, program in writers.items():
                program.do("open", "write", last)
            taken = {last: program.result() for last, program in writers.items()}
        finally:
            for program in writers.values():
                program.kill()
        synced_dir = fsync_dir_outcome(ma)

        inspected = a.inspect(VOLUME)
        assert inspected["durability"] == durability
        assert inspected["replication"]["degraded"], inspected["replication"]
        claimed = "ok" if durability == "available" else errno.EIO
        for last, steps in taken.items():
            assert steps == {"started": "ok", "open": "ok", "write": "ok", last: claimed}, (durability, last, steps)
        assert synced_dir == claimed

        # r comes back: it catches up with what a kept, and every claim holds again
        if fault == "kill":
            r.start()
        else:
            r.resume()
        cluster.wait_members(2)
        wait_for("r to hold every record again and the volume to be whole", lambda: whole(a), timeout=60)
        expected |= write_file(ma, "after.bin", seed=2)  # its fsync succeeds, strict or not
        assert fsync_dir_outcome(ma) == "ok"
        payload = hashlib.sha256((WRITER_PIECE * WRITER_REPEAT).encode()).hexdigest()
        expected |= {f"during-{last}.bin": payload for last in LASTS}
        assert_tree(ma, expected)

        # the proof that r holds it: with a stopped, r serves every byte alone
        a.cli("umount", str(ma))
        assert a.stop() == 0
        mr = mount(r)
        assert_tree(mr, expected)
        assert_clean(r)
