"""Who else is in the cluster, as this node last heard from the coordinator.

``Members`` owns the node's member table: refreshed from the coordinator every second
(``watch``), read by everything that picks peers (placement, catch-up, self-heal, chunk
fetches) and by the peer pool for addresses. A node is *live* while its registration is
alive; draining nodes are live but take no new copies.

Concurrency: the table is replaced whole, on the trio thread, between awaits; readers
see one refresh or the next, never half of one.
"""

from __future__ import annotations

import logging
import time

from cfs.coord.api import Coordinator, NodeStatus
from cfs.types import NodeId

log = logging.getLogger(__name__)


class Members:
    def __init__(self, node_id: NodeId, coord: Coordinator) -> None:
        self.node_id = node_id
        self.coord = coord
        self.table: dict[NodeId, NodeStatus] = {}
        self.refreshed_ns: int | None = None
        """Wall-clock time of the last refresh (None: never)."""

    async def refresh(self) -> None:
        self.table = {n.node_id: n for n in await self.coord.nodes()}
        self.refreshed_ns = time.time_ns()

    def states(self) -> dict[str, str]:
        """Node id (hex) -> up, down or draining, as this node last heard (``cfs status``):
        what it fences, catches up from and ships to, which may lag etcd by a refresh."""
        return {node.hex(): status.state.value for node, status in self.table.items()}

    def address(self, node: NodeId) -> str | None:
        status = self.table.get(node)
        return status.address if status is not None and status.address else None

    def draining(self) -> bool:
        """Whether this node is draining: its copies do not count, it takes no new ones."""
        status = self.table.get(self.node_id)
        return status is not None and status.draining

    def live_peers(self) -> list[NodeId]:
        """Other live nodes that take copies (not draining): where replicas may go."""
        return [n for n, s in self.table.items() if s.alive and not s.draining and n != self.node_id]

    def all_peers(self) -> list[NodeId]:
        """Every other live node, draining ones too: whom to fence, and ask for records and chunks."""
        return [n for n, s in self.table.items() if s.alive and n != self.node_id]
