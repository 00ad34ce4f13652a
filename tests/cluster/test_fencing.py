"""An fsync that arrives after this node's writer was fenced and its copy discarded fails.

The old writer's volume leaves the open table when it is fenced and closed; an fsync
that arrived after that found nothing to flush (the commit timer had stored the blocks,
or the discard had dropped them) and nothing open to wait for, and succeeded: the
program was told its data was durable when it had been thrown away. Here a program
holds a file open on the old writer's mount, between its write and its fsync, until
that node has logged that it discarded its copy; only then does it fsync. Steps are
driven by the test, not by timing.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

from tests.cluster.cluster import Cluster, create_volume, mount, replicated, roles, wait_for, write_synced

HELD_WRITER = r"""
import json, os, sys
name, report = sys.argv[1], sys.argv[2]
steps = {}
def note(step, outcome):
    steps[step] = outcome
    with open(report + ".tmp", "w") as f:
        json.dump(steps, f)
    os.replace(report + ".tmp", report)
def attempt(step, call):
    try:
        call()
        note(step, "ok")
    except OSError as exc:
        note(step, exc.errno)
fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)
attempt("write", lambda: os.write(fd, b"held between write and fsync" * 4096))
sys.stdin.readline()          # the test says when
attempt("fsync", lambda: os.fsync(fd))
attempt("fdatasync", lambda: os.fdatasync(fd))
attempt("close", lambda: os.close(fd))
"""


class HeldWriter:
    """A program with its working directory in the mount, as a container's would be: it
    writes, then waits for the test before each later step; ``steps`` says how each went
    ("ok" or the errno)."""

    def __init__(self, cwd: Path, name: str, report: Path) -> None:
        self.report = report
        self.proc = subprocess.Popen([sys.executable, "-c", HELD_WRITER, name, str(report)], cwd=cwd,
                                     stdin=subprocess.PIPE)

    def steps(self) -> dict[str, object]:
        try:
            return dict(json.loads(self.report.read_text()))
        except FileNotFoundError:
            return {}

    def go(self) -> dict[str, object]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        self.proc.wait(60)
        return self.steps()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_an_fsync_after_the_fenced_copy_was_discarded_fails_with_eio(cluster: Cluster) -> None:
    vid = create_volume(cluster["a"])["id"]
    a, _r, b = roles(cluster, vid)
    ma = mount(a)
    held = HeldWriter(ma, "held.bin", cluster.base / "held.json")
    try:
        wait_for("the write to be done", lambda: held.steps().get("write"), timeout=30)
        assert held.steps() == {"write": "ok"}
        wait_for("r to hold every record", lambda: replicated(a), timeout=30)
        a.freeze()                      # a cannot release: b takes the volume over anyway
        mb = mount(b, takeover=True)
        a.resume()
        wait_for("a to log that it discarded its copy", lambda: a.log_lines("discarded"), timeout=60)
        steps = held.go()
    finally:
        held.kill()
    assert steps["fsync"] == errno.EIO, steps
    assert steps["fdatasync"] == errno.EIO, steps
    assert steps["close"] == errno.EIO, steps
    assert "fenced" in a.log_text()
    assert b.inspect("vol")["writer"]["node_id"] == b.node_id
    assert mb.exists()


def test_a_takeover_with_no_reachable_copy_is_refused_and_the_holder_keeps_it(cluster: Cluster) -> None:
    """The only copy is on a (one replica), and a is frozen: b's takeover is refused
    before it touches the lease, so a is not fenced and keeps its volume and data. (It
    used to take the lease, serve an empty volume, and make a drop the only copy.)"""
    a = cluster["a"]
    b = next(n for n in cluster.nodes if n is not a)
    create_volume(a, replicas=1)
    ma = mount(a)
    write_synced(ma / "only-here", b"the only copy" * 1000)
    a.freeze()
    try:
        refused = b.cli("mount", "vol", str(b.mount_dir("vol")), "--takeover", check=False)
    finally:
        a.resume()
    assert refused.returncode == 1
    assert "has no copy on this node nor on any node that answers" in refused.stderr, refused.stderr
    assert (ma / "only-here").read_bytes() == b"the only copy" * 1000
    assert a.inspect("vol")["writer"]["node_id"] == a.node_id
    assert not a.log_lines("fenced") and not b.is_mounted(b.mount_dir("vol"))
    write_synced(ma / "after", b"a still writes it")
