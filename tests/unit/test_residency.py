"""cfs.store.residency: unmapping the LMDB map's resident pages loses nothing, and the
store keeps them under its limit within one operation, not only at commits."""

from __future__ import annotations

import os
from pathlib import Path

from cfs.store import Store, StoreConfig, Table, residency

MiB = 1 << 20


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
        before = residency.mapped_file_bytes()
        assert residency.release(store.path / "data.mdb") > 0
        assert residency.mapped_file_bytes() < before
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
        status = residency.mapped_file_bytes()
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


def test_chunk_reads_between_commits_stay_under_the_limit(tmp_path: Path) -> None:
    limit = 32 * MiB
    store = Store(tmp_path / "s", StoreConfig(mapped_limit_bytes=limit))
    try:
        keys = _fill(store, 2048, 64 * 1024)       # 128 MiB of chunk values
        store.mapped.check()
        releases = store.mapped.releases
        peak = 0
        view = store.view()                        # one read, no commit: 128 MiB faulted in
        for n, key in enumerate(keys):
            assert view.get(Table.CHUNKS, key) is not None
            if n % 16 == 0:
                peak = max(peak, store.mapped.resident_bytes())
        assert store.mapped.releases > releases
        # at most 32 values (2 MiB) and the pages faulted in around them between checks
        assert peak < limit + 16 * MiB, peak // MiB
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


def _vm_flags(path: Path) -> list[list[str]]:
    """The VmFlags of every mapping of ``path`` in this process (/proc/self/smaps)."""
    flags, inside = [], False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
                inside = line.rstrip("\n").endswith(str(path))
            elif inside and line.startswith("VmFlags:"):
                flags.append(line.split()[1:])
    return flags


def test_the_map_is_mapped_in_small_pages(tmp_path: Path) -> None:
    """A fault must not map a whole 2 MiB folio of data.mdb: the map is MADV_NOHUGEPAGE."""
    store = Store(tmp_path / "s", StoreConfig())
    try:
        flags = _vm_flags(store.path / "data.mdb")
        assert flags and all("nh" in f for f in flags), flags
    finally:
        store.close()


def test_a_long_range_scan_stays_under_the_limit(tmp_path: Path) -> None:
    """Rows of no chunk at all: a scan is noted every 64 rows, so it is checked too."""
    limit = 16 * MiB
    store = Store(tmp_path / "s", StoreConfig(mapped_limit_bytes=limit))
    try:
        row = os.urandom(400)
        with store.op() as op:
            for i in range(160_000):                  # ~70 MiB of leaf pages
                op.put(Table.META, b"row-%08d" % i, row, logged=False)
        store.commit()
        peak = 0
        for n, _row in enumerate(store.view().range(Table.META, b"row-", b"row-~")):
            if n % 500 == 0:
                peak = max(peak, store.mapped.resident_bytes())
        assert n == 159_999
        assert peak < limit + 24 * MiB, peak // MiB
    finally:
        store.close()
