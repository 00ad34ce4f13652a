"""Fixtures of the cluster tests: a real etcd on loopback.

* ``etcd``: one etcd for the whole session (tests keep apart by key prefix), stopped
  by PID at the end whatever happened;
* ``etcd_base``: a fresh short directory for a test that runs etcds of its own;
* ``cluster``: an etcd of its own and three node daemons, for one test (``tests.cluster.cluster``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.cluster import Cluster
from tests.etcd import Etcd
from tests.node import mounts_under

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


@pytest.fixture
def cluster_base() -> Iterator[Path]:
    """A fresh short directory for a ``tests.cluster.cluster.Cluster``; kept if anything is
    still mounted below it, so a cleanup can never reach into a live volume."""
    base = Path(tempfile.mkdtemp(prefix="cfs-cl-", dir=SHORT_TMP))
    base.chmod(0o755)
    yield base
    if not mounts_under(base):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster(request: pytest.FixtureRequest, cluster_base: Path) -> Iterator[Cluster]:
    """A real etcd and three node daemons (a, b, c) on loopback; all stopped by PID after.
    Indirect parameters are keyword arguments of ``Cluster`` (e.g. ``{"lease_ttl": 30}``)."""
    with Cluster(cluster_base, **getattr(request, "param", {})) as running:
        running.start(3)
        yield running
