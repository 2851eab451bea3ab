"""EtcdService over a real in-memory state machine (no daemon): what depends on the
watch window, made deterministic by resetting the window as a restart does; and over
an in-process daemon whose disk fills (the NOSPACE alarm)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from raftd.etcd import errors
from raftd.etcd.errors import EtcdError
from raftd.etcd.service import EtcdService
from raftd.etcd.status import StatusCode
from raftd.kv import commands
from raftd.kv.machine import KVStateMachine
from raftd.wire.pb.etcd import rpc_pb2 as epb


class _Group:
    def __init__(self, sm: KVStateMachine) -> None:
        self.sm = sm
        self.node = None
        self.leader = "peer-a"
        self.failed = None


class _Svc:
    """Just what the serializable read paths of EtcdService touch."""

    def __init__(self, sm: KVStateMachine) -> None:
        self.group = _Group(sm)
        self.id = "peer-a"


def service() -> tuple[EtcdService, KVStateMachine]:
    sm = KVStateMachine.memory()
    for i, v in enumerate([b"v1", b"v2", b"v3"], start=1):
        sm.apply(i, commands.put(b"k", v))
    svc: Any = _Svc(sm)
    return EtcdService(svc, cluster_id=7, client_urls=[]), sm


async def test_range_at_revision_within_and_beyond_the_window() -> None:
    s, sm = service()
    far = trio.current_time() + 5
    r = await s.range(epb.RangeRequest(key=b"k", revision=1, serializable=True), far)
    assert r.kvs[0].value == b"v1" and r.header.revision == 3 and r.header.cluster_id == 7
    sm.history.reset(sm.revision())  # what a restart leaves: no changes held
    with pytest.raises(EtcdError) as ei:
        await s.range(epb.RangeRequest(key=b"k", revision=1, serializable=True), far)
    assert ei.value is errors.COMPACTED and ei.value.code == StatusCode.OUT_OF_RANGE
    r = await s.range(epb.RangeRequest(key=b"k", revision=3, serializable=True), far)
    assert r.kvs[0].value == b"v3"
    with pytest.raises(EtcdError) as ei:
        await s.compact(epb.CompactionRequest(revision=1), far)
    assert ei.value is errors.COMPACTED
    await s.compact(epb.CompactionRequest(revision=3), far)
    with pytest.raises(EtcdError) as ei:
        await s.range(epb.RangeRequest(key=b"k", revision=4, serializable=True), far)
    assert ei.value is errors.FUTURE_REV


async def test_watch_from_a_compacted_revision_is_cancelled() -> None:
    s, sm = service()
    sm.history.reset(sm.revision())
    send_req, recv_req = trio.open_memory_channel[epb.WatchRequest](10)
    send_resp, recv_resp = trio.open_memory_channel[epb.WatchResponse](10)

    async def send(msg: object) -> None:
        assert isinstance(msg, epb.WatchResponse)
        await send_resp.send(msg)

    async def create(start: int) -> None:
        req = epb.WatchCreateRequest(key=b"k", start_revision=start)
        await send_req.send(epb.WatchRequest(create_request=req))

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(s.watch, recv_req, send)
            await create(1)
            created = await recv_resp.receive()
            cancelled = await recv_resp.receive()
            # From the oldest revision it names, the same watch works.
            await create(cancelled.compact_revision)
            again = await recv_resp.receive()
            sm.apply(4, commands.put(b"k", b"v4"))
            event = await recv_resp.receive()
            await send_req.aclose()
    assert created.created and created.watch_id == 0
    assert cancelled.canceled and cancelled.watch_id == 0 and cancelled.compact_revision == 4
    assert "compacted" in cancelled.cancel_reason
    assert again.created and again.watch_id == 1
    assert event.watch_id == 1 and event.events[0].kv.value == b"v4"


async def test_progress_notify_sends_empty_responses_when_idle() -> None:
    s, sm = service()
    s.progress_interval = 0.2  # etcd's (and raftd's default) is 10 minutes
    send_req, recv_req = trio.open_memory_channel[epb.WatchRequest](10)
    send_resp, recv_resp = trio.open_memory_channel[epb.WatchResponse](10)

    async def send(msg: object) -> None:
        assert isinstance(msg, epb.WatchResponse)
        await send_resp.send(msg)

    with trio.fail_after(10):
        async with trio.open_nursery() as n:
            n.start_soon(s.watch, recv_req, send)
            req = epb.WatchCreateRequest(key=b"k", progress_notify=True)
            await send_req.send(epb.WatchRequest(create_request=req))
            created = await recv_resp.receive()
            idle = await recv_resp.receive()
            sm.apply(4, commands.put(b"k", b"v4"))
            event = await recv_resp.receive()
            idle2 = await recv_resp.receive()
            await send_req.aclose()
    assert created.created
    assert idle.watch_id == 0 and not idle.events and idle.header.revision == 3
    assert event.events[0].kv.value == b"v4"
    assert not idle2.events and idle2.header.revision == 4


async def test_full_disk_raises_the_nospace_alarm(tmp_path: Any) -> None:
    """A real daemon (in-process cluster) whose leader's disk fills (ENOSPC injected at
    its LevelDB writes): its etcd service reports NOSPACE in Alarm and Status, and a
    write through it gets etcd's "database space exceeded" or "no leader"."""
    import errno

    from raftd.testing.inproc import NS, cluster

    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            assert ld.daemon is not None and ld.daemon.db is not None
            assert ld.daemon.api is not None
            es = EtcdService(ld.daemon.api.services[NS], cluster_id=7, client_urls=[])
            far = trio.current_time() + 30
            await es.put(epb.PutRequest(key=b"k", value=b"v"), far)
            assert (await es.alarm(epb.AlarmRequest(), far)).alarms == []

            def disk_full(point: str) -> None:
                if point.startswith("write:"):
                    raise OSError(errno.ENOSPC, "No space left on device")

            ld.daemon.db.fault_hook = disk_full
            with pytest.raises(EtcdError) as ei:
                await es.put(epb.PutRequest(key=b"k2", value=b"v"), trio.current_time() + 5)
            assert ei.value in (errors.NO_SPACE, errors.NO_LEADER), ei.value
            assert es.group.failed is not None
            alarms = (await es.alarm(epb.AlarmRequest(), far)).alarms
            assert [(a.memberID, a.alarm) for a in alarms] == [(es.member_id, epb.NOSPACE)]
            st = await es.status(epb.StatusRequest(), far)
            assert any("alarm:NOSPACE" in e for e in st.errors)
