"""The cluster record: a random cluster id, stored durably in the replicated state.

The founder's first leader proposes it as a compare-and-swap on a reserved KV key that
must not exist yet (so however many times it is proposed, by whichever leader, only the
first one lands)::

    \\x00raftd/cluster = {"id": "<16 hex>", "founded_ms": <founder's wall clock>,
                          "founder": "<peer id>"}

Replicated like any entry, snapshotted with the state machine, so every member that has
caught up knows its cluster id, also after a restart. ``founded_ms`` orders clusters for
merging (older wins); it is only ever compared, never used as a clock.

"User writes": anything applied to the state machine besides the record itself: the
store revision counts every applied command that changed keys, and the record accounts
for exactly one revision; a lease counts too (a lease grant changes no key).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from raftd.kv import commands
from raftd.kv.machine import KVStateMachine

__all__ = [
    "CLUSTER_KEY",
    "ClusterRecord",
    "has_user_writes",
    "new_record",
    "read_record",
    "record_command",
]

CLUSTER_KEY = b"\x00raftd/cluster"


@dataclass(frozen=True, slots=True)
class ClusterRecord:
    id: str
    founded_ms: int
    founder: str

    def encode(self) -> bytes:
        return json.dumps(
            {"id": self.id, "founded_ms": self.founded_ms, "founder": self.founder},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @staticmethod
    def decode(data: bytes) -> ClusterRecord | None:
        try:
            d = json.loads(data)
            rec = ClusterRecord(str(d["id"]), int(d["founded_ms"]), str(d["founder"]))
        except (ValueError, KeyError, TypeError):
            return None
        return rec if rec.id else None


def new_record(founder: str) -> ClusterRecord:
    """A fresh record: 64 random bits of id, the founder's wall clock in ms."""
    return ClusterRecord(os.urandom(8).hex(), time.time_ns() // 1_000_000, founder)


def record_command(rec: ClusterRecord) -> bytes:
    """The KV command that stores ``rec`` unless a record exists already."""
    return commands.cas(CLUSTER_KEY, rec.encode(), absent=True)


def read_record(sm: KVStateMachine) -> ClusterRecord | None:
    """The cluster record as applied locally (None before it is, or while the state
    machine is mid-restore)."""
    try:
        kv = sm.get(CLUSTER_KEY)
    except Exception:
        return None
    return None if kv is None else ClusterRecord.decode(kv.value)


def has_user_writes(sm: KVStateMachine) -> bool:
    """True if anything besides the cluster record was applied (see module docstring).
    Conservative: a deleted or rewritten record also counts as a write."""
    try:
        kv = sm.get(CLUSTER_KEY)
    except Exception:
        return True  # cannot tell: never treat the state as disposable
    own = 1 if kv is not None and kv.version == 1 else 0
    return sm.revision() - own > 0 or len(sm.leases()) > 0
