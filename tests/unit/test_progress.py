"""The node's transfer progress (mountd.cluster.progress) and its one-line description.

A fake clock drives time: rates over the window, the ETA from what is left, totals not
known (no percent, no ETA), a stalled transfer whose rate falls to 0, idle expiry, and
the context manager that ends a transfer done or failed; and what ``cfs node drain
--wait`` prints from the transfers it is shown.
"""

from __future__ import annotations

import io

import pytest

from cfs.codec import encode_block
from cfs.store import Table
from cfs.types import ChunkId, NodeId
from mountd.cluster.progress import (
    KEEP_FINISHED, WINDOW_SECONDS, Direction, TransferKind, Transfers, copied_bytes,
)
from tools.cli import DrainView
from tools.progress import transfer_line

PEER = NodeId(bytes(range(16)))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transfers(clock: Clock) -> Transfers:
    return Transfers(clock=clock, wall=lambda: 1.7e9)


def test_a_copy_with_a_known_total_shows_percent_rate_and_eta(transfers: Transfers, clock: Clock) -> None:
    t = transfers.start("data", TransferKind.HEAL, Direction.OUT, PEER, whole=True, bytes_total=10_000)
    [state] = transfers.snapshot()
    assert (state.bytes_done, state.percent, state.eta_seconds, state.state) == (0, 0.0, None, "running")
    for _ in range(4):                     # 1000 bytes and 10 rows a second
        clock.now += 1.0
        t.advance(1000, 10)
    [state] = transfers.snapshot()
    assert state.bytes_done == 4000 and state.records_done == 40 and state.records_total is None
    assert state.percent == 40.0
    assert state.bytes_per_second == pytest.approx(1000.0) and state.records_per_second == pytest.approx(10.0)
    assert state.eta_seconds == pytest.approx(6.0)
    assert (state.volume, state.kind, state.direction, state.peer, state.whole) == (
        "data", "heal", "out", PEER.hex(), True)
    assert state.elapsed_seconds == pytest.approx(4.0) and state.started == 1.7e9


def test_the_rate_follows_the_recent_window(transfers: Transfers, clock: Clock) -> None:
    t = transfers.start("data", TransferKind.DRAIN, Direction.OUT, PEER, whole=True, bytes_total=10**9)
    for _ in range(20):                    # fast at first: 10 kB/s for 20 s
        clock.now += 1.0
        t.advance(10_000)
    for _ in range(20):                    # then slow: 1 kB/s
        clock.now += 1.0
        t.advance(1000)
    [state] = transfers.snapshot()
    assert state.bytes_per_second == pytest.approx(1000.0, rel=0.01)   # not the average since the start
    assert state.eta_seconds == pytest.approx((10**9 - 220_000) / 1000.0, rel=0.01)


def test_a_stalled_transfer_has_no_eta(transfers: Transfers, clock: Clock) -> None:
    t = transfers.start("data", TransferKind.HEAL, Direction.OUT, PEER, whole=True, bytes_total=10_000)
    clock.now += 1.0
    t.advance(1000)
    clock.now += WINDOW_SECONDS + 5        # nothing since
    [state] = transfers.snapshot()
    assert state.bytes_per_second == 0.0 and state.eta_seconds is None and state.percent == 10.0


def test_without_totals_there_is_no_percent_nor_eta(transfers: Transfers, clock: Clock) -> None:
    t = transfers.start("data", TransferKind.INCOMING, Direction.IN, PEER, whole=True)
    clock.now += 2.0
    t.advance(4096, 3)
    [state] = transfers.snapshot()
    assert state.bytes_total is None and state.records_total is None
    assert state.percent is None and state.eta_seconds is None
    assert state.bytes_per_second == pytest.approx(2048.0)
    assert "4.0 KiB, 3 rows" in transfer_line(state.to_json())
    assert "ETA unknown" in transfer_line(state.to_json())


def test_records_give_the_eta_when_bytes_have_no_total(transfers: Transfers, clock: Clock) -> None:
    t = transfers.start("data", TransferKind.CATCH_UP, Direction.IN, PEER, whole=False, records_total=100)
    clock.now += 2.0
    t.advance(5000, 20)
    [state] = transfers.snapshot()
    assert state.percent == 20.0 and state.eta_seconds == pytest.approx(8.0)
    assert "20 of 100 records (20%)" in transfer_line(state.to_json())


def test_an_estimated_total_is_replaced_by_the_count_when_done(transfers: Transfers, clock: Clock) -> None:
    with transfers.start("data", TransferKind.REPLICA, Direction.OUT, PEER, whole=True, bytes_total=1000) as t:
        clock.now += 1.0
        t.advance(1500, 7)                  # more than the estimate: percent stays at 100
        assert transfers.snapshot()[0].percent == 100.0
    assert transfers.snapshot() == []
    [done] = transfers.finished()
    assert (done.state, done.bytes_total, done.records_total, done.eta_seconds, done.error) == (
        "done", 1500, 7, 0.0, None)
    assert "done in 1 s" in transfer_line(done.to_json())


def test_an_exception_fails_the_transfer(transfers: Transfers) -> None:
    with pytest.raises(OSError):
        with transfers.start("data", TransferKind.HEAL, Direction.OUT, PEER, whole=False):
            raise OSError("peer went away")
    [failed] = transfers.finished()
    assert failed.state == "failed" and failed.error == "OSError: peer went away"
    assert transfers.snapshot() == []


def test_a_transfer_idle_past_its_limit_is_over(transfers: Transfers, clock: Clock) -> None:
    idle = transfers.start("a", TransferKind.INCOMING, Direction.IN, PEER, whole=True, idle_limit=30)
    busy = transfers.start("b", TransferKind.INCOMING, Direction.IN, PEER, whole=True, idle_limit=30)
    clock.now += 20
    busy.advance(1)
    clock.now += 20                        # idle: 40 s without news; busy: 20 s
    assert [s.volume for s in transfers.snapshot()] == ["b"]
    assert idle.over and transfers.finished()[0].error == "nothing moved for 30 s"
    idle.advance(100)                      # a late part changes nothing that was reported
    idle.finish()
    assert [s.state for s in transfers.finished()] == ["failed"]


def test_only_the_last_ended_transfers_are_kept(transfers: Transfers) -> None:
    for i in range(KEEP_FINISHED + 3):
        transfers.start(f"v{i}", TransferKind.HEAL, Direction.OUT, PEER, whole=False).finish()
    ended = transfers.finished()
    assert len(ended) == KEEP_FINISHED and ended[-1].volume == f"v{KEEP_FINISHED + 2}"
    assert len({s.id for s in ended}) == KEEP_FINISHED


def test_a_copy_counts_the_bytes_in_use_of_its_block_rows() -> None:
    cid = ChunkId(bytes(16))
    rows = [(int(Table.BLOCKS), b"k1", encode_block(cid, 4096)),
            (int(Table.BLOCKS), b"k2", encode_block(cid, 100)),          # 1 unit of 512
            (int(Table.BLOCKS), b"k3", encode_block(None, 0, reserved=8192)),
            (int(Table.INODES), b"k4", b"not a block row")]
    assert copied_bytes(rows) == 4096 + 512 + 8192


def test_a_drain_shows_a_line_per_change_and_each_copy_it_sent_once_ended(transfers: Transfers,
                                                                          clock: Clock) -> None:
    out = io.StringIO()                    # not a terminal: lines, no bar
    view = DrainView(out, since=1.7e9)
    view.show(["data", "logs"], [], [])
    view.show(["data", "logs"], [], [])    # nothing changed: nothing printed
    copy = transfers.start("data", TransferKind.DRAIN, Direction.OUT, PEER, whole=True, bytes_total=4 << 20)
    clock.now += 1.0
    copy.advance(1 << 20, 100)
    view.show(["data", "logs"], [s.to_json() for s in transfers.snapshot()], [])
    assert view.sending
    clock.now += 1.0
    copy.advance(3 << 20, 300)
    copy.finish()
    ended = [s.to_json() for s in transfers.finished()]
    view.show(["logs"], [], ended)
    view.show([], [], ended)               # printed once only
    assert not view.sending
    assert out.getvalue().splitlines() == [
        "drain: 0 of 2 volumes copied elsewhere; waiting for data, logs",
        "drain: 0 of 2 volumes copied elsewhere; waiting for data, logs",
        f"drain:   data  drain → {PEER.hex()[:8]}  1.0 MiB of 4.0 MiB (25%), 100 rows, 1.0 MiB/s, ETA 3 s",
        f"drain:   data  drain → {PEER.hex()[:8]}  4.0 MiB of 4.0 MiB (100%), 400 of 400 rows, done in 2 s",
        "drain: 1 of 2 volumes copied elsewhere; waiting for logs",
        "drain: 2 of 2 volumes copied elsewhere; no volume needs this node any more",
    ]


def test_a_drain_leaves_out_copies_that_ended_before_it_began(transfers: Transfers) -> None:
    transfers.start("data", TransferKind.DRAIN, Direction.OUT, PEER, whole=True).finish()   # at wall 1.7e9
    out = io.StringIO()
    view = DrainView(out, since=1.7e9 + 60)
    view.show(["data"], [], [s.to_json() for s in transfers.finished()])
    assert out.getvalue().splitlines() == ["drain: 0 of 1 volumes copied elsewhere; waiting for data"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_drain_is_a_bar(transfers: Transfers) -> None:
    out = Terminal()
    view = DrainView(out, since=0)
    copy = transfers.start("data", TransferKind.DRAIN, Direction.OUT, PEER, whole=True, bytes_total=4 << 20)
    copy.advance(1 << 20, 100)
    view.show(["data", "logs"], [s.to_json() for s in transfers.snapshot()], [])
    view.show(["logs"], [], [])
    view.finish()
    frames = out.getvalue().split("\r")[1:]
    assert frames[0].startswith("draining     [") and "] 0/2  1.0 MiB sent; waiting for data, logs" in frames[0]
    assert "] 1/2  waiting for logs" in frames[1] and frames[1].endswith("\n")
    assert "drain:" not in out.getvalue()
