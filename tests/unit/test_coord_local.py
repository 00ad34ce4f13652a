"""The embedded coordinator (``cfs.coord.local``): the shared contract, plus what a file adds:
state and epochs that survive a restart, one process and one node at a time, and a
damaged state file reported, not guessed around."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cfs.coord import LocalCoordinator, NodeState
from cfs.coord.local import STATE_FILE
from cfs.errors import CoordError
from tests.coord_contract import CoordContract, NewCoord, node_info, volume_spec


class TestLocalContract(CoordContract):
    @pytest.fixture
    def new_coord(self, tmp_path: Path) -> Iterator[NewCoord]:
        yield lambda: LocalCoordinator(tmp_path / "coord")


def test_state_and_epochs_persist_across_reopen(tmp_path: Path) -> None:
    directory = tmp_path / "coord"
    node = node_info()
    spec = volume_spec()

    async def first_run() -> int:
        async with LocalCoordinator(directory) as coord:
            await coord.create_volume("vol", spec)
            session = await coord.register(node)
            lease = await session.acquire("vol")
            return lease.epoch  # no unregister: the process "dies" holding the lease

    async def second_run(first_epoch: int) -> None:
        async with LocalCoordinator(directory) as coord:
            assert await coord.get_volume("vol") == spec
            (status,) = await coord.nodes()
            assert status.node_id == node.node_id and status.state is NodeState.DOWN
            holder = await coord.holder("vol")
            assert holder is not None and holder.lease.epoch == first_epoch and not holder.alive
            async with coord.session(node) as session:
                lease = await session.acquire("vol")  # the dead run's lease: no takeover needed
                assert lease.epoch == first_epoch + 1
                await session.release(lease)
                assert (await session.acquire("vol")).epoch == first_epoch + 2

    epoch = trio.run(first_run)
    assert epoch == 1
    trio.run(second_run, epoch)
    assert not list(directory.glob("*.tmp"))


def test_one_process_per_directory(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCoordinator(tmp_path):
            with pytest.raises(CoordError, match="in use"):
                LocalCoordinator(tmp_path)
        async with LocalCoordinator(tmp_path):
            pass  # free again once closed
    trio.run(main)


def test_one_node_at_a_time(tmp_path: Path) -> None:
    async def main() -> None:
        async with LocalCoordinator(tmp_path) as coord:
            async with coord.session(node_info()) as first:
                with pytest.raises(CoordError, match=first.node.node_id.hex()):
                    await coord.register(node_info())
            async with coord.session(node_info()):
                assert [s.state for s in await coord.nodes()].count(NodeState.UP) == 1
    trio.run(main)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"version": 2}',
                                     b'{"version": 1, "nodes": {}, "volumes": {"v": {}}, "epochs": {}, "holders": {}}',
                                     b'{"version": 1, "nodes": {}, "volumes": {}, "epochs": {"v": -1}, "holders": {}}'])
def test_damaged_state_file_is_reported(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    with pytest.raises(CoordError, match="damaged"):
        LocalCoordinator(tmp_path)
    with pytest.raises(CoordError, match="damaged"):  # not "in use": the failed open let go of the lock
        LocalCoordinator(tmp_path)


def test_failed_write_changes_nothing(tmp_path: Path) -> None:
    """A state file that cannot be replaced fails the call and leaves the state as it was."""
    async def main() -> None:
        async with LocalCoordinator(tmp_path) as coord:
            await coord.create_volume("a", volume_spec())
            os.mkdir(tmp_path / (STATE_FILE + ".tmp"))  # the next write cannot create its temp file
            with pytest.raises(OSError):
                await coord.create_volume("b", volume_spec())
            assert list(await coord.list_volumes()) == ["a"]
            os.rmdir(tmp_path / (STATE_FILE + ".tmp"))
            await coord.create_volume("b", volume_spec())
        on_disk = json.loads((tmp_path / STATE_FILE).read_bytes())
        assert sorted(on_disk["volumes"]) == ["a", "b"]
    trio.run(main)

