"""The FUSE loop's wait for the next request (cfs.fuse.session), on a real pipe."""

from __future__ import annotations

import os

import pytest
import trio
import trio.testing

from cfs.fuse import session
from cfs.fuse.session import CHECKPOINT_EVERY, _SpinningWait


@pytest.fixture
def pipe():
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    yield read_end, write_end
    os.close(read_end)
    os.close(write_end)


def _scheduler_passes(fn) -> int:
    """How many times ``fn`` (an async function, run in a task of its own) yielded to trio's
    scheduler: the task's steps after its first."""

    class StepCounter(trio.abc.Instrument):
        def __init__(self) -> None:
            self.task: trio.lowlevel.Task | None = None
            self.steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task is self.task:
                self.steps += 1

    counter = StepCounter()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async def measured() -> None:
                await fn()

            nursery.start_soon(measured)
            counter.task = next(t for t in nursery.child_tasks)

    trio.run(main, instruments=[counter])
    return counter.steps - 1


def test_a_waiting_request_is_taken_without_sleeping(pipe) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x")
    wait = _SpinningWait(spin_us=50)

    async def take_some() -> None:
        for _ in range(CHECKPOINT_EVERY - 1):
            await wait(read_end)

    assert _scheduler_passes(take_some) == 0


def test_every_nth_request_still_lets_other_tasks_run(pipe) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x")
    wait = _SpinningWait(spin_us=50)

    async def take_many() -> None:
        for _ in range(3 * CHECKPOINT_EVERY):
            await wait(read_end)

    assert _scheduler_passes(take_many) >= 3


def test_without_a_request_it_sleeps_in_trio_until_one_comes(pipe) -> None:
    read_end, write_end = pipe
    wait = _SpinningWait(spin_us=50)
    woke_at: list[float] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            async def waiter() -> None:
                await wait(read_end)
                woke_at.append(trio.current_time())

            nursery.start_soon(waiter)
            await trio.sleep(0.05)  # far longer than the spin: the waiter must be asleep in trio
            assert not woke_at
            sent_at = trio.current_time()
            os.write(write_end, b"x")
        assert woke_at and woke_at[0] >= sent_at

    trio.run(main)


def test_spin_zero_always_goes_through_trio(pipe) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x")
    wait = _SpinningWait(spin_us=0)

    async def take_some() -> None:
        for _ in range(4):
            await wait(read_end)

    assert _scheduler_passes(take_some) >= 4


def test_a_hung_up_descriptor_is_returned_to_the_reader() -> None:
    """An unmount makes /dev/fuse report a hang-up: the wait must return, so that pyfuse3's
    read sees the end of the session instead of the loop waiting forever."""
    read_end, write_end = os.pipe()
    os.close(write_end)
    wait = _SpinningWait(spin_us=50)

    async def main() -> None:
        with trio.fail_after(5):
            await wait(read_end)

    try:
        trio.run(main)
    finally:
        os.close(read_end)


def test_negative_spin_is_refused() -> None:
    with pytest.raises(ValueError):
        trio.run(session.run, 1, -1)
