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
        trio.run(session.run, session.Workers(1), -1)


# --- spare workers (session.Workers) -------------------------------------------------

def _admitted_in_turn(workers: session.Workers, body) -> None:
    """Run ``body(admit, nursery)`` in trio, where ``admit(name, log)`` starts a task that
    comes to the door and appends its name to ``log`` once let in."""
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            def admit(name: str, log: list[str]) -> None:
                async def worker() -> None:
                    await workers.admit()
                    log.append(name)
                nursery.start_soon(worker)
            await body(admit, nursery)
            nursery.cancel_scope.cancel()

    trio.run(main)


def test_a_single_node_spare_waits_until_a_worker_is_lent() -> None:
    workers = session.Workers(1)
    assert workers.tasks == 1 + session.SPARE_WORKERS

    async def body(admit, nursery) -> None:
        log: list[str] = []
        admit("owner", log)
        await trio.testing.wait_all_tasks_blocked()
        admit("spare", log)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["owner"]                    # the spare is parked at the door
        assert workers.may_lend()
        with workers.lend():
            await trio.testing.wait_all_tasks_blocked()
            assert log == ["owner", "spare"]       # lent: the spare takes requests
        admit("spare again", log)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["owner", "spare"]           # back at the door after the lending: parked

    _admitted_in_turn(workers, body)


def test_the_owner_passes_the_door_and_a_free_lock_without_yielding() -> None:
    async def main() -> None:
        lock = session._UncontendedLock(session.Workers(1))
        for _ in range(3):
            with trio.testing.assert_no_checkpoints():
                await lock.__aenter__()
            await lock.__aexit__(None, None, None)

    trio.run(main)


def test_the_owner_is_always_let_in() -> None:
    workers = session.Workers(1)

    async def body(admit, nursery) -> None:
        async def owner_twice() -> None:
            await workers.admit()
            await workers.admit()
            log.append("owner twice")
        log: list[str] = []
        nursery.start_soon(owner_twice)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["owner twice"]

    _admitted_in_turn(workers, body)


def test_closing_lets_every_parked_worker_in() -> None:
    workers = session.Workers(1)

    async def body(admit, nursery) -> None:
        log: list[str] = []
        admit("owner", log)
        await trio.testing.wait_all_tasks_blocked()
        for name in ("a", "b"):
            admit(name, log)
        await trio.testing.wait_all_tasks_blocked()
        assert log == ["owner"]
        workers.close()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(log) == ["a", "b", "owner"]
        assert not workers.may_lend()

    _admitted_in_turn(workers, body)


def test_one_worker_is_never_lent() -> None:
    workers = session.Workers(1)
    held = [workers.lend() for _ in range(workers.lend_limit)]
    for context in held:
        context.__enter__()
    assert not workers.may_lend()
    with pytest.raises(RuntimeError):
        with workers.lend():
            pass
    for context in held:
        context.__exit__(None, None, None)
    assert workers.may_lend() and workers.lent == 0


def test_a_cluster_lets_every_worker_in() -> None:
    workers = session.Workers(32)
    assert not workers.gated and workers.tasks == 32

    async def body(admit, nursery) -> None:
        log: list[str] = []
        for name in ("a", "b", "c"):
            admit(name, log)
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(log) == ["a", "b", "c"]

    _admitted_in_turn(workers, body)


def test_a_hang_up_ends_the_parking() -> None:
    """An unmount hangs up /dev/fuse: the wait tells the workers, whose spares must then
    come in to see the session end, or pyfuse3's loop would never return."""
    read_end, write_end = os.pipe()
    os.close(write_end)
    hung_up: list[bool] = []
    for spin_us in (50, 0):
        wait = _SpinningWait(spin_us=spin_us, on_hang_up=lambda: hung_up.append(True))

        async def main() -> None:
            with trio.fail_after(5):
                await wait(read_end)

        trio.run(main)
    os.close(read_end)
    assert hung_up == [True, True]


def test_a_readable_descriptor_is_no_hang_up(pipe) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x")
    hung_up: list[bool] = []
    for spin_us in (50, 0):
        wait = _SpinningWait(spin_us=spin_us, on_hang_up=lambda: hung_up.append(True))
        trio.run(wait, read_end)
    assert hung_up == []


def test_the_wait_tells_the_workers_which_device_they_read(pipe) -> None:
    read_end, write_end = pipe
    os.write(write_end, b"x")
    workers = session.Workers(1)
    assert workers.device is None
    trio.run(_SpinningWait(spin_us=50, workers=workers), read_end)
    assert workers.device == read_end
