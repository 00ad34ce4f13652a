"""What ``-o durability=`` means: what an fsync of a replicated volume promises.

fsync, fdatasync, fsyncdir and the close of a written file wait until every replica
acknowledged what was written, for at most ``--replication-timeout``. What happens when
one did not answer by then is the volume's choice, made when it is created:

* ``available`` (the default): the call succeeds on the nodes that answered (the writer
  at least) and the volume is marked *degraded*. Writers never stall for a lost node;
  an fsync'd byte may live on fewer nodes than ``replicas`` until the replica returns or
  is replaced.
* ``strict``: the call fails with EIO unless ``replicas`` nodes (the writer and
  ``replicas - 1`` others) acknowledged within the timeout: nothing is claimed durable
  that is not. The data stays stored on the writer and is shipped when a replica
  answers again; a later fsync succeeds once it has. Like Ceph's ``min_size`` equal to
  ``size``, except that Ceph blocks I/O until enough replicas are up, and cfs fails the
  call after the timeout instead of blocking for ever (docs/DESIGN.md, "Replication").

The option is kept with the volume's other options, in the catalog and in each copy's
record, as text; a volume without it is ``available``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from cfs.errors import UserError

OPTION = "durability"


class Durability(enum.Enum):
    AVAILABLE = "available"
    STRICT = "strict"


DEFAULT = Durability.AVAILABLE


def parse_durability(raw: Any) -> Durability:
    """The mode a ``durability=`` value names (case and surrounding blanks aside);
    UserError naming the modes for anything else."""
    text = str(raw).strip().lower()
    for mode in Durability:
        if mode.value == text:
            return mode
    raise UserError(f"option durability={raw!r} is not a durability mode: use "
                    f"{' or '.join(m.value for m in Durability)} (default {DEFAULT.value})")


def durability_of(options: Mapping[str, str]) -> Durability:
    """The mode that volume options (a catalog entry's, or a local record's) say."""
    raw = options.get(OPTION)
    return DEFAULT if raw is None else parse_durability(raw)
