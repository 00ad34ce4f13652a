"""Rendezvous placement: deterministic, even, and moving only the keys a node change must move."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cfs.repl.placement import choose, rank, score
from cfs.types import NodeId


def node(i: int) -> NodeId:
    return NodeId(hashlib.sha256(b"node %d" % i).digest()[:16])


def key(i: int) -> bytes:
    return hashlib.sha256(b"key %d" % i).digest()[:16]


NODES = [node(i) for i in range(5)]
KEYS = [key(i) for i in range(10_000)]

node_sets = st.lists(st.binary(min_size=16, max_size=16).map(NodeId), min_size=1, max_size=8, unique=True)


def test_scores_are_pinned() -> None:
    """Placement must never change between versions: every chunk would move."""
    assert score(b"", NodeId(bytes(16))) == 0xD0A66A65C7528968
    assert [NODES.index(n) for n in rank(b"chunk", NODES)] == [0, 4, 1, 2, 3]


@given(st.binary(max_size=32), node_sets, st.integers(0, 10))
def test_choose_is_the_top_of_rank(k: bytes, nodes: list[NodeId], n: int) -> None:
    ranked = rank(k, nodes)
    assert sorted(ranked) == sorted(nodes)
    assert choose(k, nodes, n) == ranked[:n]
    assert rank(k, reversed(nodes)) == ranked  # the order nodes are given in does not matter
    assert rank(k, nodes + nodes) == ranked  # duplicates count once


@pytest.mark.parametrize("n", [1, 2, 3])
def test_distribution_is_even(n: int) -> None:
    counts = Counter(nd for k in KEYS for nd in choose(k, NODES, n))
    expected = len(KEYS) * n / len(NODES)
    for nd in NODES:
        assert abs(counts[nd] - expected) < 0.06 * expected, (n, counts)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_removing_a_node_moves_only_its_keys(n: int) -> None:
    gone = NODES[2]
    rest = [nd for nd in NODES if nd != gone]
    moved = 0
    for k in KEYS:
        before, after = choose(k, NODES, n), choose(k, rest, n)
        if gone in before:
            moved += 1
            kept = [nd for nd in before if nd != gone]
            assert after[:-1] == kept and after[-1] not in before  # the next node moved up
        else:
            assert after == before
    assert abs(moved - len(KEYS) * n / len(NODES)) < 0.06 * len(KEYS) * n / len(NODES)


@pytest.mark.parametrize("n", [1, 2])
def test_adding_a_node_takes_its_share_and_nothing_else_moves(n: int) -> None:
    new = node(99)
    taken = 0
    for k in KEYS:
        before, after = choose(k, NODES, n), choose(k, NODES + [new], n)
        if new in after:
            taken += 1
            assert [nd for nd in after if nd != new] == before[:-1]  # it pushed out the n-th
        else:
            assert after == before
    expected = len(KEYS) * n / (len(NODES) + 1)
    assert abs(taken - expected) < 0.08 * expected


def test_edge_cases() -> None:
    assert choose(b"k", [], 2) == [] and rank(b"k", []) == []
    assert choose(b"k", NODES[:1], 3) == NODES[:1]
    assert choose(b"k", NODES, 0) == []
    with pytest.raises(ValueError):
        choose(b"k", NODES, -1)
    with pytest.raises(ValueError):
        rank(b"k", [NodeId(b"short")])
