"""The formation protocol's messages: round trips and refusal of malformed input."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.formation.cluster import ClusterRecord
from raftd.formation.wire import (
    MAX_FRAME,
    JoinRequest,
    LeaveRequest,
    Message,
    NodeInfo,
    PexEntry,
    PexMessage,
    Reply,
    WireError,
    decode,
    encode,
)

INFO = NodeInfo(
    id="12D3KooWA",
    ns="/raft/x",
    addrs=("/ip4/10.0.0.2/tcp/7420",),
    state="member",
    cluster="00ff",
    founded_ms=123,
    writes=True,
    leader="12D3KooWB",
    term=7,
    voters=("12D3KooWA", "12D3KooWB"),
    learners=("12D3KooWC",),
    expect=3,
    connected=("12D3KooWB",),
    conflict="beef",
    applied=42,
)


def test_round_trips() -> None:
    msgs: list[Message] = [
        PexMessage(INFO, (PexEntry("p", ("/ip4/1.2.3.4/tcp/1",), 1500, None),)),
        PexMessage(INFO, (PexEntry(INFO.id, INFO.addrs, 0, INFO),)),
        JoinRequest("00ff", "12D3KooWC", ("/ip4/10.0.0.3/tcp/7420",), empty=False, relayed=True),
        LeaveRequest("00ff", "12D3KooWC", relayed=True),
        Reply("ok", "added", leader="12D3KooWB", info=INFO),
        Reply("busy"),
    ]
    for m in msgs:
        assert decode(encode(m)) == m


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"t": "nope"}',
        b'{"t": "pex"}',
        b'{"t": "pex", "self": {"id": "", "ns": "/raft/x"}}',
        b'{"t": "pex", "self": {"id": "a", "ns": "/raft/x", "state": "weird"}}',
        b'{"t": "pex", "self": {"id": "a", "ns": "/raft/x", "term": "7"}}',
        b'{"t": "pex", "self": {"id": "a", "ns": "/raft/x", "writes": 1}}',
        b'{"t": "pex", "self": {"id": "a", "ns": "/raft/x"}, "peers": [{"id": "b", '
        b'"addrs": [], "age_ms": -1}]}',
        b'{"t": "pex", "self": {"id": "a", "ns": "/raft/x"}, "peers": [{"id": "b", '
        b'"addrs": [], "age_ms": 1, "info": {"id": "c", "ns": "/raft/x"}}]}',
        b'{"t": "join", "cluster": "c", "id": "a", "addrs": "nope"}',
        b'{"t": "reply", "code": "maybe"}',
    ],
)
def test_malformed_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode(raw)


def test_oversized_fields_and_frames_are_refused() -> None:
    big = {"t": "join", "cluster": "c", "id": "a" * 1000, "addrs": []}
    with pytest.raises(WireError):
        decode(json.dumps(big).encode())
    many = {"t": "join", "cluster": "c", "id": "a", "addrs": ["/ip4/1.1.1.1"] * 100}
    with pytest.raises(WireError):
        decode(json.dumps(many).encode())
    with pytest.raises(WireError):
        decode(b" " * (MAX_FRAME + 1))


@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_but_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode(data)


def test_cluster_record_round_trip() -> None:
    rec = ClusterRecord("00112233aabbccdd", 1700000000000, "12D3KooWA")
    assert ClusterRecord.decode(rec.encode()) == rec
    assert ClusterRecord.decode(b"{}") is None
    assert ClusterRecord.decode(b"garbage") is None
