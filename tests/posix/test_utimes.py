"""utimensat(2) and futimens(2): explicit times, UTIME_NOW, UTIME_OMIT.

Times keep their nanoseconds, and may lie before 1970 or far ahead. Setting explicit
times needs ownership; setting both to now needs only write permission. Any change
marks ctime with the current time.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from tests.posix.calls import (
    GROUP, OTHER_GROUP, OTHER_USER, USER, UTIME_NOW, UTIME_OMIT, age, errnos_as, fails, times, utimensat,
)
from tests.posix.conftest import Target

NS = 10**9


def test_explicit_times_keep_nanoseconds(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    for atime, mtime in ((1_234_567_890_123_456_789, 987_654_321_000_000_001),
                         (-123_456_789_987_654_321, -1),  # before 1970
                         (4_102_444_800 * NS + 999_999_999, 0),  # 2100, and the epoch itself
                         ((1 << 63) - 1, -(1 << 63))):  # the ends of what cfs stores: 2262, 1677
        before = times(fsdir / "f")
        time.sleep(0.01)
        os.utime(fsdir / "f", ns=(atime, mtime))
        after = times(fsdir / "f")
        assert after[:2] == (atime, mtime)
        assert after[2] > before[2]


def test_times_beyond_what_cfs_stores(fsdir: Path, target: Target) -> None:
    (fsdir / "f").write_bytes(b"")
    late, early = 253_402_300_799 * NS + 5, -(1 << 63) - 5 * NS  # the last second of 9999; 1677
    os.utime(fsdir / "f", ns=(late, early))
    if target.kind == "cfs":
        # Divergence: cfs stores times as signed 64-bit nanoseconds and clamps others to
        # that range, as Linux does for its own filesystems of narrower range (ext4: 1901
        # to 2446); FUSE has no way to tell the kernel the range, which would clamp itself.
        assert times(fsdir / "f")[:2] == ((1 << 63) - 1, -(1 << 63))
    else:
        assert times(fsdir / "f")[:2] == (late, early)


def test_now(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    age(fsdir / "f")
    start = time.time_ns()
    os.utime(fsdir / "f")
    atime, mtime, ctime = times(fsdir / "f")
    assert atime == mtime and ctime >= mtime
    assert start - 10**8 <= mtime <= time.time_ns() + 10**8  # the clock the kernel's time comes from is coarse


def test_omit_and_now(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.utime(fsdir / "f", ns=(5 * NS + 5, 6 * NS + 6))
    utimensat(fsdir / "f", (0, UTIME_OMIT), (7, 7))
    assert times(fsdir / "f")[:2] == (5 * NS + 5, 7 * NS + 7)
    utimensat(fsdir / "f", (8, 8), (0, UTIME_OMIT))
    assert times(fsdir / "f")[:2] == (8 * NS + 8, 7 * NS + 7)
    start = time.time_ns() - 10**8
    utimensat(fsdir / "f", (0, UTIME_NOW), (0, UTIME_OMIT))
    atime, mtime, _ = times(fsdir / "f")
    assert atime >= start and mtime == 7 * NS + 7
    utimensat(fsdir / "f", (9, 9), (0, UTIME_NOW))
    atime, mtime, _ = times(fsdir / "f")
    assert atime == 9 * NS + 9 and mtime >= start


def test_both_omitted_changes_nothing(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    age(fsdir / "f")
    before = times(fsdir / "f")
    utimensat(fsdir / "f", (0, UTIME_OMIT), (0, UTIME_OMIT))
    assert times(fsdir / "f") == before


def test_through_a_descriptor_and_on_directories(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    fd = os.open(fsdir / "f", os.O_RDONLY)
    try:
        os.utime(fd, ns=(11, 12))
    finally:
        os.close(fd)
    assert times(fsdir / "f")[:2] == (11, 12)
    os.mkdir(fsdir / "d")
    os.utime(fsdir / "d", ns=(13, 14))
    assert times(fsdir / "d")[:2] == (13, 14)


def test_invalid_nanoseconds_are_einval(fsdir: Path) -> None:
    (fsdir / "f").write_bytes(b"")
    os.utime(fsdir / "f", ns=(1, 2))
    fails(errno.EINVAL, utimensat, fsdir / "f", (0, NS), (0, 0))
    fails(errno.EINVAL, utimensat, fsdir / "f", (0, 0), (0, -5))
    fails(errno.ENOENT, os.utime, fsdir / "missing", ns=(1, 2))
    assert times(fsdir / "f")[:2] == (1, 2)


def test_permissions_as_user(fsdir: Path) -> None:
    for name, owner, mode in (("mine", USER, 0o644), ("shared", OTHER_USER, 0o666),
                              ("closed", OTHER_USER, 0o644)):
        (fsdir / name).write_bytes(b"")
        os.chown(fsdir / name, owner, OTHER_GROUP if owner == OTHER_USER else GROUP)
        os.chmod(fsdir / name, mode)
    got = errnos_as([
        "os.utime(D + '/mine', ns=(1, 2))",
        "os.utime(D + '/shared')",  # now, with write permission: allowed
        "os.utime(D + '/shared', ns=(1, 2))",
        "os.utime(D + '/closed')",
        "os.utime(D + '/closed', ns=(1, 2))",
    ], D=str(fsdir))
    assert got == ["success", "success", "EPERM", "EACCES", "EPERM"]
    assert times(fsdir / "mine")[:2] == (1, 2)
