"""Peers that misbehave on a node's peer port, against real daemons (``tests.cluster.cluster``).

A raw TCP client plays the bad peer: garbage, frames announcing 1 GiB, a wrong cluster
secret (a real ``cfs.repl.session.Session`` with another secret), and, with the right
secret, a frame with a bad MAC, a malformed message, a chunk whose bytes do not match its
id, and a connection closed in the middle of a chunk transfer. Each must be refused and
logged, leave nothing in the node's store, and the cluster must keep replicating and
moving volumes afterwards, and records carrying a superseded epoch are refused by every
node even from a peer that knows the secret. A node started with the wrong secret cannot take part: fsync
of a replicated volume degrades after the replication timeout instead of hanging.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from cfs.hashing import chunk_id
from cfs.repl import wire
from cfs.repl.session import (
    NEED_DATA,
    Authenticated,
    Closed,
    Rejected,
    ReplyReceived,
    Session,
)
from cfs.repl.wire import (
    AppendLog,
    Error,
    ErrorCode,
    FetchLog,
    LogRecords,
    PutChunks,
    Reply,
    Request,
)
from cfs.types import NodeId, VolumeId
from tests.cluster.cluster import (
    VOLUME,
    WRITER_PIECE,
    WRITER_REPEAT,
    Cluster,
    Member,
    Writer,
    assert_clean,
    assert_tree,
    create_volume,
    make_tree,
    mount,
    replicated,
    roles,
    wait_for,
)

pytestmark = pytest.mark.mount

GiB = 1 << 30


class RawPeer:
    """A TCP connection to a node's peer port, driven by hand."""

    def __init__(self, node: Member) -> None:
        self.sock = socket.create_connection(("127.0.0.1", node.port), timeout=10)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def handshake(self, secret: bytes, cluster: str = "cfs") -> tuple[Session, Authenticated | Rejected | Closed]:
        """Run our side of the handshake with ``secret``; returns our session and its outcome.

        The node's frames are fed to our session one at a time, so that our Auth always
        goes out before we judge the node's (a session that fails drops what it queued)."""
        session = Session("initiator", NodeId(os.urandom(16)), secret, cluster=cluster)
        self.send(session.data_to_send())
        pending = b""
        while True:
            event = session.next_event()
            out = session.data_to_send()
            if out:
                self.send(out)
            if event is NEED_DATA:
                while len(pending) < wire.HEADER_SIZE or len(pending) < wire.HEADER_SIZE + _length(pending):
                    data = self.sock.recv(65536)
                    if not data:
                        break
                    pending += data
                size = wire.HEADER_SIZE + _length(pending) if len(pending) >= wire.HEADER_SIZE else len(pending)
                session.receive_data(pending[:size] if size else b"")
                pending = pending[size:]
            elif isinstance(event, (Authenticated, Rejected, Closed)):
                return session, event
            else:
                raise AssertionError(f"unexpected {event!r} during the handshake")

    def closed_by_node(self, timeout: float = 10) -> bool:
        """True once the node closed the connection (EOF or reset), reading and dropping
        whatever it sent before; False if it kept it open for ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True


def _length(frame: bytes) -> int:
    return struct.unpack_from(">I", frame, 12)[0]


def header(type_id: int, length: int, request_id: int = 0) -> bytes:
    return struct.pack(">4sBBBBII", wire.MAGIC, wire.FRAME_VERSION, type_id, 0, 0, request_id, length)


def store_counts(node: Member) -> dict[str, int]:
    counts = node.fsck()["counts"]
    return {k: counts[k] for k in ("chunks", "staged_chunks", "blocks", "inodes", "volumes")}


def authed(node: Member, secret: bytes) -> tuple[RawPeer, Session]:
    peer = RawPeer(node)
    session, outcome = peer.handshake(secret)
    assert isinstance(outcome, Authenticated), outcome
    return peer, session


def roundtrip(peer: RawPeer, session: Session, message: Request) -> Reply:
    """Send ``message`` on an authenticated session and return the node's reply."""
    request_id = session.request(message)
    peer.send(session.data_to_send())
    while True:
        event = session.next_event()
        if event is NEED_DATA:
            session.receive_data(peer.sock.recv(1 << 20))
        elif isinstance(event, ReplyReceived) and event.request_id == request_id:
            return event.message
        else:
            raise AssertionError(f"unexpected {event!r} while waiting for a reply")


def flip_last_byte(frame: bytes) -> bytes:
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


def test_bad_peers_are_refused_and_store_nothing(cluster: Cluster) -> None:
    """Each bad peer, against r (the replica of a's volume): the connection is closed by
    the node, a log line names the reason, r stays up, and r's store counts (chunks,
    staged chunks, blocks, inodes, volumes) do not move. Afterwards a's fsyncs still
    reach r and the volume moves to r whole."""
    vid = create_volume(cluster["a"])["id"]
    a, r, _b = roles(cluster, vid)
    ma = mount(a)
    expected = make_tree(ma, seed=11, dirs=2)
    wait_for("r to acknowledge everything", lambda: replicated(a), timeout=10)
    before = store_counts(r)
    secret = cluster.secret
    chunk = os.urandom(100_000)

    def garbage() -> RawPeer:
        peer = RawPeer(r)
        peer.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4096))
        return peer

    def huge_hello() -> RawPeer:
        peer = RawPeer(r)
        peer.send(header(0x01, GiB))  # a Hello announcing 1 GiB: refused on its header
        return peer

    def wrong_secret() -> RawPeer:
        peer = RawPeer(r)
        _session, outcome = peer.handshake(os.urandom(32))
        assert not isinstance(outcome, Authenticated), "the node proved itself to a peer without the secret"
        return peer

    def huge_frame() -> RawPeer:
        peer, _session = authed(r, secret)
        peer.send(header(PutChunks.TYPE, GiB, request_id=1))
        return peer

    def bad_mac() -> RawPeer:
        peer, session = authed(r, secret)
        session.request(PutChunks([(chunk_id(chunk), chunk)]))
        peer.send(flip_last_byte(session.data_to_send()))
        return peer

    def malformed() -> RawPeer:
        peer, session = authed(r, secret)
        # a PutChunks whose count promises more chunks than its payload holds, correctly MAC'd
        session._queue(PutChunks([]), 1, struct.pack(">I", 1000) + b"\0" * 40)
        peer.send(session.data_to_send())
        return peer

    def wrong_chunk() -> RawPeer:
        peer, session = authed(r, secret)
        session.request(PutChunks([(chunk_id(b"something else"), chunk)]))
        peer.send(session.data_to_send())
        return peer

    def closed_mid_transfer() -> RawPeer:
        peer, session = authed(r, secret)
        session.request(PutChunks([(chunk_id(chunk), chunk)]))
        frame = session.data_to_send()
        peer.send(frame[:len(frame) // 2])
        peer.sock.shutdown(socket.SHUT_WR)
        return peer

    cases: dict[str, tuple[Callable[[], RawPeer], str]] = {
        "garbage": (garbage, "refused: frame header: bad magic"),
        "1 GiB hello": (huge_hello, "refused: frame of 1073741824 bytes exceeds the limit"),
        "wrong secret": (wrong_secret, "failed authentication (wrong cluster secret?)"),
        "1 GiB frame": (huge_frame, "disconnected: frame of 1073741824 bytes exceeds the limit"),
        "bad MAC": (bad_mac, "disconnected: frame 0 failed its MAC"),
        "malformed message": (malformed, "disconnected: put chunks: 1000 entries cannot fit"),
        "chunk not matching its id": (wrong_chunk, "does not match its data"),
        "closed mid-transfer": (closed_mid_transfer, "disconnected: connection closed inside a frame"),
    }
    for label, (attack, logged_as) in cases.items():
        seen = len(r.log_lines(logged_as))
        peer = attack()
        try:
            assert peer.closed_by_node(), f"{label}: the node kept the connection open"
        finally:
            peer.close()
        wait_for(f"{label}: a log line saying {logged_as!r}",
                 lambda logged_as=logged_as, seen=seen: len(r.log_lines(logged_as)) > seen, timeout=10)
        assert r.alive(), f"{label}: the node died"
    assert store_counts(r) == before, "a refused peer's data was stored"

    # the cluster keeps serving: replication to r, then a move to r
    expected |= make_tree(ma, seed=12, dirs=1)
    repl = wait_for("r to acknowledge the new records", lambda: replicated(a), timeout=10)
    assert repl["degraded"] is None, repl
    mr = mount(r, takeover=True)
    assert_tree(mr, expected)
    assert_clean(r)

    # a stale writer's records (a's epoch) are refused by every node, the writer included,
    # even from a peer that knows the secret
    volume_id = VolumeId(bytes.fromhex(vid))
    epoch = r.inspect(VOLUME)["writer"]["epoch"]
    peer, session = authed(r, secret)
    try:
        log_records = roundtrip(peer, session, FetchLog(volume_id, epoch, 0, 1 << 20))
    finally:
        peer.close()
    assert isinstance(log_records, LogRecords) and log_records.records, log_records
    last_seq, last_raw = log_records.records[-1]
    for node in cluster.nodes:
        counts = store_counts(node)
        peer, session = authed(node, secret)
        try:
            reply = roundtrip(peer, session, AppendLog(volume_id, epoch - 1, [(last_seq + 1, last_raw)]))
        finally:
            peer.close()
        assert isinstance(reply, Error) and reply.code == ErrorCode.STALE_EPOCH, (node, reply)
        assert reply.value == epoch, (node, reply)
        # (a node without a copy adopts an empty one to remember the epoch: no data)
        after = store_counts(node)
        assert {k: v for k, v in after.items() if k != "volumes"} == \
            {k: v for k, v in counts.items() if k != "volumes"}, (node, counts, after)


def test_node_with_wrong_secret_cannot_replicate(cluster_base: Path) -> None:
    """The only other node has another secret: open, write, fsync and close of a file in
    a replicas=2 volume all succeed instead of hanging (fsync gives up on the impostor
    after the replication timeout), the volume is degraded in inspect and status, and the
    impostor's log shows it refused the connection; it holds nothing of the volume."""
    with Cluster(cluster_base, replication_timeout=1.5) as cluster:
        cluster.start(2, secrets={1: os.urandom(24).hex().encode()})
        a, impostor = cluster.nodes
        create_volume(a)
        ma = mount(a)
        writer = Writer(ma, "f", cluster.base / "writer.json")
        try:
            writer.do("open", "write", "fsync", "close")
            taken = writer.result(timeout=120)  # bounds a hang only
        finally:
            writer.kill()
        assert taken == {"started": "ok", "open": "ok", "write": "ok", "fsync": "ok", "close": "ok"}, taken
        assert (ma / "f").read_bytes() == (WRITER_PIECE * WRITER_REPEAT).encode()
        repl = a.cli("volume", "inspect", VOLUME, json_out=True)["replication"]
        assert repl["degraded"], repl
        assert repl["replicas"] == {impostor.node_id: None}, repl
        assert VOLUME in a.cli("status", json_out=True)["cluster"]["degraded"]
        assert "degraded" in a.cli("status").stdout
        assert impostor.log_lines("refused")
        assert impostor.node_id in repl["failing"], repl  # a's side: the handshake never completes
        assert impostor.fsck()["counts"]["volumes"] == 0
        assert_clean(a)
