"""A private Docker engine, and a cfs node serving it as a volume plugin.

``engine`` (one per test session) installs Debian's docker.io and busybox-static when
they are missing, starts its own dockerd (own data root, exec root, pidfile, socket and
config; no bridge, no iptables; its own containerd namespace), imports a tiny busybox
image with ``docker import`` (there is no registry here), and stops dockerd by its PID
at the end, removing every mount it left. If dockerd cannot start, every test that needs
it fails saying why: these tests are never skipped.

``plugin`` (one per module) is a cfs node whose plugin socket sits where dockerd looks
for plugins (``/run/docker/plugins/<name>.sock``), under a name of its own so that it
never shadows a real ``cfs`` plugin on the machine.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.node import Node, detach_mounts_under, mounts_under

PACKAGES = ("docker.io", "busybox-static")
DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"  # docker.io's own client, of the engine's version
BUSYBOX = "/bin/busybox"
IMAGE = "cfs-test/busybox:1"
PLUGIN_DIR = Path("/run/docker/plugins")


def ensure_packages(packages: tuple[str, ...] = PACKAGES) -> None:
    """Install the Debian packages of ``packages`` that are missing, or fail the test saying why."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(f"the Docker tests need {', '.join(missing)} installed, and only root can install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def _installed(package: str) -> bool:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return done.returncode == 0 and "install ok installed" in done.stdout


class Engine:
    """One dockerd of our own, and its client."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.host = f"unix://{base}/docker.sock"
        self.log_path = base / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(base / "client")}
        self.env.pop("DOCKER_CONTEXT", None)

    def start(self, storage_driver: str | None = None, timeout: float = 60) -> None:
        (self.base / "client").mkdir(exist_ok=True)
        (self.base / "daemon.json").write_text("{}")
        argv = [DOCKERD, "--config-file", str(self.base / "daemon.json"),
                "--data-root", str(self.base / "root"), "--exec-root", str(self.base / "exec"),
                "--pidfile", str(self.base / "dockerd.pid"), "--host", self.host,
                "--bridge=none", "--iptables=false", "--ip-masq=false",
                "--containerd-namespace", f"cfs-test-{os.getpid()}",
                "--containerd-plugins-namespace", f"cfs-test-{os.getpid()}-plugins"]
        if storage_driver:
            argv.append(f"--storage-driver={storage_driver}")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}:\n{self.log()}")
            if self.docker("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def docker(self, *args: str, check: bool = True, timeout: float = 120,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            output = (done.stderr + done.stdout[-2000:]).decode(errors="replace")
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{output}")
        return done

    def out(self, *args: str, **kwargs: Any) -> str:
        return self.docker(*args, **kwargs).stdout.decode().strip()

    def run(self, options: list[str], *command: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        """``docker run --rm --network none OPTIONS IMAGE COMMAND``."""
        return self.docker("run", "--rm", "--network", "none", *options, IMAGE, *command, **kwargs)

    def import_busybox(self) -> None:
        """A one-binary image: busybox-static and a link for each of its applets."""
        applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name in ("bin", "etc", "tmp", "proc", "sys", "dev"):
                info = tarfile.TarInfo(name)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in applets:
                if applet != "busybox":
                    info = tarfile.TarInfo(f"bin/{applet}")
                    info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                    tar.addfile(info)
            passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
            info = tarfile.TarInfo("etc/passwd")
            info.size = len(passwd)
            tar.addfile(info, io.BytesIO(passwd))
        self.docker("import", "--change", "ENV PATH=/bin", "-", IMAGE, input=buf.getvalue())

    def stop(self) -> None:
        """Remove our containers, SIGTERM dockerd (SIGKILL after 30 s), detach what it left mounted."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.out("ps", "-aq", check=False, timeout=30).split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=60)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        pid_file = self.base / "exec" / "containerd" / "containerd.pid"
        try:  # dockerd stops its containerd; if dockerd was killed, containerd is still there
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass
        detach_mounts_under(self.base)


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    ensure_packages()
    base = Path(tempfile.mkdtemp(prefix="cfs-dk-", dir="/tmp"))
    eng = Engine(base)
    try:
        try:
            eng.start()
        except RuntimeError as first:
            eng.stop()
            try:  # overlay2 does not work on every backing filesystem (overlay on overlay)
                eng.start(storage_driver="vfs")
            except RuntimeError as second:
                pytest.fail(f"dockerd cannot start on this machine.\nWith its default storage driver: "
                            f"{first}\nWith vfs: {second}", pytrace=False)
        eng.import_busybox()
        yield eng
    finally:
        eng.stop()
        if not mounts_under(base):
            shutil.rmtree(base, ignore_errors=True)


class Plugin:
    """A cfs node serving the plugin under ``name``, and shortcuts for its Docker side."""

    def __init__(self, node: Node, name: str, socket: Path) -> None:
        self.node = node
        self.name = name
        self.socket = socket

    def mountpoint(self, volume: str) -> Path:
        return (self.node.data_dir / "plugin-mounts" / volume).resolve()

    def binds(self, volume: str) -> int:
        """How many times the volume is bound at its plugin mount point (0 or 1, never more)."""
        where = str(self.mountpoint(volume))
        with open("/proc/self/mountinfo") as f:
            return sum(1 for line in f if line.split(" ")[4] == where)


@pytest.fixture(scope="module")
def plugin(engine: Engine) -> Iterator[Plugin]:
    name = f"cfstest{os.getpid()}"
    socket = PLUGIN_DIR / f"{name}.sock"
    base = Path(tempfile.mkdtemp(prefix="cfs-pl-", dir="/tmp"))
    base.chmod(0o755)
    node = Node(base, extra_args=["--plugin-socket", str(socket)])
    try:
        node.start()
        yield Plugin(node, name, socket)
    finally:
        node.cleanup()
        socket.unlink(missing_ok=True)
        if not mounts_under(base):
            shutil.rmtree(base, ignore_errors=True)
