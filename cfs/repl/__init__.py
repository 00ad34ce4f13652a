"""Replication between nodes.

``wire`` (frames and message layouts) and ``session`` (one connection's state machine:
handshake, authentication, framed messages) are sans-IO: bytes in, events out, no
sockets and no trio, so the whole protocol is tested and fuzzed without a network, in
the manner of h11. ``placement`` computes which nodes hold a key (rendezvous hashing).
The I/O layer (links, timeouts, back-pressure) drives sessions over trio streams.
"""
