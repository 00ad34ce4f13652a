"""mount.cfs's reading of what mount(8) passes it (tools/mount_helper.py), without a daemon.

The mounts themselves, through mount(8) and umount(8), are in tests/mount/test_mount_helper.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import mount_helper
from tools.mount_helper import Request, UsageError, parse


def test_plain() -> None:
    assert parse(["data", "/srv/data"]) == Request("data", "/srv/data")


def test_what_mount8_passes_for_an_fstab_line() -> None:
    """``data /srv/data fuse.cfs defaults,_netdev 0 0``, and the flags mount(8) adds."""
    request = parse(["data", "/srv/data", "-n", "-o", "rw,defaults,_netdev,nofail,noauto,user,x-systemd.automount,"
                     "x-systemd.requires=cfs.service,comment=x,user=alice,relatime,noatime,nosuid,nodev,async",
                     "-t", "fuse.cfs"])
    assert request == Request("data", "/srv/data")


def test_read_only_and_data_dir() -> None:
    assert parse(["v", "/m", "-o", "ro,data_dir=/srv/cfs"]) == Request("v", "/m", read_only=True,
                                                                      data_dir=Path("/srv/cfs"))
    assert parse(["-r", "v", "/m"]).read_only
    assert not parse(["v", "/m", "-o", "ro", "-o", "rw"]).read_only  # the last word counts, as in mount(8)
    assert parse(["v", "/m", "-o", "rw,ro"]).read_only


def test_flags() -> None:
    request = parse(["v", "/m", "-f", "-v", "-s", "-n"])
    assert request.fake and request.verbose
    assert parse(["v@snap", "/m", "-t", "cfs"]).volume == "v@snap"


@pytest.mark.parametrize("argv, message", [
    (["v"], "usage"),
    (["v", "/m", "extra"], "usage"),
    (["v", "/m", "-x"], "option -x not recognized"),
    (["v", "/m", "-o", "colour=blue"], "unknown option 'colour=blue'"),
    (["v", "/m", "-o", "data_dir="], "needs a directory"),
    (["v", "/m", "-o", "noexec"], "noexec"),
    (["v", "/m", "-o", "suid"], "nosuid"),
    (["v", "/m", "-o", "sync"], "synchronous"),
    (["v", "/m", "-t", "ext4"], "not cfs's"),
    (["v", "/m", "-N", "/proc/1/ns/mnt"], "namespace"),
    (["bad/name", "/m"], "not a volume name"),
])
def test_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(argv)


def test_a_name_mount8_made_a_path_is_a_name_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mount(8) passes /WD/data for ``data`` when WD, its working directory, has an entry
    ``data`` (resolved, if a symbolic link)."""
    wd, disk = tmp_path / "wd", tmp_path / "disk1"
    (wd / "data").mkdir(parents=True)
    disk.mkdir()
    (wd / "linked").symlink_to(disk)  # as /data -> /mnt/disk1
    monkeypatch.chdir(wd)
    assert parse([str(wd / "data"), "/m"]).volume == "data"
    assert parse([str(disk), "/m"]).volume == "linked"
    monkeypatch.chdir("/")
    with pytest.raises(UsageError, match="not a volume name"):
        parse([str(wd / "data"), "/m"])  # a path that is no name of the working directory


def test_sloppy_drops_unknown_options_not_refused_ones() -> None:
    assert parse(["v", "/m", "-s", "-o", "colour=blue,ro"]) == Request("v", "/m", read_only=True)
    with pytest.raises(UsageError, match="noexec"):
        parse(["v", "/m", "-s", "-o", "noexec"])


def test_exit_statuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """mount(8)'s: 1 for a wrong invocation, 32 for a mount that failed; one line each."""
    assert mount_helper.main(["v", "/m", "-o", "colour=blue"]) == mount_helper.USAGE_ERROR
    assert capsys.readouterr().err.count("\n") == 1
    assert mount_helper.main(["v", str(tmp_path), "-o", f"data_dir={tmp_path}"]) == mount_helper.MOUNT_FAILURE
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and "daemon is not running" in out.err
