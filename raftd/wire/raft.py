"""Conversion between the core's Raft value types and their protobuf wire form.

Contract:

- ``message_from_pb(message_to_pb(m)) == m`` for every core
  :class:`~raftd.core.types.Message` whose integers fit in ``uint64`` (property-tested).
- Decoding never trusts its input: :func:`decode_batch` and the ``*_from_pb`` functions
  raise :class:`WireError` (and nothing else) on malformed bytes, unknown enum numbers,
  or values the core cannot represent. Encoding a value that cannot be represented on
  the wire (a negative integer, say) also raises :class:`WireError`.
- Enum numbers on the wire are the core's ``IntEnum`` values (checked by the tests).

This module does no I/O. Its one object with state is :class:`MessageEncoder`, which
remembers the bytes of the last runs of entries it encoded.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

from google.protobuf.message import DecodeError, EncodeError

from raftd.core import types as core
from raftd.wire.pb import raft_pb2 as pb

__all__ = [
    "MessageEncoder",
    "WireError",
    "conf_state_from_pb",
    "conf_state_to_pb",
    "decode_batch",
    "decode_message",
    "encode_batch",
    "encode_message",
    "entry_from_pb",
    "entry_to_pb",
    "hard_state_from_pb",
    "hard_state_to_pb",
    "message_from_pb",
    "message_to_pb",
    "snapshot_from_pb",
    "snapshot_metadata_from_pb",
    "snapshot_metadata_to_pb",
    "snapshot_to_pb",
]

_U64_MAX = (1 << 64) - 1


class WireError(ValueError):
    """Bytes or values that do not form a valid Raft wire message."""


def _u64(value: int, what: str) -> int:
    # protobuf raises a bare ValueError for out-of-range ints; name the field instead.
    if not 0 <= value <= _U64_MAX:
        raise WireError(f"{what}={value} does not fit in uint64")
    return value


# Dict lookups: calling an IntEnum class costs ~0.7 us, a third of a small message's
# whole conversion.
_MESSAGE_TYPES = {t.value: t for t in core.MessageType}
_ENTRY_TYPES = {t.value: t for t in core.EntryType}


def _message_type(value: int) -> core.MessageType:
    t = _MESSAGE_TYPES.get(value)
    if t is None:
        raise WireError(f"unknown message type {value}")
    return t


def _entry_type(value: int) -> core.EntryType:
    t = _ENTRY_TYPES.get(value)
    if t is None:
        raise WireError(f"unknown entry type {value}")
    return t


# --- Entry, HardState, ConfState, Snapshot ------------------------------------------


def entry_to_pb(entry: core.Entry) -> pb.Entry:
    return pb.Entry(
        term=_u64(entry.term, "entry.term"),
        index=_u64(entry.index, "entry.index"),
        type=int(entry.type),  # type: ignore[arg-type]  # same numbers by contract
        data=entry.data,
    )


def entry_from_pb(p: pb.Entry) -> core.Entry:
    return core.Entry(term=p.term, index=p.index, type=_entry_type(p.type), data=p.data)


def hard_state_to_pb(hs: core.HardState) -> pb.HardState:
    return pb.HardState(
        term=_u64(hs.term, "hard_state.term"),
        vote=hs.vote,
        commit=_u64(hs.commit, "hard_state.commit"),
    )


def hard_state_from_pb(p: pb.HardState) -> core.HardState:
    return core.HardState(term=p.term, vote=p.vote, commit=p.commit)


def conf_state_to_pb(cs: core.ConfState) -> pb.ConfState:
    return pb.ConfState(voters=list(cs.voters), learners=list(cs.learners))


def conf_state_from_pb(p: pb.ConfState) -> core.ConfState:
    return core.ConfState(voters=tuple(p.voters), learners=tuple(p.learners))


def snapshot_metadata_to_pb(meta: core.SnapshotMetadata) -> pb.SnapshotMetadata:
    return pb.SnapshotMetadata(
        index=_u64(meta.index, "snapshot.index"),
        term=_u64(meta.term, "snapshot.term"),
        conf_state=conf_state_to_pb(meta.conf_state),
    )


def snapshot_metadata_from_pb(p: pb.SnapshotMetadata) -> core.SnapshotMetadata:
    return core.SnapshotMetadata(
        index=p.index, term=p.term, conf_state=conf_state_from_pb(p.conf_state)
    )


def snapshot_to_pb(snap: core.Snapshot) -> pb.Snapshot:
    return pb.Snapshot(metadata=snapshot_metadata_to_pb(snap.metadata), data=snap.data)


def snapshot_from_pb(p: pb.Snapshot) -> core.Snapshot:
    return core.Snapshot(metadata=snapshot_metadata_from_pb(p.metadata), data=p.data)


# --- Message -------------------------------------------------------------------------


def message_to_pb(msg: core.Message, *, with_entries: bool = True) -> pb.Message:
    """Core message to protobuf (without its entries if ``with_entries`` is false).
    Raises :class:`WireError` for unrepresentable values."""
    ints = msg.term | msg.log_term | msg.index | msg.commit | msg.reject_hint
    if ints < 0 or ints > _U64_MAX:  # one test for all five on the hot path
        for name in ("term", "log_term", "index", "commit", "reject_hint"):
            _u64(getattr(msg, name), name)
    p = pb.Message(
        type=msg.type.value,  # type: ignore[arg-type]  # same numbers by contract
        to=msg.to,
        frm=msg.frm,
        term=msg.term,
        log_term=msg.log_term,
        index=msg.index,
        commit=msg.commit,
        reject=msg.reject,
        reject_hint=msg.reject_hint,
        context=msg.context,
        commit_only=msg.commit_only,
    )
    if msg.entries and with_entries:
        p.entries.extend(entry_to_pb(e) for e in msg.entries)
    if msg.snapshot is not None:
        p.snapshot.CopyFrom(snapshot_to_pb(msg.snapshot))
    return p


def message_from_pb(p: pb.Message) -> core.Message:
    """Protobuf message to core. Raises :class:`WireError` on unknown enum numbers."""
    pe = p.entries
    return core.Message(
        type=_message_type(p.type),
        to=p.to,
        frm=p.frm,
        term=p.term,
        log_term=p.log_term,
        index=p.index,
        entries=tuple([entry_from_pb(e) for e in pe]) if pe else (),
        commit=p.commit,
        snapshot=snapshot_from_pb(p.snapshot) if p.HasField("snapshot") else None,
        reject=p.reject,
        reject_hint=p.reject_hint,
        context=p.context,
        commit_only=p.commit_only,
    )


def encode_message(msg: core.Message) -> bytes:
    """One message, serialized (no length prefix)."""
    try:
        return message_to_pb(msg).SerializeToString()
    except (EncodeError, ValueError, TypeError) as exc:
        raise WireError(f"cannot encode message: {exc}") from exc


class MessageEncoder:
    """:func:`encode_message` that encodes a run of log entries once for all the peers
    it goes to: a caught-up leader sends the same entries (the same objects, from its
    log) to every follower, and their conversion is most of an append's encoding.

    A message's bytes are its other fields followed by its entries (protobuf merges the
    occurrences of a repeated field in order, wherever they appear), so they decode to
    the same message as :func:`encode_message`'s. A run is recognised by the identity of
    every entry in it, with references held, so a remembered run is never mistaken for
    another; the last ``capacity`` runs are held (two by default: a run goes to every
    follower in turn, and one other may come between, such as a lagging follower's; at
    most 2 x 512 KiB with the runtime's message size cap). Not thread-safe: one per
    transport, used from its event loop."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._runs: list[tuple[tuple[core.Entry, ...], bytes]] = []
        #: Entries encoded, and entries whose bytes were reused.
        self.encoded = 0
        self.reused = 0

    def encode(self, msg: core.Message) -> bytes:
        entries = msg.entries
        if not entries:
            return encode_message(msg)
        try:
            head = message_to_pb(msg, with_entries=False).SerializeToString()
            n = len(entries)
            for held, block in self._runs:
                if len(held) == n and all(map(operator.is_, held, entries)):
                    self.reused += n
                    return head + block
            block = pb.Message(entries=[entry_to_pb(e) for e in entries]).SerializeToString()
        except (EncodeError, ValueError, TypeError) as exc:
            raise WireError(f"cannot encode message: {exc}") from exc
        self.encoded += n
        if len(self._runs) >= self.capacity:
            del self._runs[0]
        self._runs.append((entries, block))
        return head + block


def decode_message(data: bytes) -> core.Message:
    """Inverse of :func:`encode_message`. Raises only :class:`WireError`."""
    try:
        p = pb.Message.FromString(data)
    except (DecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"malformed message: {exc}") from exc
    return message_from_pb(p)


# --- Batch: one transport frame ------------------------------------------------------


def encode_batch(messages: Iterable[core.Message]) -> bytes:
    """Serialize messages into one ``Batch`` (the payload of one transport frame).

    Order is preserved: ``decode_batch(encode_batch(ms)) == list(ms)``.
    """
    batch = pb.Batch()
    try:
        batch.messages.extend(message_to_pb(m) for m in messages)
        return batch.SerializeToString()
    except (EncodeError, ValueError, TypeError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"cannot encode batch: {exc}") from exc


def decode_batch(data: bytes) -> list[core.Message]:
    """Parse one ``Batch`` payload into core messages, in order.

    Raises :class:`WireError` (only) if the bytes are not a valid Batch, a string is not
    UTF-8, or an enum number is unknown to the core. An empty payload is an empty batch.
    """
    try:
        batch = pb.Batch.FromString(data)
    except (DecodeError, ValueError, RecursionError) as exc:
        raise WireError(f"malformed batch ({len(data)} bytes): {exc}") from exc
    return [message_from_pb(p) for p in batch.messages]
