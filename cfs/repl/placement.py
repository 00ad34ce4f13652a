"""Which nodes hold a key: rendezvous (highest random weight) hashing.

Every node gets a score for a key, ``score(key, node)``, and the key belongs to the
``n`` nodes with the highest scores. Placement is computed, never stored: any node that
knows the set of live nodes finds a chunk's replicas (key = chunk id) or a volume's
(key = volume id) without asking anyone.

**Minimal movement.** A node's score for a key does not depend on the other nodes, so
adding or removing a node leaves every other score, and so the order of the other
nodes, unchanged. Removing a node changes the top ``n`` only of the keys that had it in
their top ``n`` (the next node moves up); adding a node changes only the keys that rank
it in their top ``n`` (it pushes out their ``n``-th). Each node gets an even share of
keys, because scores are uniform and independent across nodes.

**Stability.** The score is xxh3-64 (seed 0) of ``key + node_id``: a fixed, published
function whose output has been frozen since xxHash 0.8.0, independent of the platform,
the process (unlike Python's ``hash``, salted per process) and of ``cfs.hashing`` (which
may change how chunk ids are made without moving any chunk). Node ids have a fixed
length, so ``key + node_id`` is unambiguous. Changing this function would move almost
every key in a cluster; a test pins its output.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import xxhash

from cfs.types import NodeId

NODE_ID_SIZE = 16


def score(key: bytes, node: NodeId) -> int:
    """The weight of ``node`` for ``key``; higher ranks first."""
    return xxhash.xxh3_64_intdigest(key + node)


def _unique_nodes(nodes: Iterable[NodeId]) -> list[NodeId]:
    unique = list(dict.fromkeys(nodes))
    for node in unique:
        if len(node) != NODE_ID_SIZE:
            raise ValueError(f"node ids have {NODE_ID_SIZE} bytes, got {len(node)}: {node.hex()}")
    return unique


def rank(key: bytes, nodes: Iterable[NodeId]) -> list[NodeId]:
    """All of ``nodes`` (duplicates once), best first for ``key``.

    Ties (a 2**-64 chance) are broken by node id, so every node computes the same order.
    """
    return sorted(_unique_nodes(nodes), key=lambda node: (score(key, node), node), reverse=True)


def choose(key: bytes, nodes: Iterable[NodeId], n: int) -> list[NodeId]:
    """The ``n`` best nodes for ``key`` (all of them if there are fewer), best first:
    the same as ``rank(key, nodes)[:n]``."""
    if n < 0:
        raise ValueError(f"cannot choose {n} nodes")
    return heapq.nlargest(n, _unique_nodes(nodes), key=lambda node: (score(key, node), node))
