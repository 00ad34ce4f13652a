"""``-o durability=``: the option (cfs.durability), where it is kept and shown (the node
service, the Docker plugin, CSI's parameters), and what fsync answers under each mode
(the replicator's wait and the writer's verdict), without a network: the replicas'
acknowledgements are set by hand, and time is trio's MockClock.

What happens with real replicas killed (-9) or frozen (SIGSTOP) is in
tests/cluster/test_durability.py.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from cfs.coord.api import Lease, VolumeSpec
from cfs.durability import Durability, durability_of, parse_durability
from cfs.errors import NotReplicated, UserError, VolumeLost
from cfs.store import NodeRecords, Store
from cfs.types import NodeId, VolumeId
from mountd.cluster.replicator import VolumeReplicator
from mountd.cluster.writer import VolumeWriter, WriterContext, WriterState
from mountd.plugin import VolumeDriver
from mountd.service import NodeService

from test_plugin import call, run_plugin
from unit_support import Vol

TIMEOUT = 10.0
PEER = NodeId(b"p" * 16)


# --- the option -------------------------------------------------------------------------

@pytest.mark.parametrize("raw, mode", [
    ("available", Durability.AVAILABLE), ("strict", Durability.STRICT), (" Strict ", Durability.STRICT),
    ("STRICT", Durability.STRICT),
])
def test_durability_values(raw: str, mode: Durability) -> None:
    assert parse_durability(raw) is mode


@pytest.mark.parametrize("raw", ["", "yes", "1", "min_size=2", "strict,available", 2, None])
def test_other_durability_values_are_refused_naming_the_modes(raw: Any) -> None:
    with pytest.raises(UserError, match=r"is not a durability mode: use available or strict \(default available\)"):
        parse_durability(raw)


def test_a_volume_without_the_option_is_available() -> None:
    assert durability_of({}) is Durability.AVAILABLE
    assert durability_of({"size": "0"}) is Durability.AVAILABLE
    assert durability_of({"durability": "strict"}) is Durability.STRICT


# --- kept with the volume, shown, compared --------------------------------------------------

def test_the_node_keeps_validates_and_shows_it(store: Store, tmp_path: Path) -> None:
    """In the catalog and the local record with the other options, by its mode's name;
    inspect, info and ls show it, ``available`` when not given; a bad value creates nothing."""
    async def check(_driver: VolumeDriver, service: NodeService) -> None:
        made = await service.volume_create("safe", {"durability": " Strict "})
        assert made["durability"] == "strict" and made["options"] == {"durability": "strict"}
        spec = await service.cluster.spec("safe")
        assert spec is not None and spec.options == {"durability": "strict"}
        assert (await service.volume_inspect("safe"))["durability"] == "strict"
        assert (await service.volume_info("safe"))["durability"] == "strict"
        await service.volume_create("plain")
        assert (await service.volume_inspect("plain"))["durability"] == "available"
        assert {v["name"]: v["durability"] for v in await service.volume_ls()} == \
            {"safe": "strict", "plain": "available"}
        with pytest.raises(UserError, match="durability='sometimes' is not a durability mode"):
            await service.volume_create("bad", {"durability": "sometimes"})
        assert await service.cluster.spec("bad") is None and service.records.find("bad") is None
        clone = await service.volume_create("copy", {"from": "safe"})  # a clone takes its own
        assert clone["durability"] == "available"
        strict_clone = await service.volume_create("copy2", {"from": "plain", "durability": "strict"})
        assert strict_clone["durability"] == "strict"

    run_plugin(store, tmp_path, check)


def test_the_docker_plugin_compares_it_by_meaning(store: Store, tmp_path: Path) -> None:
    async def check(driver: VolumeDriver, service: NodeService) -> None:
        create = "/VolumeDriver.Create"
        assert await call(driver, create, {"Name": "v", "Opts": {"durability": "strict"}}) == (200, {"Err": ""})
        assert await call(driver, create, {"Name": "v", "Opts": {"durability": "STRICT"}}) == (200, {"Err": ""})
        assert await call(driver, create, {"Name": "v", "Opts": {"durability": "available"}}) == \
            (500, {"Err": "volume 'v' already exists with other options: durability=available (it has strict)"})
        assert await call(driver, create, {"Name": "w"}) == (200, {"Err": ""})
        assert await call(driver, create, {"Name": "w", "Opts": {"durability": "available"}}) == (200, {"Err": ""})
        status, reply = await call(driver, create, {"Name": "x", "Opts": {"durability": "never"}})
        assert status == 500 and "is not a durability mode" in reply["Err"]
        assert (await service.volume_info("v"))["durability"] == "strict"

    run_plugin(store, tmp_path, check)


# --- what fsync waits for, and answers ------------------------------------------------------

def replicator(vol: Vol, *, targets: list[NodeId], strict: bool, wanted: int = 1) -> VolumeReplicator:
    """A writer's replicator for ``vol`` whose shipping task is not running: acknowledgements
    and failures are set by the test."""
    return VolumeReplicator(NodeRecords(vol.store), None, vol.record, 1, targets=lambda: targets,  # type: ignore[arg-type]
                            on_fenced=lambda _epoch: None, timeout=TIMEOUT, wanted=wanted, strict=strict)


def run(body: Any) -> None:
    trio.run(body, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.mark.replicated
@pytest.mark.parametrize("strict", [False, True])
def test_acknowledged_by_every_replica_is_replicated(vol: Vol, strict: bool) -> None:
    rep = replicator(vol, targets=[PEER], strict=strict)
    rep.acked[PEER] = rep.head()

    async def main() -> None:
        assert await rep.wait_replicated()
        assert trio.current_time() == 0 and rep.degraded is None
    run(main)


@pytest.mark.replicated
@pytest.mark.parametrize("strict", [False, True])
def test_a_silent_replica_degrades_the_volume_after_the_timeout(vol: Vol, strict: bool) -> None:
    rep = replicator(vol, targets=[PEER], strict=strict)

    async def main() -> None:
        assert not await rep.wait_replicated()
        assert trio.current_time() == TIMEOUT
        assert rep.degraded == f"replicas {PEER.hex()[:8]} did not acknowledge within {TIMEOUT:g} s"
    run(main)


@pytest.mark.replicated
def test_a_replica_known_to_fail_is_waited_for_only_when_strict(vol: Vol) -> None:
    """available: not waited for again (a lost node must not cost every fsync the timeout);
    strict: it has the timeout to answer, and one that comes back in time is enough."""
    async def main() -> None:
        available = replicator(vol, targets=[PEER], strict=False)
        available.failing[PEER] = "connection refused"
        assert not await available.wait_replicated()
        assert trio.current_time() == 0 and available.degraded

        strict = replicator(vol, targets=[PEER], strict=True)
        strict.failing[PEER] = "connection refused"
        head = strict.head()

        async def comes_back() -> None:
            await trio.sleep(TIMEOUT / 2)
            strict.acked[PEER] = head
            strict._signal_progress()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(comes_back)
            assert await strict.wait_replicated()
        assert trio.current_time() == TIMEOUT / 2  # when it answered
    run(main)


@pytest.mark.replicated
@pytest.mark.parametrize("strict", [False, True])
def test_too_few_live_nodes_is_degraded_at_once(vol: Vol, strict: bool) -> None:
    """replicas=3 with one other live node: what it acknowledged is not enough."""
    rep = replicator(vol, targets=[PEER], strict=strict, wanted=2)
    rep.acked[PEER] = rep.head()

    async def main() -> None:
        assert not await rep.wait_replicated()
        assert trio.current_time() == 0
        assert rep.degraded == "1 of the 2 other nodes it needs are live"
        alone = replicator(vol, targets=[], strict=strict, wanted=1)
        assert not await alone.wait_replicated()
        assert alone.degraded == "0 of the 1 other nodes it needs are live"
    run(main)


class Session:
    """The coordinator session of a writer whose lease is never lost."""

    async def lease_lost(self, _lease: Lease) -> bool:
        return False


def writer(vol: Vol, durability: str | None) -> VolumeWriter:
    options = {} if durability is None else {"durability": durability}
    spec = VolumeSpec(VolumeId(vol.record.volume_id), vol.record.block_size, 2, options, 0)
    ctx = WriterContext(NodeRecords(vol.store), vol.fs, None, None, None, None,  # type: ignore[arg-type]
                        clustered=True, replication_timeout=TIMEOUT)
    made = VolumeWriter(ctx, Session(), vol.record, spec, Lease(vol.record.name, NodeId(b"w" * 16), 1))  # type: ignore[arg-type]
    made.state = WriterState.WRITING
    made.replicator = replicator(vol, targets=[PEER], strict=made.durability is Durability.STRICT)
    return made


@pytest.mark.replicated
@pytest.mark.parametrize("durability", [None, "available"])
def test_an_available_volume_fsync_succeeds_degraded(vol: Vol, durability: str | None) -> None:
    made = writer(vol, durability)

    async def main() -> None:
        await made.replicated()
        assert trio.current_time() == TIMEOUT
    run(main)
    assert made.replicator is not None and made.replicator.degraded


@pytest.mark.replicated
def test_a_strict_volume_fsync_fails_with_eio_and_succeeds_once_acknowledged(vol: Vol) -> None:
    made = writer(vol, "strict")
    assert made.replicator is not None

    async def main() -> None:
        with pytest.raises(NotReplicated) as refused:
            await made.replicated()
        assert refused.value.errno == errno.EIO
        assert "durability=strict" in str(refused.value) and "did not acknowledge" in str(refused.value)
        assert made.replicator is not None
        made.replicator.acked[PEER] = made.replicator.head()
        await made.replicated()
    run(main)


@pytest.mark.replicated
def test_a_fenced_strict_writer_says_lost_not_unreplicated(vol: Vol) -> None:
    made = writer(vol, "strict")
    made.fenced_by = 2

    async def main() -> None:
        with pytest.raises(VolumeLost):
            await made.replicated()
    run(main)
