"""Whole-volume copies (cfs.store.replica, sent by mountd.cluster.replicator.send_copy).

A replica that needs records the writer's log no longer holds gets every row of the
volume as of one sequence number S, then records after S as usual. Two real stores
stand for two nodes, with a change log that keeps 2 records beyond the checkpoint; the
copy goes part by part, with its chunks pushed ahead as the replicator does. After a
copy, the replica's rows equal the writer's, its chunk counts match its block maps, its
counters are right (fsck clean on both), and records after S replay on it.

An interrupted copy (begun, never finished) is marked incomplete: it reports no
records, refuses replayed ones, is skipped by fsck (named, not a problem) and is
replaced by the next full copy. The last tests run the replicator and the peer handler
against each other over real connections on 127.0.0.1: a ``PeerServer`` and a
``PeerPool`` for each node, authenticated with a cluster secret, as the daemon runs
them; the very last check the copy's mark in ``ReplState`` and the daemon's
``--changelog-retain``.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
import trio

from cfs.check import check
from cfs.codec import ReplState, VolumeRecord, decode_block
from cfs.errors import CfsError, CorruptRecord, LogTrimmed, ReplicationError, StaleEpoch
from cfs.repl import wire
from cfs.repl.wire import Error, Reply, Request
from cfs.store import NodeRecords, StoreConfig, Table, catalog, changelog, chunks, replica
from cfs.types import NodeId, Slot, VolumeId
from cfs.fs import SetAttr
from mountd.cluster import handler as handler_module
from mountd.cluster import replicator
from mountd.cluster.handler import PeerHandler
from mountd.cluster.links import PeerError, PeerPool, PeerServer
from mountd.cluster.progress import TransferKind, Transfers
from mountd.cluster.replicator import VolumeReplicator, send_copy
from mountd.main import add_arguments, config_from

from test_replica import Node, assert_same, make_replicated, nodes, ship, volume_rows, workload  # noqa: F401 (nodes: a fixture)
from unit_support import BLOCK_SIZE, Vol, assert_chunks_consistent, chunk_refs, rows

RETAIN = 2
COPY_ID = 0xC0FFEE


def busy(vol: Vol, rounds: int = 12) -> None:
    """Many operations, so that a log of 2 records forgets most of them."""
    for i in range(rounds):
        ino = vol.create(b"busy%d" % i, bytes([i]) * (3000 + 500 * i))
        if i % 3 == 0:
            vol.fs.unlink(vol.root, b"busy%d" % i)
            vol.fs.forget(ino, 1)


def trim(node: Node, slot: Slot) -> int:
    """Every replica acknowledged everything: from now on the writer keeps only RETAIN records."""
    node.store.config = StoreConfig(changelog_retain=RETAIN)
    head = node.applied(slot)
    with node.store.op() as op:
        replica.acknowledge(op, slot, head, RETAIN)
    return head


def copy_whole(src: Node, slot: Slot, dst: Node, dst_record, epoch: int = 1, *, page: int = 5,
               parts: int | None = None) -> int:
    """Copy the volume part by part as ``send_copy`` does; stop after ``parts`` parts
    (an interrupted copy) if given. Returns S."""
    src.store.commit()
    with src.store.reading() as view:
        seq, next_local = replica.copy_origin(view, slot)
        rows_ = list(replica.copy_rows(view, slot))
        pages = [rows_[i:i + page] for i in range(0, len(rows_), page)]
        for n, part in enumerate(pages):
            with dst.store.op() as op:   # the chunks ahead of their rows
                for table, _key, value in part:
                    cid = decode_block(value)[0] if table == Table.BLOCKS else None
                    if cid is not None and chunks.has_bytes(view, cid):  # type: ignore[arg-type]
                        chunks.stage(op, cid, chunks.get(view, cid), time.time_ns())
            with dst.store.op() as op:
                if n == 0:
                    replica.begin_copy(op, dst_record, epoch, COPY_ID, seq, time.time_ns())
                replica.add_copy_rows(op, dst_record, epoch, COPY_ID, seq, part)
                if n == len(pages) - 1:
                    replica.finish_copy(op, dst_record, epoch, COPY_ID, seq, next_local)
            if parts is not None and n + 1 == parts:
                break
    return seq


def sweep(node: Node) -> None:
    with node.store.op() as op:
        chunks.sweep_staged(op, time.time_ns() + 1)


def test_a_new_replica_is_copied_whole_when_the_log_was_trimmed(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    busy(vol)
    head = trim(a, vol.slot)
    with pytest.raises(LogTrimmed):
        ship(a, vol.slot, b, brec)
    assert copy_whole(a, vol.slot, b, brec) == head
    assert_same(a, vol.slot, b, brec.slot)
    assert rows(b.store, Table.REMOTE) == [] and rows(b.store, Table.STAGED) == []
    assert_chunks_consistent(b.store)
    with b.store.op(adds_data=False) as op:
        assert not replica.incomplete(op, brec.slot)
        assert changelog.load_state(op, brec.slot).checkpoint_seq == head
        assert replica.records_after(op, brec.slot, head, 1 << 20) == []
        with pytest.raises(LogTrimmed):   # the replica's log starts after S
            replica.records_after(op, brec.slot, head - 1, 1 << 20)
    # shipping goes on from S
    vol.create(b"after-copy", b"A" * 9000)
    vol.fs.unlink(vol.root, b"busy1")
    assert ship(a, vol.slot, b, brec) == a.applied(vol.slot) - head > 0
    assert_same(a, vol.slot, b, brec.slot)


def test_a_stale_replica_is_replaced_whole(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    vol.create(b"doomed", b"D" * 6000)          # b will hold it; a deletes it meanwhile
    ship(a, vol.slot, b, brec)
    # b's other volume shares a chunk with the copied one: counts are per node
    other = Vol(b.store, b.fs, next(r for r in b.fs.volumes() if r.name == "other"))
    other.create(b"shared", b"S" * 4096)
    vol.create(b"shared-too", b"S" * 4096)
    doomed = vol.find(vol.root, b"doomed")
    vol.fs.unlink(vol.root, b"doomed")
    vol.fs.forget(doomed, 1)
    busy(vol)
    head = trim(a, vol.slot)
    with pytest.raises(LogTrimmed):
        ship(a, vol.slot, b, brec)
    assert copy_whole(a, vol.slot, b, brec, page=3) == head
    assert volume_rows(a.store, vol.slot) == volume_rows(b.store, brec.slot)
    sweep(b)   # chunks only the old copy named were kept, staged, in case the copy named them
    assert_same(a, vol.slot, b, brec.slot)
    assert_chunks_consistent(b.store)
    with a.store.op(adds_data=False) as op:
        shared = next(decode_block(v)[0] for _k, v in op.range(Table.BLOCKS, *catalog.slot_range(vol.slot))
                      if chunks.get(op, decode_block(v)[0]) == b"S" * 4096)
    assert chunk_refs(b.store)[shared] == 2
    with b.store.op(adds_data=False) as op:
        assert changelog.load_state(op, brec.slot).used_bytes == changelog.count_used(op, brec.slot)
    vol.create(b"later", b"L" * 100)
    assert ship(a, vol.slot, b, brec) == a.applied(vol.slot) - head > 0
    assert_same(a, vol.slot, b, brec.slot)


def test_an_interrupted_copy_is_incomplete_until_a_full_copy(nodes, tmp_path: Path) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    ship(a, vol.slot, b, brec)                  # b held a complete, older copy
    busy(vol)
    trim(a, vol.slot)
    copy_whole(a, vol.slot, b, brec, page=3, parts=2)
    b.store.close()                             # the node stops (what it committed stays)
    b.__init__(tmp_path / "b")
    with b.store.op(adds_data=False) as op:
        assert replica.incomplete(op, brec.slot)
        assert replica.applied_seq(op, brec.slot) == 0
        with pytest.raises(ReplicationError):   # never a source
            replica.copy_origin(op, brec.slot)
    head = a.applied(vol.slot)
    with a.store.op(adds_data=False) as aop:
        _seq, raw = replica.records_after(aop, vol.slot, head - 1, 1 << 20)[0]
    with pytest.raises(LogTrimmed, match="incomplete"):
        with b.store.op() as op:
            replica.apply(op, brec, 1, 1, raw, RETAIN)
    with pytest.raises(ReplicationError):       # a part of another copy
        with b.store.op() as op:
            replica.add_copy_rows(op, brec, 1, COPY_ID + 1, head, [])
    report = check(b.store)
    assert report.clean, report.lines()
    assert report.incomplete_copies == ["vol"]
    assert any("vol: incomplete copy" in line for line in report.lines())
    copy_whole(a, vol.slot, b, brec)
    sweep(b)
    assert_same(a, vol.slot, b, brec.slot)
    assert check(b.store).incomplete_copies == []
    assert_chunks_consistent(b.store)


def test_a_volume_that_gains_replicas_later_is_copied_whole_then_shipped(nodes) -> None:
    """A volume created without replicas kept no change log: its first replica starts
    from a whole copy, and records after the copy replay as usual."""
    a, b = nodes
    rec = a.fs.create_volume("vol", block_size=BLOCK_SIZE)
    vol = Vol(a.store, a.fs, rec)
    workload(vol)
    assert rows(a.store, Table.CHANGELOG) == []
    with a.store.op() as op:                    # a replica is added
        replica.set_replicated(op, rec.slot, True)
        replica.admit_epoch(op, rec, 1)
    with b.store.op() as op:
        brec = catalog.create(op, "vol", BLOCK_SIZE, {}, volume_id=rec.volume_id, created_ns=rec.created_ns)
    vol.create(b"first-kept", b"K" * 5000)      # kept from now on, but the log starts here
    with pytest.raises(LogTrimmed):
        ship(a, vol.slot, b, brec)
    head = a.applied(vol.slot)
    assert copy_whole(a, vol.slot, b, brec, page=3) == head
    assert_same(a, vol.slot, b, brec.slot)
    assert_chunks_consistent(b.store)
    vol.fs.unlink(vol.root, b"first-kept")
    vol.create(b"after-copy", b"A" * 9000)
    assert ship(a, vol.slot, b, brec) == a.applied(vol.slot) - head > 0
    assert_same(a, vol.slot, b, brec.slot)


def test_copy_parts_carry_the_fencing_epoch(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    vol.create(b"f", b"x")
    with b.store.op() as op:
        replica.admit_epoch(op, brec, 3)
    before = volume_rows(b.store, brec.slot)
    with pytest.raises(StaleEpoch):
        copy_whole(a, vol.slot, b, brec, epoch=2)
    assert volume_rows(b.store, brec.slot) == before
    assert copy_whole(a, vol.slot, b, brec, epoch=3) == a.applied(vol.slot)
    assert_same(a, vol.slot, b, brec.slot)


# --- the replicator and the peer handler, over real connections on loopback -------------

CLUSTER = "cfs-test"
REPLICATION_TIMEOUT = 10.0
"""The daemon's default ``--replication-timeout``: real requests over TCP on a shared,
loaded test machine, each committing durably, must not time out by chance."""


class Received:
    """A node's real ``PeerHandler``, behind a record of the requests it was asked.

    Observation, not a stand-in: every request is answered by the handler itself; the
    record says which messages crossed the network to this node (the requests a
    replicator sent it).
    """

    def __init__(self, handler: PeerHandler) -> None:
        self.handler = handler
        self.requests: list[str] = []

    async def __call__(self, peer: NodeId, request: Request) -> Reply:
        self.requests.append(type(request).__name__)
        return await self.handler(peer, request)


@asynccontextmanager
async def peer_network(handlers: dict[NodeId, Received]) -> AsyncIterator[dict[NodeId, PeerPool]]:
    """Every node as the daemon runs it (mountd.cluster.node): a ``PeerServer`` answering
    with its handler, on 127.0.0.1 and a port the kernel picks, and a ``PeerPool`` that
    dials the others' servers, all under one cluster secret. Yields the pools (a
    handler that sends, ``push_copy``, finds its node's pool in the dict it was given
    before the pools existed, as the daemon's handler finds ``ClusterNode.pool``).

    Resource handling: servers, pools and their connections run in one nursery that is
    cancelled on the way out, whether the body returned or raised.
    """
    secret = os.urandom(32)
    addresses: dict[NodeId, str] = {}
    pools: dict[NodeId, PeerPool] = {}
    async with trio.open_nursery() as nursery:
        try:
            for node_id, handler in handlers.items():
                server = PeerServer("127.0.0.1", 0, node_id, secret, CLUSTER, handler)
                listeners = await nursery.start(server.serve)
                host, port = listeners[0].socket.getsockname()[:2]
                addresses[node_id] = f"{host}:{port}"
            for node_id in handlers:
                pools[node_id] = PeerPool(node_id, secret, CLUSTER, addresses.get)
                await nursery.start(pools[node_id].run)
            yield pools
        finally:
            nursery.cancel_scope.cancel()


def handler_for(node: Node, push_copy: Callable[[NodeId, VolumeRecord, int], Awaitable[int]] | None = None,
                transfers: Transfers | None = None) -> Received:
    """The node's real ``PeerHandler`` (recorded): it writes no volume and is never fenced."""
    async def adopt(volume_id: VolumeId) -> VolumeRecord | None:
        with node.store.op(adds_data=False) as op:
            return catalog.by_id(op, volume_id)

    async def release(_volume_id: VolumeId, _epoch: int) -> None:
        return None
    return Received(PeerHandler(NodeRecords(node.store), adopt=adopt, writing_epoch=lambda _v: None,
                                on_fenced=lambda _v, _e: None, release=release, push_copy=push_copy,
                                transfers=transfers))


def test_the_replicator_copies_a_replica_the_log_cannot_serve(nodes, monkeypatch) -> None:
    a, b = nodes
    monkeypatch.setattr(replicator, "COPY_ROW_BYTES", 300)    # many parts
    vol, brec = make_replicated(a, b)
    workload(vol)
    ship(a, vol.slot, b, brec)
    busy(vol)
    trim(a, vol.slot)
    aid, bid = NodeId(a.store.node_id()), NodeId(b.store.node_id())
    b_handler = handler_for(b)

    async def replicate() -> None:
        async with peer_network({aid: handler_for(a), bid: b_handler}) as pools:
            rep = VolumeReplicator(NodeRecords(a.store), pools[aid], vol.record, 1, targets=lambda: [bid],
                                   on_fenced=lambda _e: None, timeout=REPLICATION_TIMEOUT)
            assert rep.lag()[bid][0] == a.applied(vol.slot)  # not asked yet: lacks every record
            await rep.ship_once()
            head = a.applied(vol.slot)
            assert not rep.failing, rep.failing
            assert rep.acked[bid] == head and rep.copies[bid] == head
            assert b_handler.requests.count("VolumeCopy") > 2 and "PutChunks" in b_handler.requests
            links = pools[aid].counters  # the node's metrics: the copy is over, its bytes counted
            assert links.copies == 0 and 0 < links.copied_bytes < links.sent_bytes["out"]
            assert rep.lag() == {bid: (0, 0.0)}
            sweep(b)
            assert_same(a, vol.slot, b, brec.slot)
            assert_chunks_consistent(b.store)
            # then records again, not a copy
            vol.create(b"next", b"n" * 5000)
            b_handler.requests.clear()
            await rep.ship_once()
            assert not rep.failing, rep.failing
            assert "VolumeCopy" not in b_handler.requests and "AppendLog" in b_handler.requests
            assert rep.acked[bid] == a.applied(vol.slot)
            assert links.shipped_bytes >= 5000  # the record, and its chunk
    trio.run(replicate)
    assert_same(a, vol.slot, b, brec.slot)


def test_a_copy_and_a_round_of_records_show_as_transfers_on_both_sides(nodes, monkeypatch) -> None:
    """The sender's entry knows the volume's bytes in use up front; the receiver's knows
    no total; both count the same bytes and rows, and end done. The records of a
    healer's round (``ship_once``) are a transfer of their own, with their total."""
    a, b = nodes
    monkeypatch.setattr(replicator, "COPY_ROW_BYTES", 300)    # many parts
    vol, brec = make_replicated(a, b)
    workload(vol)
    busy(vol)
    trim(a, vol.slot)
    aid, bid = NodeId(a.store.node_id()), NodeId(b.store.node_id())
    sent, received = Transfers(), Transfers()
    seen_running: list[int] = []
    copied: dict[str, int] = {}

    async def replicate() -> None:
        async with peer_network({aid: handler_for(a), bid: handler_for(b, transfers=received)}) as pools:
            rep = VolumeReplicator(NodeRecords(a.store), pools[aid], vol.record, 1, targets=lambda: [bid],
                                   on_fenced=lambda _e: None, timeout=REPLICATION_TIMEOUT,
                                   transfers=sent, kind=TransferKind.HEAL)

            async def watch() -> None:
                while True:
                    seen_running.extend(s.bytes_done for s in received.snapshot())
                    await trio.sleep(0)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await rep.ship_once()
                assert not rep.failing, rep.failing
                with a.store.op(adds_data=False) as op:
                    copied["used"] = changelog.used_bytes(op, vol.slot)
                    copied["rows"] = sum(1 for _row in replica.copy_rows(op, vol.slot))
                copied["head"] = a.applied(vol.slot)
                for i in range(3):                          # then records, not a copy
                    vol.create(b"next%d" % i, bytes([i + 1]) * 5000)
                copied["records"] = a.applied(vol.slot) - copied["head"]
                await rep.ship_once()
                nursery.cancel_scope.cancel()
    trio.run(replicate)
    assert sent.snapshot() == [] and received.snapshot() == []
    [out_copy, out_records] = sent.finished()
    [in_copy] = received.finished()
    assert out_copy.whole and out_copy.state == "done" and out_copy.kind == "heal" and out_copy.peer == bid.hex()
    assert in_copy.whole and in_copy.state == "done" and in_copy.kind == "incoming" and in_copy.peer == aid.hex()
    assert out_copy.bytes_done == in_copy.bytes_done == out_copy.bytes_total == copied["used"] > 0
    assert out_copy.records_done == in_copy.records_done == copied["rows"]
    assert any(0 < done < in_copy.bytes_done for done in seen_running)   # seen while it ran
    assert not out_records.whole and out_records.state == "done"
    assert out_records.records_done == out_records.records_total == copied["records"] >= 3
    assert out_records.bytes_done > 3 * 5000                 # the records and their chunks


def test_a_node_asks_another_to_push_it_a_copy(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    busy(vol)
    trim(a, vol.slot)
    aid, bid = NodeId(a.store.node_id()), NodeId(b.store.node_id())
    pools: dict[NodeId, PeerPool] = {}
    a_handler = handler_for(a, push_copy=lambda peer, record, epoch: send_copy(
        NodeRecords(a.store), pools[aid], record, epoch, peer))
    b_handler = handler_for(b)

    async def catch_up() -> None:
        async with peer_network({aid: a_handler, bid: b_handler}) as started:
            pools.update(started)
            with pytest.raises(PeerError) as trimmed:
                await pools[bid].request(aid, wire.FetchLog(vol.record.volume_id, 2, 0, 1 << 20))
            assert trimmed.value.code == wire.ErrorCode.TRIMMED
            reply = await pools[bid].request(aid, wire.PushCopy(vol.record.volume_id, 2))
            assert reply == wire.LogAck(vol.record.volume_id, a.applied(vol.slot))
    trio.run(catch_up)
    # the copy went from a to b over a's own connection, while b's request waited
    assert a_handler.requests == ["FetchLog", "PushCopy"]
    assert "VolumeCopy" in b_handler.requests and "PutChunks" in b_handler.requests
    assert_same(a, vol.slot, b, brec.slot)
    with a.store.op(adds_data=False) as op:   # the asker's epoch reached the source too
        assert replica.state(op, vol.slot).epoch == 2


def test_an_incomplete_copy_reports_no_copy_and_is_not_a_source(nodes) -> None:
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    busy(vol)
    trim(a, vol.slot)
    copy_whole(a, vol.slot, b, brec, page=3, parts=1)
    handler = handler_for(b)

    async def ask() -> None:
        info = await handler(NodeId(a.store.node_id()), wire.VolumeInfo(brec.volume_id))
        assert info == wire.VolumeInfoReply(brec.volume_id, 1, 0, False)
    trio.run(ask)


def test_the_replication_state_records_a_copy_in_progress() -> None:
    plain = ReplState(7, True)
    assert len(plain.encode()) == 10 and ReplState.decode(plain.encode()) == plain   # version 1, as before
    copying = ReplState(7, True, copy_id=5, copy_seq=99)
    assert copying.encode()[0] == 2 and ReplState.decode(copying.encode()) == copying
    for bad in (copying.encode()[:-1], b"\x02" + copying.encode()[1:10] + bytes(16)):
        with pytest.raises(CorruptRecord):
            ReplState.decode(bad)


def test_the_daemon_takes_a_change_log_retention() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from(parser.parse_args(["--data-dir", "/nonexistent"])).store.changelog_retain == 10_000
    args = parser.parse_args(["--data-dir", "/nonexistent", "--changelog-retain", "5"])
    assert config_from(args).store.changelog_retain == 5
    with pytest.raises(CfsError, match="at least 1"):
        config_from(parser.parse_args(["--data-dir", "/nonexistent", "--changelog-retain", "0"]))


def test_a_record_too_large_for_a_frame_travels_as_a_copy(nodes, monkeypatch) -> None:
    """An operation whose record would not fit a frame (a truncate of a file of some
    100,000 blocks) is shipped as a whole-volume copy; a fetch of it is answered TRIMMED."""
    a, b = nodes
    vol, brec = make_replicated(a, b)
    workload(vol)
    ship(a, vol.slot, b, brec)
    big = vol.create(b"big", b"z" * (40 * BLOCK_SIZE))
    vol.fs.setattr(big, SetAttr(size=0))                       # one record naming 40 block rows
    with a.store.op(adds_data=False) as op:
        pending = replica.records_after(op, vol.slot, b.applied(brec.slot), 1 << 30)
    largest, big_seq = max((len(raw), seq) for seq, raw in pending)
    monkeypatch.setattr(replicator, "MAX_RECORD_BYTES", largest - 1)
    monkeypatch.setattr(handler_module, "MAX_RECORD_BYTES", largest - 1)
    aid, bid = NodeId(a.store.node_id()), NodeId(b.store.node_id())
    b_handler = handler_for(b)

    async def replicate() -> None:
        async with peer_network({aid: handler_for(a), bid: b_handler}) as pools:
            rep = VolumeReplicator(NodeRecords(a.store), pools[aid], vol.record, 1, targets=lambda: [bid],
                                   on_fenced=lambda _e: None, timeout=REPLICATION_TIMEOUT)
            await rep.ship_once()
            assert not rep.failing, rep.failing
            assert "VolumeCopy" in b_handler.requests and rep.acked[bid] == a.applied(vol.slot)
    trio.run(replicate)
    sweep(b)
    assert_same(a, vol.slot, b, brec.slot)
    fetch = handler_for(a)
    reply = trio.run(fetch, NodeId(b.store.node_id()), wire.FetchLog(vol.record.volume_id, 1, 0, 1 << 30))
    assert isinstance(reply, wire.LogRecords) and reply.records[-1][0] == big_seq - 1  # stops before it
    reply = trio.run(fetch, NodeId(b.store.node_id()), wire.FetchLog(vol.record.volume_id, 1, big_seq - 1, 1 << 30))
    assert isinstance(reply, Error) and reply.code == wire.ErrorCode.TRIMMED
