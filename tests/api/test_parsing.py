"""Request parsing and framing on the API path never fail with anything but a typed
error, whatever the bytes (hypothesis), and the sans-I/O helpers behave."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftd.api.errors import ApiError
from raftd.api.server import ApiConfigError, parse_request, parse_tcp_address
from raftd.api.service import LanePool, validate
from raftd.client import _proto as P
from raftd.wire.framing import FrameDecoder, FrameError, encode_frame
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb
from raftd.wire.ranges import key_bounds

C = apb.Error


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_parse_request_never_raises_untyped(data: bytes) -> None:
    try:
        req = parse_request(data)
    except ApiError as exc:
        assert exc.code == C.INVALID_ARGUMENT
        return
    try:
        validate(req, req.WhichOneof("op"))
    except ApiError as exc:
        assert exc.code == C.INVALID_ARGUMENT


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8), st.binary(max_size=64), st.integers(1, 7))
def test_decoder_splits_and_garbage(payloads: list[bytes], junk: bytes, step: int) -> None:
    """Valid frames come back whatever the read sizes; trailing junk either completes
    frames, stays buffered, or raises FrameError: nothing else."""
    stream = b"".join(encode_frame(p) for p in payloads) + junk
    dec = FrameDecoder(4096)
    out: list[bytes] = []
    try:
        for i in range(0, len(stream), step):
            out.extend(dec.feed(stream[i : i + step]))
    except FrameError:
        pass
    assert out[: len(payloads)] == payloads[: len(out)]


def test_wrong_type_field_is_an_unknown_field() -> None:
    # Field 11 (put) carrying a varint where a message is expected: protobuf keeps it as
    # an unknown field, so the request has no operation -> INVALID_ARGUMENT.
    req = parse_request(bytes([0x08, 0x05, 0x58, 0x01]))
    assert req.id == 5
    with pytest.raises(ApiError) as info:
        validate(req, req.WhichOneof("op"))
    assert info.value.code == C.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("req", "ok"),
    [
        (apb.Request(put=kpb.PutRequest(key=b"k")), True),
        (apb.Request(put=kpb.PutRequest(key=b"")), False),
        (apb.Request(range=kpb.RangeRequest(key=b"", range_end=b"\x00")), True),
        (apb.Request(range=kpb.RangeRequest(key=b"a", limit=-1)), False),
        (apb.Request(cas=kpb.CompareAndSwapRequest(key=b"k")), False),
        (apb.Request(lease_grant=kpb.LeaseGrantRequest(ttl=0)), False),
        (apb.Request(lease_keepalive=apb.LeaseKeepAliveRequest(id=0)), False),
        (apb.Request(add_voter=apb.MemberRequest(id="nope")), False),
        (apb.Request(client_id=b"c", put=kpb.PutRequest(key=b"k")), False),
        (apb.Request(client_id=b"c", seq=3, put=kpb.PutRequest(key=b"k")), True),
        (apb.Request(), False),
    ],
)
def test_validate(req: apb.Request, ok: bool) -> None:
    if ok:
        validate(req, req.WhichOneof("op"))
    else:
        with pytest.raises(ApiError):
            validate(req, req.WhichOneof("op"))


def test_lanes_are_reused_and_increase() -> None:
    pool = LanePool("node", seq_base=100)
    a = pool.acquire()
    b = pool.acquire()
    assert a.client_id != b.client_id
    assert a.next() == 101 and a.next() == 102
    pool.release(a)
    again = pool.acquire()
    assert again is a and again.next() == 103
    a.skip()
    assert a.next() > 103 + (1 << 31)
    assert pool.created == 2


def test_key_bounds_and_prefix_end() -> None:
    assert key_bounds(b"a", b"") == (b"a", b"a\x00")
    assert key_bounds(b"a", b"\x00") == (b"a", None)
    assert key_bounds(b"a", b"c") == (b"a", b"c")
    assert P.prefix_end(b"ab") == b"ac"
    assert P.prefix_end(b"a\xff") == b"b"
    assert P.prefix_end(b"\xff") == b"\x00"


def test_tcp_address() -> None:
    assert parse_tcp_address("127.0.0.1:7421") == ("127.0.0.1", 7421)
    assert parse_tcp_address("[::1]:80") == ("::1", 80)
    with pytest.raises(ApiConfigError):
        parse_tcp_address("nope")


def test_client_error_mapping() -> None:
    err = P.error_from_pb(C(code=C.UNAVAILABLE, message="x", indeterminate=True))
    assert isinstance(err, P.Unavailable) and err.indeterminate
    comp = P.error_from_pb(C(code=C.FAILED_PRECONDITION, message="c", compact_revision=7))
    assert isinstance(comp, P.Compacted) and comp.compact_revision == 7
    assert P.parse_get(apb.Response(error=C(code=C.NOT_FOUND))) is None
    mismatch = apb.Response(error=C(code=C.FAILED_PRECONDITION), cas=kpb.CompareAndSwapResponse())
    assert P.parse_cas(mismatch).succeeded is False
