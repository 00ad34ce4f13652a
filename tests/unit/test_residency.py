"""cfs.store.residency: unmapping the LMDB map's resident pages loses nothing, and the
store keeps them under its limit within one operation, not only at commits."""

from __future__ import annotations

import os
from pathlib import Path

from cfs.store import Store, StoreConfig, Table, residency
from tools.bench.procs import resident

MiB = 1 << 20


def _rss_file() -> int:
    """RssFile of this process from /proc/self/status: the reference the cheap reading is held to."""
    figures = resident(os.getpid())
    assert figures is not None
    return figures["RssFile"]


def test_released_pages_read_back_the_same(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", StoreConfig())
    try:
        values = {i.to_bytes(8, "big"): os.urandom(200_000) for i in range(40)}
        with store.op() as op:
            for key, value in values.items():
                op.put(Table.META, key, value, logged=False)
        store.commit()
        with store.op(adds_data=False) as op:
            assert all(bytes(op.get(Table.META, k)) == v for k, v in values.items())  # fault them in
        before = _rss_file()
        assert residency.release(store.path / "data.mdb") > 0
        assert _rss_file() < before
        with store.op(adds_data=False) as op:   # a read transaction open across the release too
            assert all(bytes(op.get(Table.META, k)) == v for k, v in values.items())
            residency.release(store.path / "data.mdb")
            assert all(bytes(op.get(Table.META, k)) == v for k, v in values.items())
    finally:
        store.close()


def test_statm_agrees_with_status(tmp_path: Path) -> None:
    """The cheap reading (statm) and RssFile from /proc/self/status describe the same pages."""
    pages = residency.MappedPages(tmp_path / "none", 1)
    try:
        status = _rss_file()
        statm = pages.resident_bytes()
        assert abs(statm - status) <= 4 * MiB, (statm, status)
    finally:
        pages.close()


def _fill(store: Store, count: int, size: int) -> list[bytes]:
    keys = [i.to_bytes(16, "big") for i in range(count)]
    for start in range(0, count, 64):
        with store.op() as op:
            for key in keys[start:start + 64]:
                op.put(Table.CHUNKS, key, os.urandom(size), logged=False)
        store.commit()
    return keys


def test_chunk_reads_in_an_operation_stay_under_the_limit(tmp_path: Path) -> None:
    limit = 32 * MiB
    store = Store(tmp_path / "s", StoreConfig(mapped_limit_bytes=limit))
    try:
        keys = _fill(store, 2048, 64 * 1024)       # 128 MiB of chunk values
        store.mapped.check()
        releases = store.mapped.releases
        peak = 0
        with store.op(adds_data=False) as op:      # one operation, no commit: 128 MiB read
            for n, key in enumerate(keys):
                assert op.get(Table.CHUNKS, key) is not None
                if n % 16 == 0:
                    peak = max(peak, store.mapped.resident_bytes())
        assert store.mapped.releases > releases
        # at most 32 values (2 MiB) and the pages faulted in around them between checks
        assert peak < limit + 16 * MiB, peak // MiB
    finally:
        store.close()


def test_reads_outside_operations_stay_mapped_until_the_next_check(tmp_path: Path) -> None:
    """A view's reads are not noted (a random reader would fault its chunks in again
    after every release); the next operation's check or commit releases them."""
    limit = 32 * MiB
    store = Store(tmp_path / "s", StoreConfig(mapped_limit_bytes=limit))
    try:
        keys = _fill(store, 2048, 64 * 1024)
        store.mapped.check()
        releases = store.mapped.releases
        view = store.view()
        for key in keys:
            assert view.get(Table.CHUNKS, key) is not None
        assert store.mapped.releases == releases
        assert store.mapped.resident_bytes() > limit
        store.commit()   # nothing to commit: the check runs all the same
        assert store.mapped.releases == releases + 1
        assert store.mapped.resident_bytes() < limit
    finally:
        store.close()


def test_without_a_limit_nothing_is_released(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", StoreConfig(mapped_limit_bytes=0))
    try:
        keys = _fill(store, 256, 64 * 1024)
        view = store.view()
        for key in keys:
            view.get(Table.CHUNKS, key)
        assert store.mapped.check() is False and store.mapped.releases == 0
    finally:
        store.close()


def test_a_long_range_scan_stays_under_the_limit(tmp_path: Path) -> None:
    """Rows of no chunk at all: an operation's scan is noted every 64 rows, so it is checked too."""
    limit = 16 * MiB
    store = Store(tmp_path / "s", StoreConfig(mapped_limit_bytes=limit))
    try:
        row = os.urandom(400)
        with store.op() as op:
            for i in range(160_000):                  # ~70 MiB of leaf pages
                op.put(Table.META, b"row-%08d" % i, row, logged=False)
        store.commit()
        peak = 0
        with store.op(adds_data=False) as op:
            for n, _row in enumerate(op.range(Table.META, b"row-", b"row-~")):
                if n % 500 == 0:
                    peak = max(peak, store.mapped.resident_bytes())
        assert n == 159_999
        assert peak < limit + 24 * MiB, peak // MiB
    finally:
        store.close()
