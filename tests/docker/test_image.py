"""The node daemon's image: built from the Dockerfile, run as Docker's volume plugin.

There is no image registry here, so the base is made locally: a Debian bookworm rootfs
(mmdebstrap, from Debian's packages) with python3 and what building pyfuse3 takes,
imported with ``docker import``. The build itself runs with no network: the Python
packages come from a wheelhouse made on the host with pip (pyfuse3 as its source, so the
image compiles it with its own gcc and libfuse3-dev, as it would on python:3.11-slim).
Both are cached in ``$CFS_TEST_CACHE`` (default /var/cache/cfs-test): the first run on a
machine spends about two minutes making the base, later runs none.

Not tested here: the Dockerfile on python:3.11-slim itself (it cannot be pulled), and
so its apt-get step, which this base makes unnecessary.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.docker.conftest import Engine, ensure_packages
from tests.node import detach_mounts_under, mounts_under
from tests.plugin_client import plugin_call

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CFS_TEST_CACHE", "/var/cache/cfs-test"))
BASE_PACKAGES = ("python3", "python3-venv", "python3-dev", "fuse3", "libfuse3-dev", "pkg-config", "gcc", "libc6-dev")
BASE_IMAGE = "cfs-test/debian-python:bookworm"
NODE_IMAGE = "cfs-test/cfs-node:latest"


def _cached(name: str, make: Callable[[Path], None]) -> Path:
    """``CACHE/name``, made by ``make(tmp_path)`` unless it is there; made whole or not at all."""
    target = CACHE / name
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = CACHE / f".{name}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.unlink(missing_ok=True)
        make(tmp)
        tmp.rename(target)
    return target


def base_tarball() -> Path:
    key = hashlib.sha256(" ".join(("bookworm", "minbase", *BASE_PACKAGES)).encode()).hexdigest()[:12]

    def make(tmp: Path) -> None:
        ensure_packages(("mmdebstrap",))
        done = subprocess.run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                               "bookworm", str(tmp.with_suffix(".tar"))], capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"mmdebstrap could not make the base image:\n{done.stderr[-4000:]}")
        tmp.with_suffix(".tar").rename(tmp)

    return _cached(f"base-{key}.tar", make)


def wheelhouse() -> Path:
    """The project's dependencies as wheels, pyfuse3 as its source plus what building it takes,
    and what generating the CSI stubs takes (the csi-build extra, which the Dockerfile installs)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = sorted([*project["project"]["dependencies"], *project["build-system"]["requires"],
                     *project["project"]["optional-dependencies"]["csi-build"]])
    key = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]

    def make(tmp: Path) -> None:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "-d", str(tmp)]
        subprocess.run([*pip, "--no-binary", "pyfuse3", *wanted], check=True, capture_output=True, timeout=600)
        [sdist] = tmp.glob("pyfuse3-*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/pyproject.toml"))
            build_requires = tomllib.loads(tar.extractfile(member).read().decode())["build-system"]["requires"]
        subprocess.run([*pip, *build_requires, "wheel"], check=True, capture_output=True, timeout=600)

    return _cached(f"wheels-{key}", make)


@pytest.fixture(scope="module")
def node_image(engine: Engine) -> Iterator[str]:
    engine.docker("import", str(base_tarball()), BASE_IMAGE, timeout=300)
    context = Path(tempfile.mkdtemp(prefix="cfs-ctx-"))
    try:
        for name in ("pyproject.toml", "README.md", "Dockerfile", ".dockerignore"):
            shutil.copy2(ROOT / name, context / name)
        for package in ("cfs", "mountd", "tools"):
            shutil.copytree(ROOT / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(wheelhouse(), context / "wheels")
        start = time.monotonic()
        engine.docker("build", "--network", "none", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                      "--build-arg", "PIP_OPTIONS=--no-index --find-links /src/wheels",
                      "-t", NODE_IMAGE, str(context), timeout=900)
        print(f"docker build took {time.monotonic() - start:.0f} s")
        yield NODE_IMAGE
    finally:
        shutil.rmtree(context, ignore_errors=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory that is a shared mount point, as ``-v DIR:DIR:rshared`` requires."""
    path = Path(tempfile.mkdtemp(prefix="cfs-img-"))
    path.chmod(0o755)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "--make-rshared", str(path)], check=True)
    try:
        yield path
    finally:
        detach_mounts_under(path)
        if not mounts_under(path):
            shutil.rmtree(path, ignore_errors=True)


def test_the_image_serves_volumes_to_other_containers(engine: Engine, node_image: str, shared_dir: Path) -> None:
    state, plugins = shared_dir / "state", shared_dir / "plugins"
    state.mkdir()
    plugins.mkdir()
    name = f"cfsimage{os.getpid()}"
    spec = Path("/etc/docker/plugins") / f"{name}.spec"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(f"unix://{plugins}/cfs.sock\n")
    # The README's line, with this test's directories for /var/lib/cfs and /run/docker/plugins.
    node = engine.out("run", "-d", "--network", "none", "--device", "/dev/fuse", "--cap-add", "SYS_ADMIN",
                      "--security-opt", "apparmor=unconfined", "-v", f"{state}:{state}:rshared",
                      "-v", f"{plugins}:/run/docker/plugins", node_image,
                      "--data-dir", str(state), "--plugin-socket", "/run/docker/plugins/cfs.sock")
    try:
        deadline = time.monotonic() + 60
        while not (plugins / "cfs.sock").exists():
            assert engine.out("inspect", "-f", "{{.State.Running}}", node) == "true", engine.out("logs", node)
            assert time.monotonic() < deadline, engine.docker("logs", node).stderr.decode()
            time.sleep(0.2)
        assert plugin_call(plugins / "cfs.sock", "/Plugin.Activate") == (200, {"Implements": ["VolumeDriver"]})

        engine.out("volume", "create", "-d", name, "-o", "size=1G", "iv1")
        engine.run(["-v", "iv1:/data"], "sh", "-c", "seq 1 100000 > /data/numbers && sync")
        assert engine.run(["-v", "iv1:/data"], "sh", "-c", "tail -n 1 /data/numbers").stdout == b"100000\n"
        listed = engine.out("exec", node, "cfs", "--data-dir", str(state), "volume", "ls")
        assert "iv1" in listed
        assert engine.out("volume", "rm", "iv1") == "iv1"

        engine.out("stop", "-t", "30", node)
        assert engine.out("inspect", "-f", "{{.State.ExitCode}}", node) == "0", engine.docker("logs", node).stderr
        assert [m for m in mounts_under(state)] == [], "the daemon's mounts went with it, on the host too"
    finally:
        engine.docker("rm", "-f", node, check=False)
        spec.unlink(missing_ok=True)
