"""The one place cfs hashes chunk bytes: xxh3-128, 16 bytes, used as the chunk's key.

xxh3 is not cryptographic; it is chosen for speed (GB/s on one core) and a collision
probability that is negligible for accidental collisions. Chunks are verified against it
on every read, which is what protects against silent corruption.
"""

from __future__ import annotations

import xxhash

from cfs.types import ChunkId

DIGEST_SIZE = 16


def chunk_id(data: bytes | memoryview) -> ChunkId:
    return ChunkId(xxhash.xxh3_128_digest(data))
