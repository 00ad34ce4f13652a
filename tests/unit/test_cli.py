"""The ``cfs`` command line: how its arguments are parsed into the daemon's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from mountd.main import config_from
from tools import cli


@pytest.mark.parametrize("argv", [
    ["--data-dir", "/srv/a", "node", "run"],
    ["node", "--data-dir", "/srv/a", "run"],
    ["node", "run", "--data-dir", "/srv/a"],
])
def test_node_run_takes_the_data_dir_wherever_it_is_given(argv: list[str]) -> None:
    # A subparser's default used to overwrite the --data-dir given before ``node run``:
    # the daemon then served /var/lib/cfs while the user's commands asked /srv/a.
    args = cli.build_parser().parse_args(argv)
    assert config_from(args).data_dir == Path("/srv/a")


def test_node_run_without_a_data_dir_takes_cfs_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFS_DATA_DIR", "/srv/from-env")
    args = cli.build_parser().parse_args(["node", "run"])
    assert config_from(args).data_dir == Path("/srv/from-env")


def test_inspect_shows_nothing_as_a_dash_and_flags_as_words(capsys: pytest.CaptureFixture[str]) -> None:
    # What a new user saw: "degraded: None", an empty "options:" header, a blank address.
    cli.print_mapping({"options": {}, "replication": {"degraded": None, "fenced": False},
                       "writer": {"address": "", "alive": True}, "mountpoints": []})
    assert capsys.readouterr().out.splitlines() == [
        "options: -", "replication:", "  degraded: no", "  fenced: no",
        "writer:", "  address: -", "  alive: yes", "mountpoints: -"]


def test_inspect_shows_why_a_volume_is_degraded(capsys: pytest.CaptureFixture[str]) -> None:
    cli.print_mapping({"degraded": "replica b did not acknowledge within 10 s", "options": {"size": "1G"}})
    assert capsys.readouterr().out.splitlines() == [
        "degraded: replica b did not acknowledge within 10 s", "options:", "  size: 1G"]
