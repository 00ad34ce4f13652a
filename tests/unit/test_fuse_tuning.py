"""The FUSE edge's tuning: the connection's read-ahead, and pyfuse3's cheaper lock."""

from __future__ import annotations

import os
from pathlib import Path

import trio
import trio.testing

from cfs.fuse import session, tuning


def _fake_bdi(tmp_path: Path, mountpoint: Path, kib: int) -> Path:
    dev = os.stat(mountpoint).st_dev
    knob = tmp_path / "bdi" / f"{os.major(dev)}:{os.minor(dev)}" / "read_ahead_kb"
    knob.parent.mkdir(parents=True)
    knob.write_text(f"{kib}\n")
    return knob


def test_read_ahead_is_raised_never_lowered(tmp_path: Path) -> None:
    knob = _fake_bdi(tmp_path, tmp_path, 128)
    assert tuning.raise_read_ahead(tmp_path, 1024, sys_bdi=tmp_path / "bdi")
    assert knob.read_text().strip() == "1024"
    assert not tuning.raise_read_ahead(tmp_path, 512, sys_bdi=tmp_path / "bdi")
    assert knob.read_text().strip() == "1024"


def test_without_the_knob_the_kernel_default_stays(tmp_path: Path) -> None:
    assert not tuning.raise_read_ahead(tmp_path, 1024, sys_bdi=tmp_path / "nowhere")


def test_a_free_lock_is_taken_without_yielding_and_a_held_one_waits() -> None:
    order: list[str] = []

    async def main() -> None:
        lock = session._UncontendedLock(session.Workers(32))  # every worker let in: the lock alone

        async def second() -> None:
            async with lock:
                order.append("second")

        async with trio.open_nursery() as nursery:
            with trio.testing.assert_no_checkpoints():
                await lock.__aenter__()
            nursery.start_soon(second)
            await trio.testing.wait_all_tasks_blocked()
            order.append("first")
            await lock.__aexit__(None, None, None)
        assert order == ["first", "second"]

    trio.run(main)
