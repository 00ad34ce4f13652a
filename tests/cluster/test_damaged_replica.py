"""A chunk that one replica holds damaged is fetched from another, end to end.

A node that reads a chunk it does not hold asks its peers in turn. A peer whose copy is
damaged answers it as missing (and says so in its log), so the asker goes on to the
next; before, the peer's handler failed on the hash check and answered the whole batch
with INTERNAL, logged as a bug. The damaged copy is made by flipping bytes in the
stored chunk of the node the reader asks first, while that node is stopped.
"""

from __future__ import annotations

import os
import random

from cfs.types import LOCAL_MASK
from tests.cluster.cluster import Cluster, create_volume, mount, replicated, roles, wait_for, write_synced
from tests.mount.test_corruption import flip_chunk_of


def test_a_chunk_damaged_on_one_replica_is_fetched_from_another(cluster: Cluster) -> None:
    vid = create_volume(cluster["a"], replicas=2)["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    data = random.Random(17).randbytes(200_000)
    write_synced(ma / "f", data)
    wait_for("r to hold every record", lambda: replicated(a), timeout=30)
    ino = os.stat(ma / "f").st_ino & LOCAL_MASK
    a.cli("umount", str(ma))

    # b asks its peers in the order of its member table, which node ls shows
    order = [n["node_id"] for n in b.node_ls() if n["node_id"] != b.node_id]
    first = a if order[0] == a.node_id else r
    assert first.stop() == 0
    chunk = flip_chunk_of(first.data_dir / "store", "vol", ino, 1)
    first.start()
    cluster.wait_members(3)

    mb = mount(b)
    assert (mb / "f").read_bytes() == data
    wait_for(f"{first.name} to say the chunk is damaged",
             lambda: first.log_lines(f"chunk {chunk} asked for by node"), timeout=30)
    assert first.log_lines("is damaged here: answered as missing")
    assert not first.log_lines("handling GetChunks failed")
    report = b.fsck()
    assert report["clean"], report["lines"]
