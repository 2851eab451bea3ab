"""Wire conversion: core Message <-> protobuf, batches, and hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.core import types as core
from raftd.wire.pb import raft_pb2 as pb
from raftd.wire.raft import (
    MessageEncoder,
    WireError,
    decode_batch,
    decode_message,
    encode_batch,
    encode_message,
    hard_state_from_pb,
    hard_state_to_pb,
    message_from_pb,
    message_to_pb,
)

U64 = st.integers(min_value=0, max_value=(1 << 64) - 1)
NODE = st.text(max_size=60)  # any str: proto3 strings are UTF-8, Python str always encodes
SMALL_BYTES = st.binary(max_size=64)

entries = st.builds(
    core.Entry, term=U64, index=U64, type=st.sampled_from(core.EntryType), data=SMALL_BYTES
)
conf_states = st.builds(
    core.ConfState,
    voters=st.lists(NODE, max_size=5).map(tuple),
    learners=st.lists(NODE, max_size=3).map(tuple),
)
metas = st.builds(core.SnapshotMetadata, index=U64, term=U64, conf_state=conf_states)
snapshots = st.builds(core.Snapshot, metadata=metas, data=SMALL_BYTES)
messages = st.builds(
    core.Message,
    type=st.sampled_from(core.MessageType),
    to=NODE,
    frm=NODE,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=U64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=U64,
    context=SMALL_BYTES,
    commit_only=st.booleans(),
)


def surrogate_free(m: core.Message) -> bool:
    # Lone surrogates are valid Python str but not UTF-8; the encoder must refuse them
    # (tested separately), so the round-trip property excludes them.
    texts = [m.to, m.frm]
    if m.snapshot is not None:
        cs = m.snapshot.metadata.conf_state
        texts += list(cs.voters) + list(cs.learners)
    try:
        for t in texts:
            t.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_enum_numbers_match_core() -> None:
    for t in core.MessageType:
        assert pb.MessageType.Value(f"MESSAGE_TYPE_{t.name}") == t.value
    assert len(pb.MessageType.values()) == len(core.MessageType)
    for e in core.EntryType:
        assert pb.EntryType.Value(f"ENTRY_TYPE_{e.name}") == e.value
    assert len(pb.EntryType.values()) == len(core.EntryType)


@settings(max_examples=300)
@given(messages)
def test_message_roundtrip(m: core.Message) -> None:
    if not surrogate_free(m):
        with pytest.raises(WireError):
            encode_message(m)
        return
    assert message_from_pb(message_to_pb(m)) == m
    assert decode_message(encode_message(m)) == m


@settings(max_examples=100)
@given(st.lists(messages, max_size=8))
def test_batch_roundtrip_preserves_order(ms: list[core.Message]) -> None:
    ms = [m for m in ms if surrogate_free(m)]
    assert decode_batch(encode_batch(ms)) == ms


def test_snapshot_presence_is_kept() -> None:
    empty = core.Message(core.MessageType.SNAP, to="b", frm="a", snapshot=core.Snapshot())
    assert decode_message(encode_message(empty)).snapshot == core.Snapshot()
    none = core.Message(core.MessageType.APP, to="b", frm="a")
    assert decode_message(encode_message(none)).snapshot is None


def test_hard_state_roundtrip() -> None:
    hs = core.HardState(term=7, vote="n2", commit=42)
    assert hard_state_from_pb(hard_state_to_pb(hs)) == hs


def test_empty_batch() -> None:
    assert decode_batch(b"") == []
    assert encode_batch([]) == b""


def test_unknown_message_type_is_rejected() -> None:
    p = pb.Batch()
    p.messages.add(type=99)  # open enum: any int32 parses
    with pytest.raises(WireError, match="unknown message type 99"):
        decode_batch(p.SerializeToString())


def test_unknown_entry_type_is_rejected() -> None:
    p = pb.Batch()
    p.messages.add(type=pb.MESSAGE_TYPE_APP).entries.add(type=5)
    with pytest.raises(WireError, match="unknown entry type 5"):
        decode_batch(p.SerializeToString())


def test_invalid_utf8_is_rejected() -> None:
    # Batch{messages: Message{to: b"\xff"}}
    inner = b"\x12\x01\xff"
    data = b"\x0a" + bytes([len(inner)]) + inner
    with pytest.raises(WireError):
        decode_batch(data)


def test_negative_integer_cannot_be_encoded() -> None:
    with pytest.raises(WireError, match="term=-1"):
        encode_batch([core.Message(core.MessageType.APP, term=-1)])


def test_truncated_batch_is_rejected() -> None:
    data = encode_batch([core.Message(core.MessageType.APP, to="b", frm="a", context=b"x" * 50)])
    with pytest.raises(WireError):
        decode_batch(data[:-10])


@settings(max_examples=2000)
@given(st.binary(max_size=512))
def test_fuzz_decode_batch_raises_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_batch(data)


@settings(max_examples=500)
@given(st.lists(messages, min_size=1, max_size=3), st.data())
def test_fuzz_mutated_batches_raise_only_wire_error(
    ms: list[core.Message], data: st.DataObject
) -> None:
    raw = bytearray(encode_batch([m for m in ms if surrogate_free(m)]))
    if not raw:
        return
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(WireError):
        decode_batch(bytes(raw))


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(WireError):
        encode_message(core.Message(core.MessageType.APP, to="\ud800"))


@settings(max_examples=300)
@given(messages)
def test_message_encoder_bytes_decode_to_the_message(m: core.Message) -> None:
    if not surrogate_free(m):
        return
    enc = MessageEncoder()
    first = enc.encode(m)
    assert decode_message(first) == m
    assert enc.encode(m) == first  # the second time from the remembered entries
    assert enc.reused == len(m.entries)


def _append(to: str, entries: tuple[core.Entry, ...]) -> core.Message:
    return core.Message(
        core.MessageType.APP, to=to, frm="lead", term=3, log_term=3, index=9, entries=entries
    )


def test_message_encoder_encodes_a_run_of_entries_once_for_all_peers() -> None:
    log = [core.Entry(term=3, index=10 + i, data=b"v%d" % i) for i in range(5)]
    enc = MessageEncoder()
    a, b = _append("a", tuple(log)), _append("b", tuple(log[:]))
    assert decode_message(enc.encode(a)) == a
    assert decode_message(enc.encode(b)) == b
    assert (enc.encoded, enc.reused) == (5, 5)


def test_message_encoder_never_reuses_other_entry_objects() -> None:
    """Equal entries that are other objects are encoded afresh, and so is a run in
    which one entry was replaced (a truncated and rewritten log): the bytes sent are
    always the entries of the message."""
    log = [core.Entry(term=3, index=10 + i, data=b"v%d" % i) for i in range(3)]
    enc = MessageEncoder()
    enc.encode(_append("a", tuple(log)))
    copies = tuple(core.Entry(term=e.term, index=e.index, data=e.data) for e in log)
    enc.encode(_append("b", copies))
    assert (enc.encoded, enc.reused) == (6, 0)
    rewritten = (log[0], log[1], core.Entry(term=4, index=12, data=b"new"))
    m = _append("c", rewritten)
    assert decode_message(enc.encode(m)) == m
    assert enc.reused == 0


def test_message_encoder_holds_its_last_runs_only() -> None:
    enc = MessageEncoder(capacity=2)
    runs = [(core.Entry(term=1, index=i, data=b"x"),) for i in range(1, 4)]
    for r in runs:
        enc.encode(_append("a", r))
    enc.encode(_append("b", runs[0]))  # evicted by the later two
    enc.encode(_append("b", runs[2]))
    assert (enc.encoded, enc.reused) == (4, 1)


def test_message_encoder_refuses_unencodable_entries() -> None:
    enc = MessageEncoder()
    bad = _append("a", (core.Entry(term=-1, index=1, data=b""),))
    with pytest.raises(WireError, match="term=-1"):
        enc.encode(bad)
    assert enc.encoded == 0
