"""Types of the C extension cfs/fuse/_lowlevel.c (see cfs.fuse.lowlevel)."""

from typing import Callable, TypedDict

class Status(TypedDict):
    session_new_bound: bool
    process_buf_bound: bool
    sessions: int
    requests: int
    tmpfiles: int

def arm(fallocate: Callable[[int, int, int, int, int, int], None], /) -> None: ...
def disarm() -> None: ...
def reply_err(req: int, err: int, /) -> int: ...
def status() -> Status: ...
