"""Every message the core sends is stamped with its sender and term by a spelled-out
copy (raft._stamped): it must copy every field of Message, including any added later."""

from __future__ import annotations

import dataclasses

from raftd.core.raft import _stamped, _with
from raftd.core.types import Entry, Message, MessageType, Snapshot, SnapshotMetadata


def _distinct_message() -> Message:
    values = {
        "type": MessageType.APP,
        "to": "peer-to",
        "frm": "peer-from",
        "term": 7,
        "log_term": 6,
        "index": 41,
        "entries": (Entry(index=42, term=7, data=b"x"),),
        "commit": 40,
        "snapshot": Snapshot(metadata=SnapshotMetadata(index=3, term=2)),
        "reject": True,
        "reject_hint": 39,
        "context": b"ctx",
        "commit_only": True,
    }
    names = {f.name for f in dataclasses.fields(Message)}
    assert names == set(values), f"set a distinct value for {names ^ set(values)}"
    return Message(**values)  # type: ignore[arg-type]


def test_stamped_copies_every_field() -> None:
    m = _distinct_message()
    assert _stamped(m, "me", 9) == _with(m, frm="me", term=9)
    assert _stamped(m, "me", 9) is not m
