"""A chunk that one replica holds damaged is fetched from another, end to end.

A node that reads a chunk it does not hold asks its peers in turn. A peer whose copy is
damaged answers it as missing (and says so in its log), and serves the other chunks
asked for with it, so the asker goes on to the next peer; before, the peer's handler
failed on the hash check and answered the whole batch with INTERNAL, logged as a bug.
The damaged copy is made by flipping bytes in a stored chunk while its node is stopped.
What the damaged node answers is asked of it directly, on an authenticated peer
connection, so the test does not hang on which peer the reader happens to ask first.
"""

from __future__ import annotations

import os
import random

from cfs.repl.wire import Chunks, GetChunks
from cfs.types import LOCAL_MASK, ChunkId
from tests.cluster.cluster import Cluster, create_volume, mount, replicated, roles, wait_for, write_synced
from tests.cluster.test_bad_peers import authed, roundtrip
from tests.mount.test_corruption import flip_chunk_of


def test_a_chunk_damaged_on_one_replica_is_fetched_from_another(cluster: Cluster) -> None:
    vid = create_volume(cluster["a"], replicas=2)["id"]
    a, r, b = roles(cluster, vid)
    ma = mount(a)
    data = random.Random(17).randbytes(200_000)   # 4 chunks of 64 KiB blocks, none alike
    write_synced(ma / "f", data)
    wait_for("r to hold every record", lambda: replicated(a), timeout=30)
    ino = os.stat(ma / "f").st_ino & LOCAL_MASK
    a.cli("umount", str(ma))

    assert r.stop() == 0
    damaged = ChunkId(bytes.fromhex(flip_chunk_of(r.data_dir / "store", "vol", ino, 1)))
    good = ChunkId(bytes.fromhex(flip_chunk_of(r.data_dir / "store", "vol", ino, 0, flip=False)))
    r.start()
    cluster.wait_members(3)

    peer, session = authed(r, cluster.secret)
    try:
        reply = roundtrip(peer, session, GetChunks([damaged, good]))
    finally:
        peer.close()
    assert isinstance(reply, Chunks)
    assert [cid for cid, _data in reply.found] == [good] and list(reply.missing) == [damaged]
    assert r.log_lines(f"chunk {damaged.hex()} asked for by node") and r.log_lines("answered as missing")
    assert not r.log_lines("handling GetChunks failed")

    mb = mount(b)                                   # b holds nothing: it fetches every chunk
    assert (mb / "f").read_bytes() == data
    report = b.fsck()
    assert report["clean"], report["lines"]
