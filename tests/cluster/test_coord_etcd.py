"""The etcd coordinator (``cfs.coord.etcd``) against a real etcd: the shared contract, then
what needs several nodes: liveness by TTL, lease conflicts, takeover, racing acquirers,
and an etcd that is gone. Every test uses its own key prefix in the session's etcd;
nodes use a TTL of 2 s (etcd's minimum) so that deaths show quickly. Waits for a state
fail only after ``HANG`` seconds: they assert what happens, not how fast."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from cfs.coord import EtcdCoordinator, NodeState
from cfs.coord.etcd import EtcdSession
from cfs.errors import AttachedElsewhere, EtcdUnavailable, LeaseHeld, RegistrationLost, VolumeExists
from tests.cluster.cluster import stopped
from tests.coord_contract import CoordContract, NewCoord, node_info, volume_spec
from tests.etcd import Etcd

TTL = 2
HANG = 30
"""Seconds after which a wait for a state fails: it bounds a hang, it measures nothing."""


def coordinator_factory(url: str) -> NewCoord:
    prefix = f"/cfs-test/{uuid.uuid4().hex}/"
    return lambda: EtcdCoordinator(url, prefix=prefix, ttl=TTL, stats_interval=0.2,
                                   request_timeout=2.0, retry_deadline=3.0)


class TestEtcdContract(CoordContract):
    @pytest.fixture
    def new_coord(self, etcd: Etcd) -> Iterator[NewCoord]:
        yield coordinator_factory(etcd.url)


Body = Callable[[NewCoord, trio.Nursery], Awaitable[None]]


def run(etcd: Etcd, body: Body, timeout: float = 4 * HANG) -> None:
    new_coord = coordinator_factory(etcd.url)

    async def main() -> None:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                await body(new_coord, nursery)
                nursery.cancel_scope.cancel()
    trio.run(main)


async def start_node(coord: EtcdCoordinator, nursery: trio.Nursery,
                     **kw: object) -> tuple[EtcdSession, trio.CancelScope]:
    """Register a node and keep it alive in a cancel scope; cancelling it is the node dying."""
    session = await coord.register(node_info(**kw))  # type: ignore[arg-type]
    scope = trio.CancelScope()

    async def keepalive(task_status: trio.TaskStatus[None]) -> None:
        with scope:
            await session.run_keepalive(task_status=task_status)
    await nursery.start(keepalive)
    return session, scope


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.1) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(step)


def test_two_nodes_up_then_one_down_after_ttl(etcd: Etcd) -> None:
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        async with new_coord() as ca, new_coord() as cb:
            a, a_scope = await start_node(ca, nursery, address="127.0.0.1:7101")
            b, _ = await start_node(cb, nursery, address="127.0.0.1:7102", capacity=5 << 30)
            states = {s.node_id: s for s in await ca.nodes()}
            assert {n: s.state for n, s in states.items()} == {a.node.node_id: NodeState.UP,
                                                                b.node.node_id: NodeState.UP}
            assert states[b.node.node_id].capacity == 5 << 30
            assert states[a.node.node_id].address == "127.0.0.1:7101"

            # keepalives hold both nodes up past the TTL, at every look, and A's last_seen moves on
            registered = states[a.node.node_id].last_seen_ns
            watch_until = trio.current_time() + 2 * TTL
            while trio.current_time() < watch_until:
                states = {s.node_id: s for s in await cb.nodes()}
                assert [s.state for s in states.values()] == [NodeState.UP, NodeState.UP], states
                await trio.sleep(0.1)
            seen = states[a.node.node_id].last_seen_ns
            assert seen > registered

            a_scope.cancel()  # A dies: no keepalive, no unregister
            died = time.time_ns()

            async def a_down() -> bool:
                return any(s.node_id == a.node.node_id and s.state is NodeState.DOWN for s in await cb.nodes())
            await wait_for(a_down, timeout=HANG)
            states = {s.node_id: s for s in await cb.nodes()}
            since = states[a.node.node_id].down_since_ns
            # down since A's last refresh: the one seen above or a later one, none after it died
            assert since is not None and seen <= since <= died, (seen, since, died)
            assert states[b.node.node_id].state is NodeState.UP
            assert not a.lost.is_set()  # nobody told the dead node: it finds out on its next keepalive
    run(etcd, body)


def test_create_volume_twice_from_two_clients(etcd: Etcd) -> None:
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        async with new_coord() as ca, new_coord() as cb:
            results: list[str] = []

            async def create(coord: EtcdCoordinator) -> None:
                try:
                    await coord.create_volume("vol", volume_spec())
                    results.append("created")
                except VolumeExists:
                    results.append("exists")
            async with trio.open_nursery() as racers:
                for coord in (ca, cb, ca, cb):
                    racers.start_soon(create, coord)
            assert sorted(results) == ["created", "exists", "exists", "exists"]
    run(etcd, body)


def test_lease_held_takeover_and_lease_lost(etcd: Etcd) -> None:
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        async with new_coord() as ca, new_coord() as cb:
            a, _ = await start_node(ca, nursery, address="10.0.0.1:7101")
            b, _ = await start_node(cb, nursery, address="10.0.0.2:7101")
            await ca.create_volume("vol", volume_spec())
            lease_a = await a.acquire("vol")
            with pytest.raises(LeaseHeld) as held:
                await b.acquire("vol")
            assert held.value.node_id == a.node.node_id and held.value.address == "10.0.0.1:7101"
            assert a.node.node_id.hex() in str(held.value) and "10.0.0.1:7101" in str(held.value)
            assert not await a.lease_lost(lease_a)

            lease_b = await b.acquire("vol", takeover=True)
            assert lease_b.epoch == lease_a.epoch + 1 and lease_b.node_id == b.node.node_id
            assert await a.lease_lost(lease_a)
            with trio.fail_after(HANG):
                await a.wait_lease_lost(lease_a, interval=0.05)
            assert not await a.release(lease_a)  # a fenced holder cannot release the new lease
            holder = await ca.holder("vol")
            assert holder is not None and holder.lease == lease_b and holder.alive
            with pytest.raises(LeaseHeld):  # and A is now the one refused
                await a.acquire("vol")
    run(etcd, body)


def test_dead_holder_loses_lease_after_ttl(etcd: Etcd) -> None:
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        async with new_coord() as ca, new_coord() as cb:
            a, a_scope = await start_node(ca, nursery)
            b, _ = await start_node(cb, nursery)
            await ca.create_volume("vol", volume_spec())
            lease_a = await a.acquire("vol")
            a_scope.cancel()  # A dies holding the lease

            async def free() -> bool:
                return await cb.holder("vol") is None
            await wait_for(free, timeout=HANG)
            lease_b = await b.acquire("vol")  # no takeover needed
            assert lease_b.epoch == lease_a.epoch + 1
            assert await a.lease_lost(lease_a)
    run(etcd, body)


def test_restarted_node_takes_its_own_lease_back(etcd: Etcd) -> None:
    """A node restarted within the TTL finds its previous run's lease: dead, taken without takeover,
    while other nodes see that holder as dead too."""
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        async with new_coord() as ca, new_coord() as cb:
            a, a_scope = await start_node(ca, nursery)
            await ca.create_volume("vol", volume_spec())
            old = await a.acquire("vol")
            a_scope.cancel()
            again = await ca.register(a.node)
            nursery.start_soon(again.run_keepalive)
            holder = await cb.holder("vol")
            assert holder is not None and holder.lease == old and not holder.alive
            lease = await again.acquire("vol")
            assert lease.epoch == old.epoch + 1
    run(etcd, body)


def test_registration_revoked_behind_its_back(etcd: Etcd) -> None:
    """The node's etcd lease vanishes (an operator revoked it, or etcd expired it while the node
    was frozen): the next write says so, and the keepalive task sets ``lost``."""
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        async with new_coord() as coord:
            session, _ = await start_node(coord, nursery)
            await coord.create_volume("vol", volume_spec())
            await coord.client.revoke(session.lease_id)
            with pytest.raises(RegistrationLost):
                await session.acquire("vol")
            with trio.fail_after(HANG):
                await session.lost.wait()
            assert [s.state for s in await coord.nodes()] == [NodeState.DOWN]
    run(etcd, body)

def test_racing_acquires_one_winner_and_increasing_epochs(etcd: Etcd) -> None:
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        coords = [new_coord() for _ in range(4)]
        try:
            sessions = [(await start_node(c, nursery))[0] for c in coords]
            await coords[0].create_volume("vol", volume_spec())
            winners, refused = [], []

            async def acquire(session: EtcdSession, takeover: bool, out: list) -> None:
                try:
                    out.append(await session.acquire("vol", takeover=takeover))
                except LeaseHeld as exc:
                    refused.append(exc)
            async with trio.open_nursery() as racers:
                for session in sessions:
                    racers.start_soon(acquire, session, False, winners)
            assert len(winners) == 1 and len(refused) == 3
            assert all(exc.node_id == winners[0].node_id for exc in refused)

            takers: list = []
            async with trio.open_nursery() as racers:
                for session in sessions * 3:
                    racers.start_soon(acquire, session, True, takers)
            # A session that holds the lease already gets it back unchanged; otherwise every
            # take is a new epoch, so no epoch is ever handed to two nodes.
            owner: dict[int, bytes] = {}
            for lease in takers:
                assert owner.setdefault(lease.epoch, lease.node_id) == lease.node_id
            epochs = sorted(owner)
            assert epochs[0] >= winners[0].epoch and len(epochs) > 1
            holder = await coords[0].holder("vol")
            assert holder is not None and holder.lease.epoch == epochs[-1]
            current = [lease for lease in takers if lease.epoch == epochs[-1]]
            for session in sessions:  # only the last taker still holds it
                for lease in takers:
                    if lease.node_id == session.node.node_id:
                        assert await session.lease_lost(lease) == (lease not in current)
        finally:
            for c in coords:
                await c.aclose()
    run(etcd, body)


def test_one_live_node_attached_at_a_time(etcd: Etcd) -> None:
    """A volume attached to a live node cannot be attached to another, read-only or not;
    once that node is down (its registration expired), the next attach moves it."""
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        async with new_coord() as ca, new_coord() as cb:
            a, a_scope = await start_node(ca, nursery)
            b, _ = await start_node(cb, nursery)
            await ca.create_volume("vol", volume_spec())
            held = await ca.attach("vol", a.node.node_id, read_only=False)
            for read_only in (False, True):
                with pytest.raises(AttachedElsewhere, match=a.node.node_id.hex()) as refused:
                    await cb.attach("vol", b.node.node_id, read_only=read_only)
                assert refused.value.node_id == a.node.node_id
            assert await cb.attachments("vol") == [held]
            a_scope.cancel()  # A dies, attached

            async def a_down() -> bool:
                return any(s.node_id == a.node.node_id and s.state is NodeState.DOWN for s in await cb.nodes())
            await wait_for(a_down, timeout=HANG)
            moved = await cb.attach("vol", b.node.node_id, read_only=False)
            assert await ca.attachments("vol") == [moved]
    run(etcd, body)


def test_racing_attaches_one_winner(etcd: Etcd) -> None:
    async def body(new_coord: NewCoord, nursery: trio.Nursery) -> None:
        coords = [new_coord() for _ in range(4)]
        try:
            sessions = [(await start_node(c, nursery))[0] for c in coords]
            await coords[0].create_volume("vol", volume_spec())
            attached, refused = [], []

            async def attach(coord: EtcdCoordinator, session: EtcdSession) -> None:
                try:
                    attached.append(await coord.attach("vol", session.node.node_id, read_only=False))
                except AttachedElsewhere as exc:
                    refused.append(exc)
            async with trio.open_nursery() as racers:
                for coord, session in [*zip(coords, sessions), *zip(coords, sessions)]:
                    racers.start_soon(attach, coord, session)
            # a node that won may attach again (the same attachment back); any other is refused
            assert len({x.node_id for x in attached}) == 1 and len(attached) + len(refused) == 8
            assert all(exc.node_id == attached[0].node_id for exc in refused)
            assert await coords[0].attachments("vol") == [attached[0]]
        finally:
            for c in coords:
                await c.aclose()
    run(etcd, body)


def test_unavailable_etcd_raises_in_bounded_time(etcd_base: Path) -> None:
    server = Etcd(etcd_base)
    try:
        server.start()

        async def main() -> None:
            coord = EtcdCoordinator(server.url, ttl=TTL, request_timeout=1.0, retry_deadline=2.0)
            async with coord, trio.open_nursery() as nursery:
                session, _ = await start_node(coord, nursery)
                await coord.create_volume("vol", volume_spec())
                server.stop()
                for call in (lambda: session.acquire("vol"), coord.nodes, coord.list_volumes,
                             lambda: coord.get_volume("vol"), lambda: coord.create_volume("w", volume_spec())):
                    started = trio.current_time()
                    with pytest.raises(EtcdUnavailable, match=server.url):
                        with trio.fail_after(10):
                            await call()
                    assert trio.current_time() - started < 4
                with trio.fail_after(HANG):  # the node learns it lost its registration
                    await session.lost.wait()
                nursery.cancel_scope.cancel()
        trio.run(main)
    finally:
        server.stop()


def test_frozen_etcd_times_out(etcd_base: Path) -> None:
    """An etcd that accepts connections but never answers (SIGSTOP) is unavailable, not a hang."""
    server = Etcd(etcd_base)
    try:
        server.start()
        assert server.proc is not None

        async def main() -> None:
            async with EtcdCoordinator(server.url, request_timeout=0.5, retry_deadline=1.5) as coord:
                await coord.list_volumes()
                server.proc.send_signal(signal.SIGSTOP)
                try:
                    # a thread of etcd's still running could answer: wait until all stopped
                    await wait_for(lambda: trio.to_thread.run_sync(stopped, server.proc.pid), timeout=HANG)
                    started = trio.current_time()
                    with pytest.raises(EtcdUnavailable, match="no answer"):
                        with trio.fail_after(10):
                            await coord.list_volumes()
                    assert trio.current_time() - started < 3
                finally:
                    server.proc.send_signal(signal.SIGCONT)
                assert await coord.list_volumes() == {}
        trio.run(main)
    finally:
        server.stop()
