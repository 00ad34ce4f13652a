"""Fixtures of the unit tests: a real LMDB store in tmp_path, its Filesystem, a volume.

No FUSE, no mocks. The volume has 4096-byte blocks so that small data crosses block
boundaries. Fixtures:

* ``store_path``: where the store lives (a directory under tmp_path);
* ``store``: a ``Store`` there, closed (and so committed) at teardown;
* ``fs``: a ``Filesystem`` over ``store``;
* ``vol``: a ``unit_support.Vol``, the volume ``vol`` (slot 1) with ``BLOCK_SIZE`` blocks,
  without replicas (it keeps no change-log records, cfs.store.changelog.append), or
  replicated from its creation on (it keeps every record, from 1, the root directory,
  until replicas acknowledge them) when the test is marked ``@pytest.mark.replicated``;
  at teardown, before the store closes, a full check of the store must find nothing
  (``unit_support.check_at_teardown``; the markers ``damages_store`` and ``closes_store``
  are the only ways out, and each says why);
* ``small_disk``: a 64 MiB tmpfs mounted for the test and unmounted after it (root only).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from cfs.fs import Filesystem
from cfs.store import Store, StoreConfig

from unit_support import BLOCK_SIZE, Vol, check_at_teardown, marked_replicated


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "replicated: the test's volume (fixture vol, or tree in test_check) is created "
        "replicated, so that it keeps its change log")
    config.addinivalue_line(
        "markers", "damages_store(reason, finds=(kind, ...)): the test leaves the store damaged on "
        "purpose; the teardown check (fixture vol, or tree in test_check) must find exactly these kinds")
    config.addinivalue_line(
        "markers", "closes_store(reason): the test closes the store itself; the teardown check "
        "(fixture vol, or tree in test_check) has nothing open to check")


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    store = Store(store_path, StoreConfig())
    yield store
    store.close()  # a no-op when the test closed it already


@pytest.fixture
def fs(store: Store) -> Filesystem:
    return Filesystem(store)


@pytest.fixture
def vol(request: pytest.FixtureRequest, store: Store, fs: Filesystem) -> Iterator[Vol]:
    yield Vol(store, fs, fs.create_volume("vol", block_size=BLOCK_SIZE, replicated=marked_replicated(request)))
    check_at_teardown(request, store)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, so that the disk under a store can really fill up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mountpoint)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)
