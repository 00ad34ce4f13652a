"""Filesystem semantics over the store, with no dependency on FUSE."""

from cfs.fs.attrs import Attr, Caller, SetAttr
from cfs.fs.core import DEFAULT_BLOCK_SIZE, Filesystem

__all__ = ["Attr", "Caller", "DEFAULT_BLOCK_SIZE", "Filesystem", "SetAttr"]
