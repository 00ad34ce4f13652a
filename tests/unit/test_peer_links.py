"""Peer connections (mountd.cluster.links) over real loopback sockets."""

from __future__ import annotations

import socket
import struct

import trio

from cfs.repl.session import Session
from cfs.types import NodeId
from mountd.cluster.links import LinkCounters, PeerConnection

SECRET = b"s" * 32


def test_a_peer_that_resets_the_connection_ends_it_and_nothing_else() -> None:
    """A peer that closes with bytes of ours unread resets the connection (RST): the
    reader sees ECONNRESET. It ends that connection, quietly: it used to escape the
    reader's nursery as an ExceptionGroup and stop the whole node (three nodes stopped
    at the same moment did this to each other)."""
    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        peer = await listeners[0].accept()
        counters = LinkCounters()
        conn = PeerConnection(stream, Session("initiator", NodeId(b"a" * 16), SECRET, cluster="t"), "peer",
                              counters=counters, direction="out")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run, None)
            await stream.send_all(b"bytes the peer never reads")
            await trio.sleep(0.05)
            peer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await peer.aclose()  # with unread bytes (and a zero linger): RST
            with trio.fail_after(5):
                await conn.closed.wait()
        assert counters.open["out"] == 0
        for listener in listeners:
            await listener.aclose()
    trio.run(main)
