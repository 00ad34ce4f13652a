"""The C extension behind fallocate and O_TMPFILE (cfs.fuse.lowlevel) is built and is
what this process's global symbol scope resolves libfuse's two wrapped functions to.
(Requests reaching it are tested through real mounts: tests/posix, tests/mount.)"""

from __future__ import annotations

from cfs.fuse import lowlevel


def test_the_extension_is_loaded_and_global() -> None:
    assert lowlevel._unavailable is None
    assert lowlevel._ext is not None
    status = lowlevel._ext.status()
    assert status["session_new_bound"] and status["process_buf_bound"]


def test_without_a_session_nothing_is_served() -> None:
    what = lowlevel.served(lowlevel.sessions())
    assert not what.fallocate and not what.tmpfile
    assert what.reason == "pyfuse3 did not make its session through the wrapper"
