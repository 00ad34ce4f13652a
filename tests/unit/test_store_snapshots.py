"""Snapshots read in other threads (``Store.reading``) and growth of the LMDB map.

LMDB may remap (grow) the map only while no transaction of the process is open: a
snapshot open in a worker thread (fsck's check, a whole-volume copy) would read freed
address space. The store grows the map at a commit, and not while a snapshot is
registered. These tests make growth due by shrinking the map of a real store, and
hold a reader in a thread at the exact points that matter, by events, not by luck.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import lmdb

from cfs.fs import Caller, Filesystem
from cfs.store import Store, Table

MiB = 1 << 20


def map_size(store: Store) -> int:
    return int(store.env.info()["map_size"])


def make_growth_due(store: Store, fs: Filesystem) -> None:
    """Shrink the map to a little above what is used, then fill it past three quarters
    (uncommitted): the next commit finds growth due."""
    store.commit()
    used = (int(store.env.info()["last_pgno"]) + 1) * store.page_size()
    store.env.set_mapsize(used + 4 * MiB)
    fs.create_volume("filler", block_size=65536)
    ino = fs.create(fs.lookup(1, b"filler").ino, b"f", 0o644, Caller()).ino
    for n in range(48):  # 3 MiB of distinct blocks
        fs.write(ino, n * 65536, bytes([n + 1]) * 65536)


class PausingEnv:
    """The store's real environment, with a pause right after a read-only transaction
    begins: the reader is then inside LMDB's snapshot, before it returns to the store."""

    def __init__(self, env: lmdb.Environment) -> None:
        self._env = env
        self.opened = threading.Event()
        self.go = threading.Event()

    def begin(self, *args: Any, **kwargs: Any) -> lmdb.Transaction:
        txn = self._env.begin(*args, **kwargs)
        if not kwargs.get("write", False):
            self.opened.set()
            self.go.wait(10)
        return txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def test_the_map_does_not_grow_under_an_open_snapshot_and_grows_after(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    fs = Filesystem(store)
    try:
        make_growth_due(store, fs)
        before = map_size(store)
        inside, done = threading.Event(), threading.Event()
        seen: list[int] = []

        def reader() -> None:
            with store.reading() as view:
                seen.append(view.entries(Table.VOLUMES))
                inside.set()
                done.wait(10)

        worker = threading.Thread(target=reader)
        worker.start()
        try:
            assert inside.wait(10)
            store.commit()                    # growth is due, but a snapshot is open
            assert map_size(store) == before
        finally:
            done.set()
            worker.join(10)
        assert seen == [1]
        fs.write(fs.lookup(fs.lookup(1, b"filler").ino, b"f").ino, 0, b"x")
        store.commit()                        # no snapshot now: it grows
        assert map_size(store) > before
    finally:
        store.close()


def test_a_reader_counts_from_before_its_snapshot_opens(tmp_path: Path) -> None:
    """The race the registration order closes: a snapshot that LMDB has opened but the
    store has not yet counted must hold growth off too. The reader pauses inside LMDB's
    begin; the store's thread commits meanwhile (or waits for the reader to be counted);
    either way the map keeps its size while the snapshot is open."""
    store = Store(tmp_path / "store")
    fs = Filesystem(store)
    paused = PausingEnv(store.env)
    try:
        make_growth_due(store, fs)
        before = map_size(store)
        store.env = paused  # type: ignore[assignment]
        inside, done = threading.Event(), threading.Event()

        def reader() -> None:
            with store.reading():
                inside.set()
                done.wait(10)

        worker = threading.Thread(target=reader)
        worker.start()
        try:
            assert paused.opened.wait(10)     # the snapshot is open inside LMDB
            threading.Timer(0.2, paused.go.set).start()  # let the reader go on by itself
            store.commit()                    # growth due; the reader is paused or counted
            assert inside.wait(10)
            during = map_size(store)
        finally:
            paused.go.set()
            done.set()
            worker.join(10)
        assert during == before, "the map grew under an open snapshot"
        fs.write(fs.lookup(fs.lookup(1, b"filler").ino, b"f").ino, 0, b"x")
        store.commit()                        # no snapshot now: it grows
        assert map_size(store) > before
    finally:
        store.env = paused._env  # type: ignore[assignment]
        store.close()
