"""A real cluster for tests: one etcd and node daemons on loopback, every one stopped by PID.

``Cluster(base).start(3)`` starts an etcd (``tests.etcd.Etcd``) and three ``cfs-mountd``
daemons, each with its own data directory, peer port and mount directories under
``base/<name>``, sharing one cluster secret in a 0600 file. Nodes keep the daemon's
default etcd lease TTL (``LEASE_TTL``, 10 s), which a busy machine cannot make a live
node miss; the tests that wait for a dead node to show as down ask for ``EXPIRY_TTL``.
Replication uses a short timeout (``REPLICATION_TIMEOUT``) so that unreachable replicas
show within seconds. ``start`` returns once every node sees every other as up.

With ``network=Network()`` (``tests.cluster.netns``) each node runs in a network
namespace of its own, on links a test can cut; etcd then serves on the address those
namespaces reach.

``close`` runs whatever happened in the test: frozen daemons are resumed, every daemon
gets SIGTERM (SIGKILL after a short grace), every mount below ``base`` is detached (a
daemon killed with -9 leaves its FUSE mounts dead but attached), then etcd is stopped and
the namespaces are deleted. It never touches a process it did not start.

Helpers used by the tests live here too: volume create/mount and the roles of the nodes
for a volume (``roles``), trees of files written with fsync and verified by hash, a
process writing from inside a mount (``Writer``), a poll with a deadline, and the JSON
views of the command line (status, inspect, node ls, fsck).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self, TypeVar

from cfs.repl import placement
from cfs.types import NodeId
from tests.cluster.netns import Network
from tests.etcd import Etcd, free_port
from tests.node import Node, detach_mounts_under, mounts_under
from tools.bench.procs import fsync_dir

LEASE_TTL = 10
"""The daemon's default: a node's registration lapses only after it could not renew it
(every TTL/3) for 2/3 of that, 6.7 s, while the worst stall of a daemon measured during
a whole run of tests/cluster on the 2-core test machine was 14 ms."""
EXPIRY_TTL = 5
"""For the tests that wait for a killed, frozen or cut-off node to be declared down: a
death shows within 5 s, and a live node still survives stalls of 3.3 s. (A cluster with
``lease_ttl=EXPIRY_TTL``: ``@pytest.mark.parametrize("cluster", [{"lease_ttl": EXPIRY_TTL}],
indirect=True)``.)"""
REPLICATION_TIMEOUT = 3.0
STOP_GRACE = 15.0
"""Seconds a daemon gets to stop cleanly at teardown before SIGKILL."""

T = TypeVar("T")


def write_secret(path: Path, secret: bytes) -> Path:
    """A cluster secret file the daemon accepts: mode 0600 from its creation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secret)
    finally:
        os.close(fd)
    return path


def wait_for(what: str, check: Callable[[], T], timeout: float = 20.0, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def stopped(pid: int) -> bool:
    """Every thread of process ``pid`` is stopped: a SIGSTOP takes effect in each thread
    when it next runs, so a thread may still act after ``kill`` returned."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that just ended
    return bool(states) and all(state in ("T", "t") for state in states)


class Member(Node):
    """One node daemon of a ``Cluster``: a ``Node`` with its peer port, id and mount dirs."""

    def __init__(self, base: Path, name: str, *, etcd_url: str, secret_file: Path, lease_ttl: int,
                 replication_timeout: float, host: str = "127.0.0.1", wrapper: list[str] | None = None,
                 daemon_args: list[str] | None = None, metrics: bool = False) -> None:
        """``metrics``: serve Prometheus metrics on a port of its own (``metrics_port``)."""
        self.name = name
        self.host = host
        self.port = free_port()
        self.metrics_port = free_port() if metrics else None
        metrics_args = ["--metrics", f"{host}:{self.metrics_port}"] if metrics else []
        super().__init__(base, wrapper=wrapper, extra_args=[
            "--etcd", etcd_url, "--listen", f"{host}:{self.port}", "--secret-file", str(secret_file),
            "--lease-ttl", str(lease_ttl), "--replication-timeout", str(replication_timeout),
            "--no-plugin", *metrics_args, *(daemon_args or [])])
        self.node_id = ""
        self.frozen = False

    def __repr__(self) -> str:
        return f"<node {self.name} {self.node_id[:8]} :{self.port}>"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30) -> Self:
        super().start(timeout)
        self.node_id = self.status()["cluster"]["node_id"]
        return self

    # --- processes ---------------------------------------------------------------

    def freeze(self) -> None:
        """SIGSTOP the daemon: it neither answers peers nor renews its etcd lease. Returns
        once every thread of it has stopped."""
        os.kill(self.pid, signal.SIGSTOP)
        self.frozen = True
        wait_for(f"{self.name} to stop", lambda: stopped(self.pid), timeout=30, interval=0.01)

    def resume(self) -> None:
        if self.frozen and self.proc is not None and self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
        self.frozen = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- views -------------------------------------------------------------------

    def mount_dir(self, label: str) -> Path:
        path = self.base / "mnt" / label
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_mounted(self, path: Path) -> bool:
        return str(path) in mounts_under(self.base)

    def status(self) -> dict[str, Any]:
        """What ``cfs status --json`` prints (asked over the control socket: cheap to poll)."""
        return self.api("status")

    def inspect(self, volume: str) -> dict[str, Any]:
        """What ``cfs volume inspect --json`` prints (over the control socket)."""
        return self.api("volume.inspect", name=volume)

    def node_ls(self) -> list[dict[str, Any]]:
        return self.api("node.ls")

    def fsck(self) -> dict[str, Any]:
        """``cfs fsck --json`` of the whole store; a report with problems is returned, not raised."""
        result = self.cli("--json", "fsck", check=False)
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"cfs fsck on {self.name} failed: {result.stderr}") from None

    def log_lines(self, needle: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if needle in line]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def cleanup(self) -> None:
        self.resume()
        super().cleanup()


class Cluster:
    """An etcd and ``cfs-mountd`` daemons under ``base`` (see the module doc)."""

    def __init__(self, base: Path, *, lease_ttl: int = LEASE_TTL,
                 replication_timeout: float = REPLICATION_TIMEOUT, network: Network | None = None,
                 daemon_args: list[str] | None = None, metrics: bool = False) -> None:
        """``network``: put each node in a network namespace of its own (``tests.cluster.netns``);
        the cluster closes it last. ``daemon_args``: more ``cfs-mountd`` options for every node
        (e.g. ``["--changelog-retain", "5"]``). ``metrics``: every node serves ``--metrics``
        on a port of its own (``Member.metrics_port``)."""
        self.daemon_args = list(daemon_args or [])
        self.metrics = metrics
        self.base = base
        self.network = network
        self.lease_ttl = lease_ttl
        self.replication_timeout = replication_timeout
        self.secret = os.urandom(24).hex().encode()
        self.secret_file = write_secret(base / "secret", self.secret)
        self.etcd = Etcd(base / "etcd", host=network.etcd_host if network else "127.0.0.1")
        self.nodes: list[Member] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, count: int = 3, *, secrets: dict[int, bytes] | None = None) -> Self:
        """etcd, then ``count`` nodes started together; ``secrets`` gives some of them (by
        index) another secret than the cluster's."""
        (self.base / "etcd").mkdir(exist_ok=True)
        self.etcd.start()
        self.add_nodes(count, secrets=secrets)
        return self

    def add_nodes(self, count: int, *, secrets: dict[int, bytes] | None = None) -> list[Member]:
        """Start ``count`` more nodes and wait until every node sees all nodes up."""
        new = []
        for i in range(count):
            name = "abcdefgh"[len(self.nodes)]
            secret_file = self.secret_file
            if secrets and i in secrets:
                secret_file = write_secret(self.base / f"secret-{name}", secrets[i])
            (self.base / name).mkdir()
            host, wrapper = self.network.attach(name) if self.network else ("127.0.0.1", None)
            member = Member(self.base / name, name, etcd_url=self.etcd.url, secret_file=secret_file,
                            lease_ttl=self.lease_ttl, replication_timeout=self.replication_timeout,
                            host=host, wrapper=wrapper, daemon_args=self.daemon_args, metrics=self.metrics)
            self.nodes.append(member)
            new.append(member)
        _parallel(lambda m: m.start(), new)
        self.wait_members(len(self.nodes))
        return new

    def wait_members(self, count: int, timeout: float = 20.0) -> None:
        """Every running node's own member list (what it fences, catches up from and
        ships to, refreshed from etcd every second; ``cfs status`` shows it) has
        ``count`` nodes up."""
        def all_up(node: Member) -> bool:
            return sum(1 for state in node.status()["cluster"]["members"].values() if state == "up") == count
        for node in self.nodes:
            if node.alive() and not node.frozen:
                wait_for(f"{node.name} to see {count} nodes up", lambda node=node: all_up(node), timeout)

    def __getitem__(self, name: str) -> Member:
        return next(n for n in self.nodes if n.name == name)

    def replica_of(self, volume_id_hex: str, writer: Member, among: Iterable[Member]) -> Member:
        """The node ``writer``'s replicator ships ``volume_id_hex`` to (replicas=2), by the
        same rendezvous placement the daemons use."""
        candidates = {NodeId(bytes.fromhex(m.node_id)): m for m in among if m is not writer}
        [chosen] = placement.choose(bytes.fromhex(volume_id_hex), list(candidates), 1)
        return candidates[chosen]

    def first_placed(self, volume_id_hex: str) -> Member:
        """The node ranked first for the volume among all of the cluster's: the healer
        keeps its copy whoever writes the volume (it drops copies outside the first
        ``replicas``, cfs.repl.placement)."""
        by_id = {NodeId(bytes.fromhex(m.node_id)): m for m in self.nodes}
        return by_id[placement.rank(bytes.fromhex(volume_id_hex), list(by_id))[0]]

    def close(self) -> None:
        """Stop every daemon and etcd by PID and detach every mount, whatever state they are in."""
        try:
            for node in self.nodes:
                node.resume()
                if node.alive():
                    node.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            deadline = time.monotonic() + STOP_GRACE
            for node in self.nodes:
                if node.proc is not None:
                    try:
                        node.proc.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass
            for node in self.nodes:
                node.kill()
                detach_mounts_under(node.base)
        finally:
            self.etcd.stop()
            if self.network is not None:
                self.network.close()


def _parallel(fn: Callable[[Member], object], members: list[Member]) -> None:
    errors: list[BaseException] = []

    def run(member: Member) -> None:
        try:
            fn(member)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the caller's thread)
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# --- volumes on the cluster --------------------------------------------------------

VOLUME = "vol"


def create_volume(node: Member, name: str = VOLUME, replicas: int = 2) -> dict[str, Any]:
    return node.cli("volume", "create", name, "-o", f"replicas={replicas}", json_out=True)


def mount(node: Member, name: str = VOLUME, *, takeover: bool = False, label: str | None = None) -> Path:
    path = node.mount_dir(label or name)
    node.cli("mount", name, str(path), *(["--takeover"] if takeover else []))
    assert node.is_mounted(path)
    return path


def roles(cluster: Cluster, volume_id: str) -> tuple[Member, Member, Member]:
    """(a, r, b): the first writer, the node a ships to, the third node."""
    a = cluster["a"]
    r = cluster.replica_of(volume_id, a, cluster.nodes)
    b = next(n for n in cluster.nodes if n is not a and n is not r)
    return a, r, b


def assert_tree(root: Path, expected: dict[str, str]) -> None:
    found = tree_hashes(root)
    missing = sorted(set(expected) - set(found))
    wrong = sorted(p for p in expected if p in found and found[p] != expected[p])
    assert not missing and not wrong, f"under {root}: missing {missing[:10]}, wrong content {wrong[:10]}"


def assert_clean(*nodes: Member) -> None:
    for node in nodes:
        report = node.fsck()
        assert report["clean"], f"fsck on {node.name}: {report['lines']}"


def wait_until_down(observer: Member, dead: Member, cluster: Cluster) -> None:
    """``observer`` lists ``dead`` as down: its etcd lease expired (or it left). The
    deadline only bounds a hang: a death shows after at most one TTL."""
    wait_for(f"{dead.name} to be down in etcd",
             lambda: any(n["node_id"] == dead.node_id and n["state"] != "up" for n in observer.node_ls()),
             timeout=3 * cluster.lease_ttl + 30)


def replicated(node: Member, name: str = VOLUME) -> dict[str, Any] | None:
    """The writer's replication state if every replica acknowledged its head, else None."""
    repl = node.inspect(name)["replication"]
    if repl is None or not repl["replicas"]:
        return None
    if all(seq == repl["head"] for seq in repl["replicas"].values()):
        return repl
    return None


# --- trees of files ------------------------------------------------------------------

TREE_SIZES = (0, 1, 4095, 65535, 65536, 65537, 200_000, 300_001, 1_048_577)


def write_file(root: Path, name: str, seed: int, size: int = 150_000) -> dict[str, str]:
    """One file of random bytes, fsync'd (the file only: cheap on a degraded volume, where
    every fsync and close-after-write waits out the replication timeout)."""
    data = random.Random(seed).randbytes(size)
    write_synced(root / name, data)
    return {name: hashlib.sha256(data).hexdigest()}


def make_tree(root: Path, seed: int, *, dirs: int = 4, files_per_dir: int = 4) -> dict[str, str]:
    """Write a tree of files (sizes around 64 KiB block boundaries, a few MiB in all) and
    fsync each file and directory; returns {relative path: sha256}."""
    rng = random.Random(seed)
    written: dict[str, str] = {}
    for d in range(dirs):
        directory = root / f"s{seed}" / f"d{d}" / ("deep" if d % 2 else "")
        directory.mkdir(parents=True, exist_ok=True)
        for f in range(files_per_dir):
            size = rng.choice(TREE_SIZES)
            data = rng.randbytes(size)
            path = directory / f"f{f}.bin"
            write_synced(path, data)
            written[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
        fsync_dir(directory)
    fsync_dir(root)
    return written


def write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def tree_hashes(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file below ``root``."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# --- a process writing inside a mount --------------------------------------------------

_WRITER = r"""
import json, os, sys
name, report = sys.argv[1], sys.argv[2]
payload = sys.argv[3].encode() * int(sys.argv[4])
steps = {}
def note(step, outcome):
    steps[step] = outcome
    with open(report + ".tmp", "w") as f:
        json.dump(steps, f)
    os.replace(report + ".tmp", report)
note("started", "ok")
fd = -1
for line in sys.stdin:
    step = line.strip()
    try:
        if step == "open":
            fd = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644)
        elif step == "write":
            done = os.write(fd, payload)
            if done != len(payload):
                note(step, f"wrote {done} of {len(payload)} bytes")
                break
        elif step == "fsync":
            os.fsync(fd)
        elif step == "fdatasync":
            os.fdatasync(fd)
        elif step == "close":
            os.close(fd)
        else:
            raise SystemExit(f"unknown step {step!r}")
    except OSError as exc:
        note(step, exc.errno)
        break
    note(step, "ok")
"""

WRITER_PIECE, WRITER_REPEAT = "WRITTEN BY A NODE THAT LOST THE VOLUME ", 2500
"""What ``Writer`` writes at each "write" step: the piece so many times, 97,500 bytes. That
crosses a 64 KiB block boundary, and stays below the kernel's smallest FUSE write request
(128 KiB), so each write(2) is one request: it is taken or refused whole."""


REFUSED = (errno.EROFS, errno.EIO)
"""How a node refuses a write it can no longer make durable: EROFS once it knows it was
fenced (README, "No split brain"); EIO for a handle of a copy it has dropped."""

EMPTY = hashlib.sha256(b"").hexdigest()
"""The hash of an empty file (``tree_hashes``)."""


class Writer:
    """A process whose working directory is inside a mount, as a container's would be: it
    keeps using the volume after the mount is detached (lazily) from the host's tree.

    ``do("open", "write")`` has it take those steps on ``name`` there, in order ("open"
    creates the file write-only, "write" appends ``WRITER_PIECE * WRITER_REPEAT``, then "fsync",
    "fdatasync", "close"); ``steps()`` says how far it got: each step taken maps to "ok" or to the
    errno it failed with. After a failed step it takes no more and exits (the kernel
    closes its descriptor). ``result()`` lets it exit and returns its steps."""

    def __init__(self, cwd: Path, name: str, report: Path) -> None:
        self.report = report
        self.proc = subprocess.Popen([sys.executable, "-c", _WRITER, name, str(report), WRITER_PIECE,
                                      str(WRITER_REPEAT)],
                                     cwd=cwd, stdin=subprocess.PIPE)
        try:
            wait_for("the writer to start", report.exists, timeout=10, interval=0.02)
        except BaseException:
            self.kill()
            raise

    def do(self, *steps: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(f"{step}\n" for step in steps).encode())
        self.proc.stdin.flush()

    def steps(self) -> dict[str, Any]:
        return json.loads(self.report.read_text())

    def wait_step(self, step: str, timeout: float = 30) -> Any:
        """Wait until ``step`` was taken and return its outcome ("ok" or an errno)."""
        return wait_for(f"the writer's {step}",
                        lambda: step in (taken := self.steps()) and [taken[step]], timeout=timeout,
                        interval=0.02)[0]

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout: float = 60) -> dict[str, Any]:
        """Let the writer finish the steps asked for and exit; its steps. ``timeout`` only
        bounds a hang (a step that never returns fails the test, naming the steps taken)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the writer hangs: no exit within {timeout:g} s; "
                                 f"steps taken: {self.steps()}") from None
        return self.steps()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
