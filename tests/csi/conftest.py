"""Fixtures of the CSI tests: real node daemons with ``cfs csi`` beside them, every
process stopped by its PID and every mount detached at the end, whatever happened.

* ``csi``: one daemon and one plugin (mode both) for a whole module, as csi-sanity runs
  its cases against one driver; the tests of such a module use names of their own and
  leave nothing mounted;
* ``plugin``: a daemon and a plugin of its own for one test (``tests.conftest.node``);
* ``workdir``: a directory of the test's own under the module's, for staging and target
  paths.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.csi.plugin import Plugin
from tests.node import Node, detach_mounts_under, mounts_under

SHORT_TMP = Path(os.environ.get("CFS_TEST_TMP", "/tmp"))
_dirs = itertools.count()


@contextlib.contextmanager
def running(base: Path, *, mode: str = "both") -> Iterator[Plugin]:
    """A daemon on ``base/data`` and a plugin for it; both stopped, and everything under
    ``base`` unmounted, on the way out."""
    daemon = Node(base)
    plugin = Plugin(daemon, base, mode=mode)
    try:
        daemon.start()
        yield plugin.start()
    finally:
        plugin.stop()
        plugin.kill()
        daemon.cleanup()
        detach_mounts_under(base)


@pytest.fixture(scope="module")
def csi() -> Iterator[Plugin]:
    base = Path(tempfile.mkdtemp(prefix="cfs-csi-", dir=SHORT_TMP))
    base.chmod(0o755)
    with running(base) as plugin:
        yield plugin
    if not mounts_under(base):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def workdir(csi: Plugin) -> Path:
    path = csi.base / f"t{next(_dirs)}"
    path.mkdir()
    return path


@pytest.fixture
def plugin(node: Node, short_tmp: Path) -> Iterator[Plugin]:
    started = Plugin(node, short_tmp)
    try:
        yield started.start()
    finally:
        started.stop()
        started.kill()
