"""Volume size limits: what ``-o size=`` means.

A volume made with a size looks like a disk of that size to its writers: the bytes it
holds (the sum of its files' st_blocks * 512, ``VolumeState.used_bytes``) may not grow
beyond the size. An operation that would take them past it fails whole with ENOSPC;
operations that free space (unlink, truncate, overwriting with zeros) always run. The
filesystem core enforces it (``Filesystem.write`` and ``flush``); this module only reads
the option. A size of 0, or none, is no limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from cfs.codec import VolumeRecord
from cfs.errors import UserError

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgtpe])(?:i?b)?|b)?", re.IGNORECASE)
_UNITS = " kmgtpe"


def parse_size(raw: Any) -> int:
    """Bytes from ``4096``, ``512k``, ``10M``, ``1.5G``, ``1GiB`` or ``1GB``: binary units
    (1K = 1024), as Docker reads sizes; ``0`` is "no limit"."""
    match = _SIZE.fullmatch(str(raw).strip())
    if match is None:
        raise UserError(f"option size={raw!r} is not a size like 10G, 512M or 1073741824 (0: no limit)")
    unit = (match.group(2) or " ").lower()
    return int(Fraction(match.group(1)) * 1024 ** _UNITS.index(unit))


def size_limit(record: VolumeRecord) -> int:
    """The volume's size limit in bytes; 0 when it has none."""
    return limit_of(record.options)


def limit_of(options: Mapping[str, str]) -> int:
    """The size limit that volume options (a catalog entry's, or a local record's) say; 0: none."""
    raw = options.get("size")
    if raw is None:
        return 0
    return int(raw) if raw.isdigit() else parse_size(raw)
