"""Fetching chunks from peers: for a read that needs one this node lacks, and in bulk
for a volume that moved here.

A chunk this node references may live on replicas only (a moved volume: REMOTE), or be
missing or damaged here. Peers are asked in turn until each chunk came; a peer that
does not hold a chunk, or holds it damaged, answers it as missing, and the next is
asked. Bytes are verified against their ids by the peer session before they arrive
here, and stored through ``NodeRecords.fill_chunks``.
"""

from __future__ import annotations

import logging

from cfs.errors import ChunkNotHere
from cfs.repl.wire import Chunks, GetChunks
from cfs.store import NodeRecords
from cfs.types import ChunkId, NodeId
from mountd.cluster.links import PeerError, PeerPool, PeerUnavailable
from mountd.cluster.members import Members

log = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0


class ChunkFetcher:
    def __init__(self, records: NodeRecords, pool: PeerPool, members: Members) -> None:
        self.records = records
        self.pool = pool
        self.members = members

    async def fetch_one(self, cid: ChunkId) -> None:
        """Bring a chunk this node references but does not hold (or holds damaged) here,
        repairing the local copy; ChunkNotHere if no reachable node has it."""
        missing = await self.fetch({cid}, repair=True)
        if missing is None or cid in missing:
            raise ChunkNotHere(f"chunk {cid.hex()} is held by no reachable node", cid)

    async def fetch(self, wanted: set[ChunkId], *, repair: bool) -> set[ChunkId] | None:
        """Ask peers for ``wanted`` until each came or every peer was asked; the ids that
        did not come, or None if no peer could be asked at all. ``repair``: also
        rewrite chunks held here (missing or damaged), not only the remote ones."""
        wanted = set(wanted)
        asked_any = False
        for peer in self.members.all_peers():
            if not wanted:
                break
            try:
                reply = await self.pool.request(peer, GetChunks(sorted(wanted)), timeout=FETCH_TIMEOUT)
            except (PeerUnavailable, PeerError):
                continue
            asked_any = True
            assert isinstance(reply, Chunks)
            self._keep(peer, reply, wanted, repair)
        return wanted if asked_any else None

    def _keep(self, peer: NodeId, reply: Chunks, wanted: set[ChunkId], repair: bool) -> None:
        fetched = [(cid, data) for cid, data in reply.found if cid in wanted]
        for cid in self.records.fill_chunks(fetched, wanted, repair=repair):
            log.warning("chunk %s was missing or damaged here; repaired from node %s", cid.hex(), peer.hex()[:8])
        wanted.difference_update(cid for cid, _data in fetched)
