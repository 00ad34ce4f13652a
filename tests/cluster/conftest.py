"""Fixtures of the cluster tests: a real etcd on loopback.

* ``etcd``: one etcd for the whole session (tests keep apart by key prefix), stopped
  by PID at the end whatever happened;
* ``etcd_base``: a fresh short directory for a test that runs etcds of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd import Etcd

SHORT_TMP = Path(os.environ.get("CFS_TEST_TMP", "/tmp"))


def _short_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="cfs-etcd-", dir=SHORT_TMP))


@pytest.fixture(scope="session")
def etcd() -> Iterator[Etcd]:
    base = _short_dir()
    server = Etcd(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def etcd_base() -> Iterator[Path]:
    base = _short_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)
