"""A bounded cache of verified chunk bytes, least recently used out first.

Chunks are content-addressed: an id names one sequence of bytes forever. Bytes that were
read and hashed once can therefore be handed out again without touching LMDB or the
hash: no transaction, rollback, heal or deletion can make a cached entry wrong. (A chunk
deleted from the store may still be served from here to a block that names it; those
are its right bytes.) So nothing but the memory bound ever removes an entry.

What it buys: a 4 KiB read inside a 64 KiB block loads and hashes the whole chunk; the
next reads of that block, sequential or random, are served from here.

Only bytes that passed verification enter (``chunks.get`` puts them after the hash
check); damaged chunks are never cached, so they fail every read.

Owner: ``Store`` (one per node, ``StoreConfig.chunk_cache_bytes``). Concurrency: used
from the thread that owns the store only, like its write batch; no locking.
"""

from __future__ import annotations

from collections import OrderedDict

from cfs.types import ChunkId


class ChunkCache:
    """Chunk bytes by id, at most ``limit_bytes`` of them (0 disables the cache)."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[ChunkId, bytes] = OrderedDict()

    def get(self, cid: ChunkId) -> bytes | None:
        data = self._entries.get(cid)
        if data is None:
            self.misses += 1
            return None
        self._entries.move_to_end(cid)
        self.hits += 1
        return data

    def put(self, cid: ChunkId, data: bytes) -> None:
        """Keep verified ``data`` under ``cid``."""
        size = len(data)
        if size > self.limit_bytes:
            return
        old = self._entries.pop(cid, None)
        if old is not None:
            self.bytes -= len(old)
        self._entries[cid] = data
        self.bytes += size
        while self.bytes > self.limit_bytes:
            _cid, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0

    def statistics(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.bytes, "limit_bytes": self.limit_bytes,
                "hits": self.hits, "misses": self.misses}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, cid: object) -> bool:
        return cid in self._entries
