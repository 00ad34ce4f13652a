"""Self-heal: volumes that nobody writes are brought back to their replica count.

A mounted volume's replicator follows the live nodes by itself. A volume that no live
node writes (its writer died, or it is not mounted anywhere) has nobody shipping it, so
every node runs a ``Healer``: every ``interval`` seconds, for each volume it holds a copy
of and that has no live writer, it asks the live, non-draining nodes how far their
copies go. If fewer than ``replicas`` are complete and this node is the best-ranked
(rendezvous hashing) of those with a complete copy, it ships the missing records and
chunks to as many more nodes as needed: lagging copies first, then new nodes, each in
rendezvous order. The copy of a draining node does not count, so draining a node copies
what it holds elsewhere (``still_needed`` says what is still waiting). Surplus copies
(a writer's replicator moved to a node that joined; a drained node) are dropped: the
best-ranked ``replicas`` complete copies stay. A node counts as
gone once its registration expired (``--lease-ttl``): that is the grace period. Copies
of volumes the cluster removed are dropped.

A copy whose log no longer reaches back far enough for a target is copied whole
(``mountd.cluster.replicator.send_copy``, through the replicator); an interrupted copy
here is never a source.

Shipping uses the epoch of the last writer (the highest this node has seen), which every
replica accepts unless a newer writer appeared meanwhile; then the round stops.

What a round ships shows in the node's ``Transfers`` (kind ``drain`` while this node
drains, ``heal`` otherwise).

Dependencies are handed in: the node's records, members, peer pool, coordinator and transfers,
and two calls only the node can answer, ``writes`` (whether it writes a volume) and
``drop_copy`` (drop a copy, unless a mount got there first: True if it went).
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import trio

from cfs.codec import VolumeRecord
from cfs.coord.api import Coordinator, VolumeSpec
from cfs.errors import CfsError
from cfs.repl import placement
from cfs.repl.wire import VolumeInfo, VolumeInfoReply
from cfs.names import is_snapshot_name
from cfs.store import NodeRecords
from cfs.types import NodeId, VolumeId
from mountd.cluster.links import PeerError, PeerPool, PeerUnavailable
from mountd.cluster.members import Members
from mountd.cluster.progress import TransferKind, Transfers
from mountd.cluster.replicator import VolumeReplicator

log = logging.getLogger(__name__)

INFO_TIMEOUT = 3.0


class Healer:
    def __init__(self, records: NodeRecords, members: Members, pool: PeerPool, coord: Coordinator, *,
                 writes: Callable[[VolumeId], bool],
                 drop_copy: Callable[..., Awaitable[bool]],
                 interval: float, replication_timeout: float, transfers: Transfers | None = None) -> None:
        self.records = records
        self.members = members
        self.pool = pool
        self.coord = coord
        self.writes = writes
        self.drop_copy = drop_copy
        self.interval = interval
        self.replication_timeout = replication_timeout
        self.transfers = transfers
        self.rounds = 0
        self._cataloged: set[VolumeId] = set()
        """Snapshots seen in the catalog: once gone from it they were removed, and their
        copies go at once (one never seen may not be entered yet: ``drop_copy``)."""
        self.shipped: dict[str, int] = {}
        """Volume name -> records shipped by this node's healer (for ``cfs status``)."""

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval)
            try:
                await self.heal_all()
            except CfsError as exc:
                log.warning("self-heal round failed: %s", exc)
            self.rounds += 1

    async def heal_all(self) -> None:
        draining = self.members.draining()
        specs = await self.coord.list_volumes()
        for record in self.records.volumes():
            if self.writes(record.volume_id):
                continue
            spec = specs.get(record.name)
            if spec is None or spec.volume_id != record.volume_id:
                await self._drop_removed(record)
                continue
            self._cataloged.add(record.volume_id)
            if spec.replicas <= 1 and not draining:
                continue  # one copy, and it stays here
            holder = await self.coord.holder(record.name)
            if holder is not None and holder.alive:
                continue
            await self._heal(record, spec)

    async def still_needed(self) -> list[str]:
        """Volumes whose copy here is one the cluster still needs if this node leaves:
        complete here, and fewer than ``replicas`` complete copies on other live nodes.
        Asked now, of the nodes themselves (``cfs node drain`` shows it)."""
        me = self.members.node_id
        specs = await self.coord.list_volumes()
        needed = []
        for record in self.records.volumes():
            spec = specs.get(record.name)
            if spec is None or spec.volume_id != record.volume_id or self.writes(record.volume_id):
                continue
            copies = await self._copies(record, self.members.live_peers())
            mine = self.records.applied_seq(record.slot)
            elsewhere = [n for n, seq in copies.items() if n != me and seq >= mine]
            if len(elsewhere) < spec.replicas:
                needed.append(record.name)
        return needed

    async def _drop_removed(self, record: VolumeRecord) -> None:
        """A copy of a volume the cluster removed (or replaced under its name) goes too."""
        if self.records.epoch_seen(record.slot) == 0 and not is_snapshot_name(record.name):
            return  # a volume made here before the node joined: published at start, not ours to drop
        try:
            if await self.drop_copy(record, self.records.applied_seq(record.slot), removed=True,
                                    seen=record.volume_id in self._cataloged):
                log.info("volume %s (id %s) was removed from the cluster; dropped this node's copy",
                         record.name, record.volume_id.hex())
        except CfsError as exc:
            log.warning("could not drop the copy of removed volume %s: %s", record.name, exc)

    async def _heal(self, record: VolumeRecord, spec: VolumeSpec) -> None:
        me = self.members.node_id
        peers = self.members.live_peers()
        copies = await self._copies(record, peers)
        if self.records.incomplete(record.slot):
            return  # an interrupted whole-volume copy: a node with a complete one heals
        copies[me] = self.records.applied_seq(record.slot)
        epoch = self.records.epoch_seen(record.slot)
        best = max(copies.values())
        complete = [n for n, seq in copies.items() if seq == best]
        # A draining node's copy does not count: it is leaving.
        draining = self.members.draining()
        counted = [n for n in complete if not (draining and n == me)]
        if len(counted) >= spec.replicas:
            # Enough complete copies. Any other copy is surplus (a writer moved its replica
            # to a node that joined; this node is draining): the best-ranked complete
            # copies stay, the rest go.
            keep = placement.rank(spec.volume_id, counted)[:spec.replicas]
            if me not in keep and await self.drop_copy(record, copies[me]):
                # complete but surplus, or lagging behind enough others
                log.info("volume %s: its placed copies are complete; dropped this node's copy", record.name)
            return
        else:
            # Top up: copies that lag first (they hold most of it already), then new
            # nodes, each group in rendezvous order, so every node picks the same ones.
            lagging = placement.rank(spec.volume_id, [n for n in copies if copies[n] < best and n != me])
            fresh = placement.rank(spec.volume_id, [n for n in peers if n not in copies])
            targets = (lagging + fresh)[:spec.replicas - len(counted)]
        if not targets or placement.rank(spec.volume_id, complete)[0] != me:
            return  # nothing to copy, or another node with a complete copy does the shipping
        log.info("volume %s: copying %d records to %s (self-heal)", record.name, best,
                 ", ".join(n.hex()[:8] for n in targets))
        rep = VolumeReplicator(self.records, self.pool, record, epoch,
                               targets=lambda: targets, on_fenced=lambda _epoch: None,
                               timeout=self.replication_timeout, transfers=self.transfers,
                               kind=TransferKind.DRAIN if draining else TransferKind.HEAL)
        await rep.ship_once()
        self.shipped[record.name] = best

    async def _copies(self, record: VolumeRecord, peers: list[NodeId]) -> dict[NodeId, int]:
        """How far each reachable peer's copy of the volume goes (absent: no copy)."""
        copies: dict[NodeId, int] = {}

        async def ask(peer: NodeId) -> None:
            try:
                reply = await self.pool.request(peer, VolumeInfo(record.volume_id), timeout=INFO_TIMEOUT)
            except (PeerUnavailable, PeerError):
                return
            if isinstance(reply, VolumeInfoReply) and reply.known:
                copies[peer] = reply.applied_seq
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        return copies
