"""cfs.store.residency: unmapping the LMDB map's resident pages loses nothing."""

from __future__ import annotations

import os
from pathlib import Path

from cfs.store import Store, StoreConfig, Table, residency


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
        assert store.release_mapped_pages(above=1 << 50) is False
    finally:
        store.close()
