"""The stop's deadline (mountd.cluster.stopping), on trio's mock clock."""

from __future__ import annotations

import math

import trio
import trio.testing

from mountd.cluster.stopping import Stopping


def run(fn: object) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))  # type: ignore[arg-type]


def test_a_bounded_scope_has_no_deadline_until_the_stop_starts() -> None:
    async def main() -> None:
        stopping = Stopping()
        with stopping.bounded() as scope:
            assert scope.deadline == math.inf
            await trio.sleep(1000)
        assert not scope.cancelled_caught
    run(main)


def test_the_stop_bounds_scopes_opened_before_and_after_it_starts_by_their_share() -> None:
    async def main() -> None:
        stopping = Stopping()
        ended: dict[str, float] = {}

        async def wait(label: str, share: float) -> None:
            with stopping.bounded(share=share):
                await trio.sleep_forever()
            ended[label] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait, "before", 1.0)
            await trio.sleep(5)
            t0 = trio.current_time()
            stopping.start(10)
            nursery.start_soon(wait, "replicas", 0.6)
            nursery.start_soon(wait, "after", 1.0)
        assert ended == {"before": t0 + 10, "replicas": t0 + 6, "after": t0 + 10}
        assert stopping.left() == 0
    run(main)


def test_now_ends_every_bounded_scope_shielded_ones_too_and_any_opened_later() -> None:
    async def main() -> None:
        stopping = Stopping()
        stopping.request("test")
        stopping.request("ignored")
        assert stopping.why == "test" and stopping.asked.is_set()
        stopping.start(3600)

        async def shielded() -> None:
            with stopping.bounded(shield=True):
                await trio.sleep_forever()

        async def now_later() -> None:
            await trio.sleep(2)
            stopping.now()

        async with trio.open_nursery() as top:
            top.start_soon(now_later)
            async with trio.open_nursery() as inner:
                inner.start_soon(shielded)
                await trio.sleep(1)
                inner.cancel_scope.cancel()  # the shield holds against this, not against now()
        assert trio.current_time() == 2
        with stopping.bounded() as late:
            await trio.sleep(1)
        assert late.cancelled_caught
    run(main)
