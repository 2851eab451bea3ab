"""The client connection core alone, without I/O: ids and the pending table, errors on
id 0, indeterminate flags when the connection ends, malformed input, watch routing and
back-pressure; the watch state machine; the shared method table."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.client import AsyncClient, Client, Compacted, ConnectionLost, DeadlineExceeded
from raftd.client import _ops as O
from raftd.client import _proto as P
from raftd.client._core import WATCH_BUFFER, Connection, MalformedResponse, Pending, prepare
from raftd.client._watch import WatchState, watch_range
from raftd.wire.framing import FrameDecoder, encode_frame, encode_varint
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb

C = apb.Error
MAX = 1 << 20


def sent(conn: Connection) -> list[apb.Request]:
    """The requests the connection queued since the last call, decoded."""
    return [apb.Request.FromString(f) for f in FrameDecoder(MAX).feed(conn.data_to_send())]


def frame(resp: apb.Response) -> bytes:
    return encode_frame(resp.SerializeToString())


def put_req(key: str = "k") -> apb.Request:
    return P.req_put(key, "v", lease=0, prev_kv=False)


def get_req(key: str = "k") -> apb.Request:
    return P.req_get(key, stale=False, min_revision=0)


def watch_resp(rid: int, *revisions: int) -> apb.Response:
    resp = apb.Response(id=rid)
    for rev in revisions:
        ev = resp.watch.events.add()
        ev.type = apb.Event.PUT
        ev.kv.CopyFrom(kpb.KeyValue(key=b"k", value=b"v", mod_revision=rev))
    return resp


# -- ids, pending table, routing ----------------------------------------------------------


def test_ids_are_assigned_in_order_and_frames_queued() -> None:
    conn = Connection(MAX)
    ps = [conn.request(get_req(f"k{i}")) for i in range(3)]
    assert [p.id for p in ps] == [1, 2, 3]
    assert set(conn.pending) == {1, 2, 3}
    reqs = sent(conn)
    assert [r.id for r in reqs] == [1, 2, 3]
    assert [r.get.key for r in reqs] == [b"k0", b"k1", b"k2"]
    assert conn.data_to_send() == b""  # taken once


def test_responses_are_matched_by_id_in_any_order_and_strays_dropped() -> None:
    conn = Connection(MAX)
    a, b = conn.request(get_req("a")), conn.request(get_req("b"))
    data = frame(apb.Response(id=b.id, revision=7)) + frame(apb.Response(id=99, revision=1))
    data += frame(apb.Response(id=a.id, revision=8))
    # Split anywhere: one byte at a time.
    ready: list[Pending] = []
    for i in range(len(data)):
        ready += conn.receive_data(data[i : i + 1])
    assert ready == [b, a]
    assert b.response is not None and b.response.revision == 7
    assert a.response is not None and a.response.revision == 8
    assert a.done and b.done and not conn.pending


def test_a_forgotten_request_ignores_its_late_answer() -> None:
    conn = Connection(MAX)
    p = conn.request(put_req())
    err = conn.timed_out(p, 2.5)
    assert isinstance(err, DeadlineExceeded) and err.indeterminate  # a write
    assert "2.5s" in err.message
    assert conn.receive_data(frame(apb.Response(id=p.id))) == []
    assert p.response is None
    g = conn.request(get_req())
    assert not conn.timed_out(g, 1.0).indeterminate  # a read


def test_prepare_fills_namespace_and_deadline() -> None:
    req = get_req()
    assert prepare(req, "/raft/x", None, None) is None
    assert req.namespace == "/raft/x" and req.timeout_ms == 0
    assert prepare(req, "/raft/x", 3.0, None) == 3.0 and req.timeout_ms == 3000
    assert prepare(req, "/raft/x", 3.0, 0.0001) == 0.0001 and req.timeout_ms == 1


# -- errors on id 0, indeterminate when the connection ends -------------------------------


def test_connection_loss_fails_every_pending_request_indeterminate_only_for_writes() -> None:
    conn = Connection(MAX)
    w, r = conn.request(put_req()), conn.request(get_req())
    ready = conn.receive_data(b"")
    assert set(ready) == {w, r} and conn.closed and not conn.pending
    assert isinstance(w.error, ConnectionLost) and w.error.indeterminate
    assert isinstance(r.error, ConnectionLost) and not r.error.indeterminate
    assert "closed by the daemon" in w.error.message
    # Refused before sending: determinate, nothing queued.
    with pytest.raises(ConnectionLost) as exc:
        conn.request(put_req())
    assert not exc.value.indeterminate
    assert conn.data_to_send() == b""
    assert conn.receive_data(frame(apb.Response(id=1))) == []  # after the end: ignored
    assert conn.fail("again") == []


def test_an_error_on_id_0_is_remembered_and_becomes_the_reason() -> None:
    conn = Connection(MAX)
    w = conn.request(put_req())
    bad = apb.Response(id=0, error=apb.Error(code=C.TOO_LARGE, message="frame of 5 MiB"))
    assert conn.receive_data(frame(bad)) == []  # fails nothing by itself
    assert not conn.closed and w.error is None and conn.pending
    conn.receive_data(b"")
    assert isinstance(w.error, ConnectionLost) and w.error.indeterminate
    assert w.error.message == "TOO_LARGE: frame of 5 MiB"
    # An id-0 response without an error is nothing.
    conn2 = Connection(MAX)
    conn2.receive_data(frame(apb.Response(id=0)))
    assert conn2.error == ""


def test_the_client_closing_fails_pending_with_its_reason() -> None:
    conn = Connection(MAX)
    p = conn.request(get_req())
    assert conn.fail("client closed") == [p]
    assert isinstance(p.error, ConnectionLost) and p.error.message == "client closed"


# -- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xff" * 11,  # a length prefix longer than 10 bytes
        encode_varint(MAX + 1),  # a frame over the limit
        encode_frame(b"\xff\xff\xff"),  # not a Response
    ],
    ids=["long-varint", "too-large", "not-protobuf"],
)
def test_malformed_input_ends_the_connection_with_a_named_error(data: bytes) -> None:
    conn = Connection(MAX)
    w, r = conn.request(put_req()), conn.request(get_req())
    assert conn.receive_data(frame(apb.Response(id=r.id, revision=3))) == [r]
    assert conn.receive_data(data) == [w]
    assert isinstance(w.error, MalformedResponse)
    assert isinstance(w.error, ConnectionLost) and w.error.indeterminate
    assert conn.closed


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256), st.integers(1, 9))
def test_any_bytes_only_ever_end_the_connection_cleanly(data: bytes, step: int) -> None:
    conn = Connection(1024)
    ps = [conn.request(put_req()), conn.stream(watch_req(), limit=2)]
    for i in range(0, len(data), step):
        conn.receive_data(data[i : i + step])  # never raises
    conn.receive_data(b"")
    for p in ps:
        assert p.done and isinstance(p.error, ConnectionLost)


# -- streams and back-pressure ------------------------------------------------------------


def watch_req() -> apb.Request:
    req = P.req_watch("k", b"", start_revision=0, prev_kv=False)
    req.namespace = "/raft/w"
    return req


def test_a_stream_queues_its_responses_and_ends_on_cancel() -> None:
    conn = Connection(MAX)
    p = conn.stream(watch_req(), limit=4)
    sent(conn)
    conn.receive_data(frame(watch_resp(p.id, 5)) + frame(watch_resp(p.id, 6)))
    assert p.id in conn.pending
    first = Connection.take(p)
    assert isinstance(first, apb.Response) and first.watch.events[0].kv.mod_revision == 5
    end = apb.Response(id=p.id)
    end.watch.canceled = True
    conn.receive_data(frame(end))
    assert p.id not in conn.pending  # a cancel is the stream's last response
    second, third = Connection.take(p), Connection.take(p)
    assert isinstance(second, apb.Response) and isinstance(third, apb.Response)
    assert third.watch.canceled
    assert isinstance(Connection.take(p), ConnectionLost)


def test_an_empty_stream_waits() -> None:
    conn = Connection(MAX)
    p = conn.stream(watch_req(), limit=4)
    assert Connection.take(p) is None


def test_a_watch_that_falls_behind_is_dropped_and_cancelled_after_its_queue() -> None:
    conn = Connection(MAX)
    p = conn.stream(watch_req(), limit=3)
    sent(conn)
    data = b"".join(frame(watch_resp(p.id, rev)) for rev in (10, 11, 12, 13, 14))
    ready = conn.receive_data(data)
    assert p in ready and p.done
    assert p.id not in conn.pending
    (cancel,) = sent(conn)  # queued for the daemon
    assert cancel.watch_cancel.watch_id == p.id and cancel.namespace == "/raft/w"
    got = []
    while isinstance(item := Connection.take(p), apb.Response):
        got.append(item.watch.events[0].kv.mod_revision)
    assert got == [10, 11, 12]  # what fitted is delivered, in order
    assert isinstance(item, ConnectionLost) and "did not keep up" in item.message
    assert not item.indeterminate
    # Later responses to the dropped watch are ignored.
    assert conn.receive_data(frame(watch_resp(p.id, 15))) == []


def test_unbounded_streams_never_overflow() -> None:
    conn = Connection(MAX)
    p = conn.stream(watch_req(), limit=None)
    conn.receive_data(b"".join(frame(watch_resp(p.id, r)) for r in range(2 * WATCH_BUFFER)))
    assert p.items is not None and len(p.items) == 2 * WATCH_BUFFER and not p.done


def test_connection_loss_ends_a_stream_after_its_queue() -> None:
    conn = Connection(MAX)
    p = conn.stream(watch_req(), limit=3)
    conn.receive_data(frame(watch_resp(p.id, 1)))
    conn.fail("connection failed: reset")
    assert isinstance(Connection.take(p), apb.Response)
    err = Connection.take(p)
    assert isinstance(err, ConnectionLost) and err.message == "connection failed: reset"


def test_cancel_watch_forgets_and_tells_the_daemon() -> None:
    conn = Connection(MAX)
    p = conn.stream(watch_req(), limit=3)
    sent(conn)
    conn.cancel_watch(p)
    assert p.id not in conn.pending
    (req,) = sent(conn)
    assert req.watch_cancel.watch_id == p.id
    conn.fail("x")
    conn.cancel_watch(p)  # closed: nothing to send, no error
    assert conn.data_to_send() == b""


# -- the watch state machine --------------------------------------------------------------


def test_watch_state_tracks_revisions_and_resumes_after_the_last_event() -> None:
    st_ = WatchState[None](None, b"k", b"", 0, True, True, 30.0)
    created = apb.Response(id=1)
    created.watch.created = True
    created.watch.header_revision = 41
    st_._started(created)
    assert (st_.revision, st_.next_revision) == (41, 42)
    assert st_._absorb(watch_resp(1, 42, 43)) is None
    assert [e.revision for e in st_._events] == [42, 43]
    assert (st_.revision, st_.next_revision) == (43, 44)
    lost = ConnectionLost("gone")
    assert st_._absorb(lost) is lost  # resume...
    req = st_._request("/raft/ns")
    assert req.watch.start_revision == 44 and req.watch.prev_kv and req.namespace == "/raft/ns"
    no_resume = WatchState[None](None, b"k", b"", 5, False, False, 30.0)
    assert no_resume.revision == 4
    with pytest.raises(ConnectionLost):
        no_resume._absorb(lost)


def test_watch_state_raises_errors_and_ends_on_cancel() -> None:
    st_ = WatchState[None](None, b"k", b"", 3, False, True, 30.0)
    compacted = apb.Response(id=1)
    compacted.error.CopyFrom(
        apb.Error(code=C.FAILED_PRECONDITION, message="compacted", compact_revision=9)
    )
    with pytest.raises(Compacted) as exc:
        st_._started(compacted)
    assert exc.value.compact_revision == 9
    with pytest.raises(ConnectionLost):
        st_._started(ConnectionLost("no"))
    end = apb.Response(id=1)
    end.watch.canceled = True
    assert st_._absorb(end) is None and st_._done


def test_watch_range() -> None:
    assert watch_range("a", "", prefix=False) == (b"a", b"")
    assert watch_range("a", "", prefix=True) == (b"a", b"b")
    assert watch_range("", "", prefix=True) == (b"\x00", b"\x00")
    assert watch_range(b"a", b"c", prefix=False) == (b"a", b"c")


# -- one method table ---------------------------------------------------------------------


def shared_methods() -> list[str]:
    return [n for n, v in vars(O.Operations).items() if isinstance(v, O.Op)]


def test_both_clients_have_every_operation_with_one_signature() -> None:
    names = shared_methods()
    assert len(names) == 22
    for name in names:
        op = vars(O.Operations)[name]
        sync, async_ = getattr(Client, name), getattr(AsyncClient, name)
        assert (sync, async_) == (op.sync, op.async_)  # one builder behind both
        assert inspect.signature(sync) == inspect.signature(async_)
        assert inspect.iscoroutinefunction(async_) and not inspect.iscoroutinefunction(sync)
        assert sync.__doc__ and sync.__name__ == name


def test_operations_build_the_same_requests_as_the_protocol_helpers() -> None:
    call = O.get_prefix("p/", limit=3, timeout=1.5)
    assert call.timeout == 1.5 and call.parse is P.parse_range
    assert call.request.range.key == b"p/" and call.request.range.range_end == b"p0"
    assert call.request.range.limit == 3
    everything = O.delete_prefix("")
    assert everything.request.delete_range.key == b"\x00"
    assert everything.request.delete_range.range_end == b"\x00"
    put = O.put("k", "v", lease=7, prev_kv=True)
    assert put.request.put == kpb.PutRequest(key=b"k", value=b"v", lease=7, prev_kv=True)
    assert P.is_write(put.request) and not P.is_write(O.get("k").request)
    with pytest.raises(ValueError):
        O.cas("k", "v")  # needs one condition


def test_unsent_bytes_go_out_before_frames_queued_since() -> None:
    conn = Connection(MAX)
    conn.request(put_req("a"))
    data = conn.data_to_send()
    conn.request(put_req("b"))
    conn.unsent(data[5:])
    conn.unsent(b"")
    out = conn.data_to_send()
    assert out.startswith(data[5:])
    frames = FrameDecoder(MAX).feed(data[:5] + out)
    assert [apb.Request.FromString(f).put.key for f in frames] == [b"a", b"b"]
    assert not conn.has_output
