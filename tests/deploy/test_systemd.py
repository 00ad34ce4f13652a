"""deploy/systemd/: the unit passes ``systemd-analyze verify`` and says what cfs needs.

``verify`` needs the unit's binaries to exist, so it checks a copy of the unit whose
``/usr/local/bin/cfs`` is this checkout's ``.venv/bin/cfs`` (what tools/bootstrap.sh
builds; the README links it to /usr/local/bin). It reports unknown keys and bad values
on stderr with exit status 0, so any output fails the test. The keys that make the
service stop cleanly (ordering, KillMode, timeouts) are checked against cfs's own
defaults and command line.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from mountd.cluster.stopping import DEFAULT_STOP_TIMEOUT
from tests.deploy.kube import ROOT
from tests.node import CFS
from tools import cli

UNIT = ROOT / "deploy" / "systemd" / "cfs.service"
ENV = ROOT / "deploy" / "systemd" / "cfs.env"
INSTALLED = "/usr/local/bin/cfs"
TEARDOWN = 10
"""Seconds a stop may take beyond --stop-timeout: unmounting, closing the store, exiting."""


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values, in order]}}; a key may repeat (systemd's lists)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"a key outside any section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not KEY=VALUE: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)\s*(s|min)?", value)
    assert match, f"not a duration in seconds or minutes: {value}"
    return int(match[1]) * (60 if match[2] == "min" else 1)


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT.read_text())


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: tools/bootstrap.sh --test installs systemd")
    text = UNIT.read_text()
    assert INSTALLED in text
    rendered = tmp_path / "cfs.service"
    rendered.write_text(text.replace(INSTALLED, CFS))
    result = subprocess.run(["systemd-analyze", "verify", str(rendered)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        f"systemd-analyze verify: exit {result.returncode}\n{result.stdout}{result.stderr}"


def test_ordering_after_the_network_and_before_docker(unit: dict[str, dict[str, list[str]]]) -> None:
    section = unit["Unit"]
    assert "network-online.target" in " ".join(section["Wants"]).split()
    assert "network-online.target" in " ".join(section["After"]).split()
    assert "docker.service" in " ".join(section["Before"]).split()
    assert one(unit["Install"], "WantedBy") == "multi-user.target"


def test_start_and_stop_commands_are_cfs_own(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    start = shlex.split(one(service, "ExecStart"))
    assert start[:3] == [INSTALLED, "node", "run"]
    stop = shlex.split(one(service, "ExecStop").lstrip("-"))
    assert stop[:3] == [INSTALLED, "node", "stop"]
    parsed = cli.build_parser().parse_args(stop[1:])  # cfs's own parser takes it
    assert parsed.node_command == "stop"
    assert parsed.timeout > DEFAULT_STOP_TIMEOUT + TEARDOWN / 2, "ExecStop gives up before the daemon's bound"
    assert seconds(one(service, "TimeoutStopSec")) > parsed.timeout, "systemd kills before ExecStop gives up"
    assert seconds(one(service, "TimeoutStopSec")) >= DEFAULT_STOP_TIMEOUT + TEARDOWN
    assert one(service, "Type") == "notify"  # the daemon sends READY=1 (mountd.daemon._notify)


def test_kill_restart_and_limits(unit: dict[str, dict[str, list[str]]]) -> None:
    service = unit["Service"]
    assert one(service, "KillMode") == "mixed"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "Restart") == "on-failure"
    assert int(one(service, "LimitNOFILE")) >= 65536
    for key in ("PrivateDevices", "PrivateMounts", "ProtectSystem", "MountFlags", "ProtectKernelModules"):
        assert key not in service, f"{key} keeps FUSE or its mounts from working"


def test_the_environment_file_is_what_the_unit_reads(unit: dict[str, dict[str, list[str]]]) -> None:
    assert one(unit["Service"], "EnvironmentFile") == "-/etc/default/cfs"
    assignments = [line for line in ENV.read_text().splitlines() if line and not line.startswith("#")]
    assert assignments == ["CFS_ARGS="]
    for example in re.findall(r"^#CFS_ARGS=(.*)$", ENV.read_text(), re.MULTILINE):
        cli.build_parser().parse_args(["node", "run", *shlex.split(example)])  # the daemon's parser takes it
