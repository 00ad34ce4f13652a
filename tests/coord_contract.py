"""What every ``cfs.coord.api.Coordinator`` must do, as tests shared by the implementations.

A test module subclasses ``CoordContract`` and provides the fixture ``new_coord``: a
function returning a new, unused coordinator on the implementation under test. The
tests here use one node and one coordinator, which both implementations serve; those
needing several nodes live with the etcd tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

import pytest
import trio

from cfs.coord import Coordinator, Lease, NodeId, NodeInfo, NodeState, VolumeSpec
from cfs.errors import (
    AttachmentMismatch,
    InvalidName,
    NodeNotFound,
    RegistrationLost,
    VolumeBusy,
    VolumeExists,
    VolumeNotFound,
)
from cfs.types import VolumeId

NewCoord = Callable[[], Coordinator]


def node_info(address: str = "127.0.0.1:7101", **kw: object) -> NodeInfo:
    return NodeInfo(node_id=NodeId(os.urandom(16)), address=address, **kw)  # type: ignore[arg-type]


def volume_spec(**kw: object) -> VolumeSpec:
    fields: dict[str, object] = {"volume_id": VolumeId(os.urandom(16)), "block_size": 4096, "replicas": 2,
                                 "options": {"size": "1G"}, "created_ns": time.time_ns()}
    fields.update(kw)
    return VolumeSpec(**fields)  # type: ignore[arg-type]


def run(new_coord: NewCoord, body: Callable[[Coordinator], Awaitable[None]]) -> None:
    async def main() -> None:
        async with new_coord() as coord:
            with trio.fail_after(60):
                await body(coord)
    trio.run(main)


class CoordContract:
    @pytest.fixture
    def new_coord(self) -> NewCoord:
        raise NotImplementedError

    def test_registered_node_is_up_then_down(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            node = node_info(capacity=1000, chunks=3, labels={"zone": "a"})
            before = time.time_ns()
            async with coord.session(node) as session:
                (status,) = [s for s in await coord.nodes() if s.node_id == node.node_id]
                assert status.state is NodeState.UP and status.down_since_ns is None
                assert (status.address, status.capacity, status.chunks) == (node.address, 1000, 3)
                assert status.labels == {"zone": "a"}
                await session.update_stats(capacity=2000, chunks=7)
                (status,) = [s for s in await coord.nodes() if s.node_id == node.node_id]
                assert (status.capacity, status.chunks) == (2000, 7)
                await coord.set_draining(node.node_id, True)
                assert [s.state for s in await coord.nodes() if s.node_id == node.node_id] == [NodeState.DRAINING]
                await coord.set_draining(node.node_id, False)
                assert [s.state for s in await coord.nodes() if s.node_id == node.node_id] == [NodeState.UP]
                with pytest.raises(NodeNotFound):
                    await coord.set_draining(NodeId(os.urandom(16)), True)
            (status,) = [s for s in await coord.nodes() if s.node_id == node.node_id]
            assert status.state is NodeState.DOWN
            assert status.down_since_ns is not None and before <= status.down_since_ns <= time.time_ns()
        run(new_coord, body)

    def test_catalog(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            spec = volume_spec()
            assert await coord.get_volume("v1") is None
            await coord.create_volume("v1", spec)
            with pytest.raises(VolumeExists):
                await coord.create_volume("v1", volume_spec())
            with pytest.raises(InvalidName):
                await coord.create_volume("a/b", volume_spec())
            await coord.create_volume("v2", volume_spec(replicas=1, options={}))
            assert await coord.get_volume("v1") == spec
            assert sorted(await coord.list_volumes()) == ["v1", "v2"]
            assert (await coord.list_volumes())["v1"] == spec
            await coord.delete_volume("v1")
            assert await coord.get_volume("v1") is None
            with pytest.raises(VolumeNotFound):
                await coord.delete_volume("v1")
            assert list(await coord.list_volumes()) == ["v2"]
        run(new_coord, body)

    def test_acquire_release_epochs(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            node = node_info()
            await coord.create_volume("vol", volume_spec())
            async with coord.session(node) as session:
                with pytest.raises(VolumeNotFound):
                    await session.acquire("nope")
                lease = await session.acquire("vol")
                assert lease == Lease("vol", node.node_id, 1)
                assert await session.acquire("vol") == lease  # held already: the same lease
                holder = await coord.holder("vol")
                assert holder is not None and holder.lease == lease and holder.alive
                assert holder.address == node.address
                assert not await session.lease_lost(lease)
                assert await session.release(lease)
                assert not await session.release(lease)
                assert await session.lease_lost(lease)
                assert await coord.holder("vol") is None
                again = await session.acquire("vol")
                assert again.epoch == 2
                assert await session.lease_lost(lease) and not await session.lease_lost(again)
        run(new_coord, body)

    def test_delete_refused_while_held_and_epochs_survive_it(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            await coord.create_volume("vol", volume_spec())
            async with coord.session(node_info()) as session:
                lease = await session.acquire("vol")
                with pytest.raises(VolumeBusy, match=session.node.node_id.hex()):
                    await coord.delete_volume("vol")
                await session.release(lease)
                await coord.delete_volume("vol")
                await coord.create_volume("vol", volume_spec())
                assert (await session.acquire("vol")).epoch == lease.epoch + 1
        run(new_coord, body)

    def test_unregister_releases_leases(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            await coord.create_volume("vol", volume_spec())
            async with coord.session(node_info()) as session:
                lease = await session.acquire("vol")
            assert session.lost.is_set()
            assert await coord.holder("vol") is None
            assert await session.lease_lost(lease)
            with pytest.raises(RegistrationLost):
                await session.acquire("vol")
            async with coord.session(session.node) as again:  # the node comes back
                assert (await again.acquire("vol")).epoch == lease.epoch + 1
        run(new_coord, body)

    def test_wait_lease_lost(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            await coord.create_volume("vol", volume_spec())
            async with coord.session(node_info()) as session:
                lease = await session.acquire("vol")
                with trio.move_on_after(0.3) as idle:
                    await session.wait_lease_lost(lease, interval=0.05)
                assert idle.cancelled_caught  # still held: the wait goes on
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(session.release, lease)
                    with trio.fail_after(5):
                        await session.wait_lease_lost(lease, interval=0.05)
        run(new_coord, body)

    def test_update_volume_replaces_the_spec_read(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            spec = volume_spec(options={"size": "1024"})
            await coord.create_volume("vol", spec)
            bigger = VolumeSpec(spec.volume_id, spec.block_size, spec.replicas, {"size": "2048"}, spec.created_ns)
            assert await coord.update_volume("vol", bigger, expected=spec)
            assert await coord.get_volume("vol") == bigger
            assert await coord.update_volume("vol", bigger, expected=spec)  # already so: done
            other = VolumeSpec(spec.volume_id, spec.block_size, spec.replicas, {"size": "4096"}, spec.created_ns)
            assert not await coord.update_volume("vol", other, expected=spec)  # spec is stale: no change
            assert await coord.get_volume("vol") == bigger
            with pytest.raises(VolumeNotFound):  # another volume's spec never replaces this one
                await coord.update_volume("vol", volume_spec(), expected=bigger)
            with pytest.raises(VolumeNotFound):
                await coord.update_volume("nope", bigger, expected=bigger)
            assert await coord.get_volume("vol") == bigger and await coord.get_volume("nope") is None
        run(new_coord, body)

    def test_attach_detach_and_list(self, new_coord: NewCoord) -> None:
        async def body(coord: Coordinator) -> None:
            await coord.create_volume("vol", volume_spec())
            await coord.create_volume("other", volume_spec())
            async with coord.session(node_info()) as session:
                me = session.node.node_id
                with pytest.raises(VolumeNotFound):
                    await coord.attach("nope", me, read_only=False)
                with pytest.raises(NodeNotFound):
                    await coord.attach("vol", NodeId(os.urandom(16)), read_only=False)
                assert await coord.attachments() == []
                attachment = await coord.attach("vol", me, read_only=False)
                assert (attachment.volume, attachment.node_id, attachment.read_only) == ("vol", me, False)
                assert await coord.attach("vol", me, read_only=False) == attachment  # the same again: as it was
                with pytest.raises(AttachmentMismatch, match="read-write"):
                    await coord.attach("vol", me, read_only=True)
                assert await coord.attachments("vol") == [attachment]
                assert await coord.attachments("other") == []
                with pytest.raises(VolumeBusy, match="attached"):  # a live node may mount it
                    await coord.delete_volume("vol")
                assert await coord.detach("vol", NodeId(os.urandom(16))) == 0
                assert await coord.detach("vol", me) == 1
                assert await coord.detach("vol", me) == 0
                assert await coord.detach("nope") == 0
                reader = await coord.attach("vol", me, read_only=True)
                assert reader.read_only and await coord.attachments() == [reader]
                await coord.attach("other", me, read_only=False)
                assert await coord.detach("vol") == 1
                assert [a.volume for a in await coord.attachments()] == ["other"]
        run(new_coord, body)

    def test_a_down_node_keeps_no_volume_attached(self, new_coord: NewCoord) -> None:
        """Attachments outlive their node's registration (a node restarts and finds them),
        but a node that is down holds nothing back: another node's attach drops its
        attachment, and the volume can be deleted."""
        async def body(coord: Coordinator) -> None:
            await coord.create_volume("vol", volume_spec())
            await coord.create_volume("gone", volume_spec())
            async with coord.session(node_info()) as first:
                old = await coord.attach("vol", first.node.node_id, read_only=False)
                await coord.attach("gone", first.node.node_id, read_only=False)
            assert await coord.attachments("vol") == [old]  # kept while that node is down
            async with coord.session(node_info()) as second:
                new = await coord.attach("vol", second.node.node_id, read_only=True)
                assert await coord.attachments("vol") == [new]
                await coord.delete_volume("gone")
                assert await coord.attachments("gone") == []
                await coord.create_volume("gone", volume_spec())
                assert await coord.attachments("gone") == []  # a new volume of that name starts unattached
        run(new_coord, body)
