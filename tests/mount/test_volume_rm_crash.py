"""A kill -9 at any point of ``cfs volume rm`` never brings the volume back.

The removal changes the coordinator's catalog and the local store; a crash between the
two used to leave the local copy, which the next start published again. The removal is
recorded in the store first and finished by the next start. The daemon is killed at
named points (``CFS_CRASH_AT``, cfs.faults), not at a moment left to luck.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.node import Node


@pytest.mark.parametrize("point", ["volume-rm-recorded", "volume-rm-uncataloged"])
def test_a_crash_during_volume_rm_finishes_the_removal_at_the_next_start(short_tmp: Path, point: str) -> None:
    node = Node(short_tmp)
    try:
        node.start()
        mnt = node.mount("doomed", short_tmp / "m", block_size=4096)
        (mnt / "data").write_bytes(os.urandom(1 << 20))
        node.mount("kept", short_tmp / "k", block_size=4096)
        (short_tmp / "k" / "data").write_bytes(b"still here")
        node.cli("umount", str(mnt))
        assert node.stop() == 0

        node.env = {"CFS_CRASH_AT": point}
        node.start()
        result = node.cli("volume", "rm", "doomed", check=False)
        assert result.returncode != 0                     # the daemon died under the call
        assert node.proc is not None and node.proc.wait(30) == -signal.SIGKILL
        assert f"crash point {point} reached" in node.log()

        node.env = {}
        node.start()
        assert "doomed: finishing its removal" in node.log()
        assert [v["name"] for v in node.cli("volume", "ls", json_out=True)] == ["kept"]
        assert (short_tmp / "k" / "data").read_bytes() == b"still here"
        report = node.cli("fsck", json_out=True)
        assert report["clean"], report["lines"]
        assert report["counts"]["chunks"] == 1            # the removed volume's chunks are gone
        assert node.stop() == 0
        node.start()                                      # and it stays gone
        assert [v["name"] for v in node.cli("volume", "ls", json_out=True)] == ["kept"]
        node.cli("volume", "create", "doomed")            # the name is free again
    finally:
        node.cleanup()
