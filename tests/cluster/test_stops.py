"""Stopping nodes: bounded, clean, and nothing fsync'd lost (mountd.cluster.stopping).

Each stop is measured from the SIGTERM to the process's exit. The bound a stop promises
is ``--stop-timeout`` for what it waits on (replicas, etcd); unmounting, ending the FUSE
session, closing the store and the interpreter's exit come on top (``TEARDOWN``). The
clusters here use a replication timeout far above the stop timeout, so a stop that
waited for a replica the way an fsync does would overrun the bound by far.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.cluster.cluster import (
    Cluster,
    Member,
    assert_clean,
    assert_tree,
    create_volume,
    make_tree,
    mount,
    replicated,
    wait_for,
)
from tests.cluster.test_cluster import run_writer_until
from tests.mount.test_crash import logged_facts, verify
from tests.node import mounts_under

pytestmark = pytest.mark.mount

STOP_TIMEOUT = 4.0
"""The stop bound the daemons are given (``--stop-timeout``)."""
TEARDOWN = 4.0
"""Unmounting, ending the FUSE session, closing the store and exiting the interpreter, on
a loaded 2-core machine (measured: well under a second when idle)."""
LONG_REPLICATION = 60.0
"""fsync's wait for a replica: what an unbounded stop would wait per volume."""

STOPS = pytest.mark.parametrize("cluster", [pytest.param(
    {"replication_timeout": LONG_REPLICATION, "daemon_args": ["--stop-timeout", str(STOP_TIMEOUT)]},
    id="stop-timeout")], indirect=True)


def signal_and_time(nodes: list[Member], signum: int = signal.SIGTERM) -> dict[str, tuple[int | None, float]]:
    """Send ``signum`` to every node's daemon at the same moment; {name: (exit status, seconds
    from the signal to the exit)}. A daemon still running after the bound and a margin is
    killed (status None), so the test fails instead of hanging."""
    results: dict[str, tuple[int | None, float]] = {}
    logs.clear()
    logs.update({node.name: node for node in nodes})

    def wait(node: Member, sent: float) -> None:
        assert node.proc is not None
        try:
            status: int | None = node.proc.wait(STOP_TIMEOUT + TEARDOWN + 30)
        except Exception:
            node.kill()
            status = None
        results[node.name] = (status, time.monotonic() - sent)

    threads = []
    for node in nodes:
        assert node.proc is not None
        node.proc.send_signal(signum)
        threads.append(threading.Thread(target=wait, args=(node, time.monotonic())))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


logs: dict[str, Member] = {}
"""The nodes of the last ``signal_and_time``: their logs go with a failure."""


def assert_stopped_in_time(results: dict[str, tuple[int | None, float]], bound: float) -> None:
    print("stop times:", {name: f"{took:.2f} s" for name, (_status, took) in results.items()})
    for name, (status, took) in results.items():
        assert status == 0, f"node {name} exited with {status} after {took:.1f} s:\n{logs[name].log()[-6000:]}"
        assert took <= bound, f"node {name} took {took:.1f} s to stop (bound {bound:g} s):\n{logs[name].log()[-6000:]}"


@STOPS
def test_three_nodes_stopped_at_once_exit_in_time_and_keep_everything(cluster: Cluster) -> None:
    """Each node writes two volumes, one replicated to both other nodes, one to either
    (which one changes as nodes leave), and a program writes and fsyncs on each node
    while all three get SIGTERM at the same moment: each waits on peers that are
    themselves stopping. Each exits 0 within the bound and leaves no mount; after a
    restart every fsync'd byte is there."""
    trees: dict[str, tuple[Path, dict[str, str]]] = {}
    for seed, node in enumerate(cluster.nodes):
        for replicas in (3, 2):
            name = f"vol-{node.name}{replicas}"
            create_volume(node, name, replicas=replicas)
            path = mount(node, name)
            trees[name] = (path, make_tree(path, seed=10 * seed + replicas, dirs=1))
    for name in trees:
        node = cluster[name[4]]
        wait_for(f"{name}'s replicas", lambda node=node, name=name: replicated(node, name), timeout=30)
    writers: dict[str, tuple[Path, Path, subprocess.Popen[bytes]]] = {}
    try:
        for name, (path, _tree) in trees.items():
            (path / "made-just-before-the-stop").mkdir()  # a record the replicas have not seen yet
            if name.endswith("3"):  # a program still writing and fsyncing when the stop comes
                log = cluster.base / f"{name}.facts"
                (path / "w").mkdir()
                writers[name] = (path / "w", log, run_writer_until(path / "w", log, facts=5))
        results = signal_and_time(cluster.nodes)
    finally:
        for _path, _log, writer in writers.values():
            writer.kill()
            writer.wait()
    assert_stopped_in_time(results, STOP_TIMEOUT + TEARDOWN)
    for node in cluster.nodes:
        assert mounts_under(node.base) == [], f"{node.name} left mounts behind"
        assert node.log_lines("stop took"), f"{node.name} did not finish its stop:\n{node.log()}"

    for node in cluster.nodes:
        node.start()
    cluster.wait_members(3)
    for name, (path, expected) in trees.items():
        assert cluster[name[4]].is_mounted(path), f"{name} was not mounted again"
        assert_tree(path, expected)
        assert (path / "made-just-before-the-stop").is_dir()
    for name, (path, log, _writer) in writers.items():
        facts = logged_facts(log)
        assert len(facts) >= 5
        assert verify(path, facts) > 0, name
    assert_clean(*cluster.nodes)


def frozen_replicas_and_records(cluster: Cluster) -> tuple[Member, Path, list[Member]]:
    """a writes a volume replicated to b and c (all acknowledged), then b and c are frozen
    and a makes three more records that nobody acknowledges."""
    a, others = cluster["a"], [cluster["b"], cluster["c"]]
    create_volume(a, replicas=3)
    path = mount(a)
    make_tree(path, seed=11, dirs=1)
    wait_for("b and c to hold every record", lambda: replicated(a), timeout=30)
    for node in others:
        node.freeze()
    for name in ("one", "two", "three"):
        (path / name).mkdir()
    return a, path, others


@STOPS
def test_a_stop_with_frozen_replicas_is_bounded_and_says_what_it_gave_up(cluster: Cluster) -> None:
    """b and c are frozen (SIGSTOP): they neither answer nor stop. a's stop still ends
    within the bound, names the records each of them did not acknowledge, and those
    reach them once a runs again and they are back."""
    a, path, others = frozen_replicas_and_records(cluster)
    results = signal_and_time([a])
    print(*[line for line in a.log_text().splitlines() if "WARNING" in line or "stop" in line], sep="\n")
    assert_stopped_in_time(results, STOP_TIMEOUT + TEARDOWN)
    assert mounts_under(a.base) == []
    for node in others:
        assert a.log_lines(f"records not acknowledged by node {node.node_id[:8]}, left for catch-up"), a.log()

    for node in others:
        node.resume()
    a.start()
    assert a.is_mounted(path)
    assert all((path / name).is_dir() for name in ("one", "two", "three"))
    wait_for("b and c to catch up with a", lambda: replicated(a), timeout=60)


@pytest.mark.parametrize("cluster", [pytest.param(
    {"replication_timeout": LONG_REPLICATION, "daemon_args": ["--stop-timeout", "600"]},
    id="long-stop-timeout")], indirect=True)
def test_a_second_signal_stops_at_once(cluster: Cluster) -> None:
    """With a stop timeout far longer than the test, a second SIGTERM ends the wait for
    the frozen replicas at once; the volume is unmounted all the same."""
    a, path, _others = frozen_replicas_and_records(cluster)
    a.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    wait_for("a to begin its stop", lambda: a.log_lines("stopping (SIGTERM)"), timeout=10, interval=0.05)
    results = signal_and_time([a], signal.SIGINT)
    assert_stopped_in_time(results, TEARDOWN)
    assert a.log_lines("received SIGINT while stopping: stopping at once")
    assert mounts_under(a.base) == []
    assert not os.path.ismount(path)


@STOPS
def test_a_stop_while_etcd_does_not_answer_is_bounded(cluster: Cluster) -> None:
    """etcd is frozen (SIGSTOP) when a stops: releasing the lease and the registration are
    given up at the deadline, and said so; the replicas answered, so nothing is left."""
    a = cluster["a"]
    create_volume(a, replicas=3)
    path = mount(a)
    make_tree(path, seed=12, dirs=1)
    assert cluster.etcd.proc is not None
    os.kill(cluster.etcd.proc.pid, signal.SIGSTOP)
    try:
        results = signal_and_time([a])
    finally:
        os.kill(cluster.etcd.proc.pid, signal.SIGCONT)
    assert_stopped_in_time(results, STOP_TIMEOUT + TEARDOWN)
    assert mounts_under(a.base) == []
    assert a.log_lines("lease (epoch 1) not released"), a.log()
    assert a.log_lines("not unregistered before the stop's deadline"), a.log()
    assert not a.log_lines("left for catch-up"), a.log()


@STOPS
def test_a_stop_during_the_start_cuts_it_short(cluster: Cluster) -> None:
    """a starts again while its replicas are frozen: mounting its volume again waits on
    them (fencing, catch-up). A SIGTERM then ends the start, and the stop keeps its bound."""
    a, path, others = frozen_replicas_and_records(cluster)
    assert_stopped_in_time(signal_and_time([a]), STOP_TIMEOUT + TEARDOWN)

    def start() -> None:
        try:
            a.start()
        except RuntimeError:  # it exits (0) before it serves: what the test wants
            pass
    starting = threading.Thread(target=start)
    starting.start()
    try:
        wait_for("a to take the volume's lease again", lambda: a.log_lines("holds volume 'vol' with epoch 2"),
                 timeout=60, interval=0.05)
        assert not a.log_lines("remounted volume vol"), "the start was not slow enough to be cut short"
        results = signal_and_time([a])
    finally:
        starting.join()
    assert_stopped_in_time(results, STOP_TIMEOUT + TEARDOWN)
    assert mounts_under(a.base) == []
    assert a.log_text().count("stop took") == 2

    for node in others:
        node.resume()
    a.start()
    assert all((path / name).is_dir() for name in ("one", "two", "three"))
