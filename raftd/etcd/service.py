"""etcd v3 semantics over one namespace of this daemon (trio side, no gRPC here).

:class:`EtcdService` serves etcd's KV, Watch, Lease, Cluster, Maintenance and Auth calls
for the namespace of a :class:`raftd.api.service.NamespaceService`, through that
service's own paths, so nothing about consensus is reimplemented:

- writes (Put, DeleteRange, Txn, LeaseGrant, LeaseRevoke) become raftd commands handed to
  ``NamespaceService.handle``: forwarded to the leader from any node, with exactly-once
  deduplication across retries and leader changes;
- a linearizable Range runs ``NamespaceService.barrier`` (ReadIndex, coalesced) on any
  node first; a serializable one reads the local state machine;
- lease keep-alives and time-to-live go to the leader's lease clock; membership changes
  and MoveLeader are raftd's ``member``/``transfer`` operations.

Revisions are raftd's store revision (cluster-wide, one per write). raftd keeps only the
latest value of each key plus an in-memory window of recent changes (the watch history):
a Range at an older revision is answered by undoing the changes after it, while they are
in the window; older revisions get etcd's "required revision has been compacted".

Every call raises :class:`raftd.etcd.errors.EtcdError` for what the client must see.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import NoReturn

import trio

from raftd.api.errors import ApiError
from raftd.api.service import InlineWrite, NamespaceService
from raftd.core import NONE
from raftd.etcd import errors, snapfile
from raftd.etcd.errors import EtcdError
from raftd.etcd.ids import member_id
from raftd.etcd.kv import apply_range_options, event_of, kv_of, range_at, txn_command
from raftd.etcd.status import StatusCode
from raftd.kv.watch import PUT
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb
from raftd.wire.pb.etcd import rpc_pb2 as epb
from raftd.wire.ranges import key_bounds

__all__ = ["PROGRESS_INTERVAL_S", "VERSION", "EtcdService"]

log = logging.getLogger("raftd.etcd")

#: The etcd server version reported by Status (the API raftd is compatible with).
VERSION = "3.5.0"
#: etcd's maximum lease TTL (seconds).
MAX_LEASE_TTL = 9_000_000_000
#: How often a watch created with progress_notify gets an empty response (etcd: 10 min).
PROGRESS_INTERVAL_S = 600.0
#: Events per watch response (whole revisions, so a response may hold a few more).
WATCH_BATCH = 1000

C = apb.Error
Send = Callable[[object], Awaitable[None]]


class EtcdService:
    """etcd's API for ``svc``'s namespace on this daemon (see the module doc).

    ``cluster_id``: the namespace's etcd cluster id, or a function giving it (it may be
    known only once the cluster has formed); ``client_urls``: this daemon's etcd
    endpoint(s), listed in its Member entry; ``db_dirs``: the LevelDB directories whose
    size Status reports (none: 0)."""

    def __init__(
        self,
        svc: NamespaceService,
        *,
        cluster_id: int | Callable[[], int],
        client_urls: list[str],
        db_dirs: Sequence[Path] = (),
    ) -> None:
        self.svc = svc
        self.group = svc.group
        self._cluster_id = cluster_id
        self.member_id = member_id(svc.id)
        self.client_urls = list(client_urls)
        self.db_dirs = tuple(db_dirs)
        self.progress_interval = PROGRESS_INTERVAL_S
        self._changed = trio.Event()
        self.group.sm.add_listener(self._on_apply)

    def _on_apply(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- common ----------------------------------------------------------------------------
    def term(self) -> int:
        node = self.group.node
        return node.term if node is not None else 0

    @property
    def cluster_id(self) -> int:
        cid = self._cluster_id
        return cid if isinstance(cid, int) else cid()

    def header(self, revision: int | None = None) -> epb.ResponseHeader:
        return epb.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.group.sm.revision() if revision is None else revision,
            raft_term=self.term(),
        )

    def _raise(self, err: apb.Error, *, lease: bool = False) -> NoReturn:
        """raftd's API error as etcd's."""
        msg = err.message
        if err.code == C.NOT_FOUND and lease:
            raise errors.LEASE_NOT_FOUND
        if err.code == C.DEADLINE_EXCEEDED:
            raise errors.TIMEOUT
        if err.code == C.UNAVAILABLE:
            if self.group.leader == NONE:
                raise errors.NO_LEADER
            if "storage failed" in msg and "No space" in msg:
                raise errors.NO_SPACE
            raise EtcdError(StatusCode.UNAVAILABLE, f"etcdserver: {msg}")
        if err.code == C.INVALID_ARGUMENT:
            if lease and "already exists" in msg:
                raise errors.LEASE_EXIST
            raise errors.invalid(msg)
        if err.code == C.NOT_FOUND:
            raise EtcdError(StatusCode.NOT_FOUND, f"etcdserver: {msg}")
        if err.code == C.FAILED_PRECONDITION:
            raise EtcdError(StatusCode.FAILED_PRECONDITION, f"etcdserver: {msg}")
        raise EtcdError(StatusCode.UNKNOWN, f"etcdserver: {msg}")

    async def _call(
        self, req: apb.Request, deadline: float, *, lease: bool = False
    ) -> apb.Response:
        """Run a raftd API request (forwarded/deduplicated as raftd does) by ``deadline``."""
        req.timeout_ms = max(1, int((deadline - trio.current_time()) * 1000))
        resp = await self.svc.handle(req)
        if resp.error.code != C.OK:
            self._raise(resp.error, lease=lease)
        return resp

    async def _barrier(self, deadline: float) -> None:
        try:
            await self.svc.barrier(deadline)
        except ApiError as exc:
            self._raise(exc.to_pb())

    # -- KV --------------------------------------------------------------------------------
    async def range(self, req: epb.RangeRequest, deadline: float) -> epb.RangeResponse:
        if not req.key:
            raise errors.EMPTY_KEY
        if not req.serializable:
            await self._barrier(deadline)
        sm = self.group.sm
        current = sm.revision()
        if req.revision > current:
            raise errors.FUTURE_REV
        found = sm.range(req.key, req.range_end).kvs
        if 0 < req.revision < current:
            hist = sm.history
            if req.revision + 1 < hist.floor:
                raise errors.COMPACTED
            key, end = key_bounds(req.key, req.range_end)
            events, _ = hist.read(req.revision + 1, key, end, len(hist) + 1)
            kvs = range_at(found, events)
        else:
            kvs = [kv_of(kv) for kv in found]
        resp = epb.RangeResponse(header=self.header(current))
        apply_range_options(kvs, req, resp)
        return resp

    def put_start(
        self,
        req: epb.PutRequest,
        deadline: float,
        done: Callable[[epb.PutResponse | EtcdError], None],
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> InlineWrite | None:
        """:meth:`put` without a task (``NamespaceService.start_write``): the answer, or
        the EtcdError, is passed to ``done``. None (nothing started) for a put that
        needs :meth:`put` (an error to raise, ``ignore_value``, ``ignore_lease``)."""
        if not req.key or req.ignore_value or req.ignore_lease:
            return None
        native = apb.Request(
            put=kpb.PutRequest(key=req.key, value=req.value, prev_kv=req.prev_kv, lease=req.lease),
            timeout_ms=max(1, int((deadline - trio.current_time()) * 1000)),
        )

        def reply(r: apb.Response) -> None:
            if r.error.code != C.OK:
                try:
                    self._raise(r.error, lease=True)
                except EtcdError as exc:
                    done(exc)
                return
            out = epb.PutResponse(header=self.header(r.revision))
            if r.put.HasField("prev_kv"):
                out.prev_kv.CopyFrom(kv_of(r.put.prev_kv))
            done(out)

        return self.svc.start_write(native, reply, spawn)

    async def put(self, req: epb.PutRequest, deadline: float) -> epb.PutResponse:
        if not req.key:
            raise errors.EMPTY_KEY
        if req.ignore_value and req.value:
            raise errors.VALUE_PROVIDED
        if req.ignore_lease and req.lease:
            raise errors.LEASE_PROVIDED
        if req.ignore_value or req.ignore_lease:
            return await self._put_keeping(req, deadline)
        r = await self._call(
            apb.Request(
                put=kpb.PutRequest(
                    key=req.key, value=req.value, prev_kv=req.prev_kv, lease=req.lease
                )
            ),
            deadline,
            lease=True,
        )
        out = epb.PutResponse(header=self.header(r.revision))
        if r.put.HasField("prev_kv"):
            out.prev_kv.CopyFrom(kv_of(r.put.prev_kv))
        return out

    async def _put_keeping(self, req: epb.PutRequest, deadline: float) -> epb.PutResponse:
        """Put with ignore_value/ignore_lease: read the key linearizably, then write it in
        a transaction guarded by its mod_revision, again if it changed in between."""
        while True:
            await self._barrier(deadline)
            cur = self.group.sm.get(req.key)
            if cur is None:
                raise errors.KEY_NOT_FOUND
            put = kpb.PutRequest(
                key=req.key,
                value=cur.value if req.ignore_value else req.value,
                lease=cur.lease if req.ignore_lease else req.lease,
                prev_kv=req.prev_kv,
            )
            txn = kpb.TxnRequest(
                compare=[
                    kpb.Compare(
                        key=req.key,
                        target=kpb.Compare.MOD,
                        result=kpb.Compare.EQUAL,
                        mod_revision=cur.mod_revision,
                    )
                ],
                success=[kpb.RequestOp(put=put)],
            )
            r = await self._call(apb.Request(txn=txn), deadline, lease=True)
            if r.txn.succeeded:
                out = epb.PutResponse(header=self.header(r.revision))
                prev = r.txn.responses[0].put
                if prev.HasField("prev_kv"):
                    out.prev_kv.CopyFrom(kv_of(prev.prev_kv))
                return out

    async def delete_range(
        self, req: epb.DeleteRangeRequest, deadline: float
    ) -> epb.DeleteRangeResponse:
        if not req.key:
            raise errors.EMPTY_KEY
        r = await self._call(
            apb.Request(
                delete_range=kpb.DeleteRangeRequest(
                    key=req.key, range_end=req.range_end, prev_kv=req.prev_kv
                )
            ),
            deadline,
        )
        out = epb.DeleteRangeResponse(
            header=self.header(r.revision), deleted=r.delete_range.deleted
        )
        out.prev_kvs.extend(kv_of(kv) for kv in r.delete_range.prev_kvs)
        return out

    async def txn(self, req: epb.TxnRequest, deadline: float) -> epb.TxnResponse:
        cmd = txn_command(req)
        r = await self._call(apb.Request(txn=cmd), deadline, lease=True)
        hdr = self.header(r.revision)
        out = epb.TxnResponse(header=hdr, succeeded=r.txn.succeeded)
        ops = req.success if r.txn.succeeded else req.failure
        for op, res in zip(ops, r.txn.responses, strict=True):
            ro = out.responses.add()
            kind = op.WhichOneof("request")
            if kind == "request_range":
                rr = ro.response_range
                rr.header.CopyFrom(hdr)
                apply_range_options([kv_of(kv) for kv in res.range.kvs], op.request_range, rr)
            elif kind == "request_put":
                ro.response_put.header.CopyFrom(hdr)
                if res.put.HasField("prev_kv"):
                    ro.response_put.prev_kv.CopyFrom(kv_of(res.put.prev_kv))
            else:
                dr = ro.response_delete_range
                dr.header.CopyFrom(hdr)
                dr.deleted = res.delete_range.deleted
                dr.prev_kvs.extend(kv_of(kv) for kv in res.delete_range.prev_kvs)
        return out

    async def compact(self, req: epb.CompactionRequest, deadline: float) -> epb.CompactionResponse:
        """Accepted and validated; frees nothing (raftd keeps only the latest values, and
        the recent changes in a bounded window)."""
        sm = self.group.sm
        if req.revision > sm.revision():
            raise errors.FUTURE_REV
        if req.revision < sm.history.floor - 1:
            raise errors.COMPACTED
        return epb.CompactionResponse(header=self.header())

    # -- Watch -----------------------------------------------------------------------------
    async def watch(
        self, requests: trio.MemoryReceiveChannel[epb.WatchRequest], send: Send
    ) -> None:
        """Serve one Watch stream until the client closes its side (see the module doc
        of :mod:`raftd.etcd.http2` for the stream plumbing)."""
        scopes: dict[int, trio.CancelScope] = {}
        next_id = 0
        async with trio.open_nursery() as nursery:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    cr = req.create_request
                    wid = cr.watch_id
                    if wid == 0 or wid in scopes:
                        if wid in scopes and wid != 0:
                            await send(
                                epb.WatchResponse(
                                    header=self.header(),
                                    watch_id=wid,
                                    created=True,
                                    canceled=True,
                                    cancel_reason="etcdserver: duplicate watch ID",
                                )
                            )
                            continue
                        while next_id in scopes:
                            next_id += 1
                        wid = next_id
                        next_id += 1
                    rev = self.group.sm.revision()
                    start = cr.start_revision if cr.start_revision > 0 else rev + 1
                    # created goes out before anything of this watcher and before the next
                    # create is read: clients pair created responses with their requests.
                    await send(
                        epb.WatchResponse(header=self.header(rev), watch_id=wid, created=True)
                    )
                    scope = trio.CancelScope()
                    scopes[wid] = scope
                    nursery.start_soon(self._watcher, wid, cr, start, scope, send, scopes)
                elif kind == "cancel_request":
                    wid = req.cancel_request.watch_id
                    sc = scopes.pop(wid, None)
                    if sc is not None:
                        sc.cancel()
                        await send(
                            epb.WatchResponse(
                                header=self.header(),
                                watch_id=wid,
                                canceled=True,
                                cancel_reason="watcher canceled by client",
                            )
                        )
                elif kind == "progress_request":
                    await send(epb.WatchResponse(header=self.header(), watch_id=-1))
            nursery.cancel_scope.cancel()

    async def _watcher(
        self,
        wid: int,
        cr: epb.WatchCreateRequest,
        start: int,
        scope: trio.CancelScope,
        send: Send,
        scopes: dict[int, trio.CancelScope],
    ) -> None:
        sm = self.group.sm
        key, end = key_bounds(cr.key, cr.range_end)
        no_put = epb.WatchCreateRequest.NOPUT in cr.filters
        no_delete = epb.WatchCreateRequest.NODELETE in cr.filters
        with scope:
            last_sent = trio.current_time()
            while True:
                changed = self._changed
                hist = sm.history
                try:
                    events, nxt = hist.read(start, key, end, WATCH_BATCH)
                except LookupError:
                    scopes.pop(wid, None)
                    await send(
                        epb.WatchResponse(
                            header=self.header(),
                            watch_id=wid,
                            canceled=True,
                            compact_revision=hist.floor,
                            cancel_reason="etcdserver: mvcc: required revision has been compacted",
                        )
                    )
                    return
                if events:
                    out = [
                        event_of(e, cr.prev_kv)
                        for e in events
                        if not (no_put if e.type == PUT else no_delete)
                    ]
                    if out:
                        resp = epb.WatchResponse(header=self.header(), watch_id=wid)
                        resp.events.extend(out)
                        await send(resp)
                        last_sent = trio.current_time()
                start = nxt
                if events and nxt <= hist.last:
                    continue
                if cr.progress_notify:
                    wake = last_sent + self.progress_interval
                    with trio.move_on_at(wake):
                        await changed.wait()
                    if trio.current_time() >= wake:
                        await send(epb.WatchResponse(header=self.header(), watch_id=wid))
                        last_sent = trio.current_time()
                else:
                    await changed.wait()

    # -- Lease -----------------------------------------------------------------------------
    async def lease_grant(
        self, req: epb.LeaseGrantRequest, deadline: float
    ) -> epb.LeaseGrantResponse:
        if req.TTL > MAX_LEASE_TTL:
            raise errors.LEASE_TTL_TOO_LARGE
        if req.ID < 0:
            raise errors.LEASE_NOT_FOUND
        if req.ID and self.group.sm.lease(req.ID) is not None:
            raise errors.LEASE_EXIST
        r = await self._call(
            apb.Request(lease_grant=kpb.LeaseGrantRequest(ttl=max(1, req.TTL), id=req.ID)),
            deadline,
            lease=True,
        )
        return epb.LeaseGrantResponse(
            header=self.header(r.revision), ID=r.lease_grant.id, TTL=r.lease_grant.ttl
        )

    async def lease_revoke(
        self, req: epb.LeaseRevokeRequest, deadline: float
    ) -> epb.LeaseRevokeResponse:
        if req.ID <= 0:
            raise errors.LEASE_NOT_FOUND
        r = await self._call(
            apb.Request(lease_revoke=kpb.LeaseRevokeRequest(id=req.ID)), deadline, lease=True
        )
        return epb.LeaseRevokeResponse(header=self.header(r.revision))

    async def lease_keepalive(
        self, requests: trio.MemoryReceiveChannel[epb.LeaseKeepAliveRequest], send: Send
    ) -> None:
        """Each keep-alive restarts the lease's timer on the leader; an unknown lease
        answers TTL 0 (as etcd: the client reports it expired)."""
        timeout = self.svc.preset.request_timeout_s
        async with trio.open_nursery() as nursery:
            async for req in requests:
                nursery.start_soon(self._keepalive_one, req.ID, trio.current_time() + timeout, send)
            nursery.cancel_scope.cancel()

    async def _keepalive_one(self, lid: int, deadline: float, send: Send) -> None:
        ttl = 0
        if lid > 0:
            try:
                r = await self._call(
                    apb.Request(lease_keepalive=apb.LeaseKeepAliveRequest(id=lid)),
                    deadline,
                    lease=True,
                )
                ttl = r.lease_keepalive.ttl
            except EtcdError as exc:
                if exc is not errors.LEASE_NOT_FOUND:
                    log.debug("keep-alive of lease %d failed: %s", lid, exc)
                    return  # the client sends the next one; etcd also answers nothing
        await send(epb.LeaseKeepAliveResponse(header=self.header(), ID=lid, TTL=ttl))

    async def lease_time_to_live(
        self, req: epb.LeaseTimeToLiveRequest, deadline: float
    ) -> epb.LeaseTimeToLiveResponse:
        try:
            if req.ID <= 0:
                raise errors.LEASE_NOT_FOUND
            r = await self._call(
                apb.Request(lease_ttl=apb.LeaseTimeToLiveRequest(id=req.ID, keys=req.keys)),
                deadline,
                lease=True,
            )
        except EtcdError as exc:
            if exc is not errors.LEASE_NOT_FOUND:
                raise
            return epb.LeaseTimeToLiveResponse(header=self.header(), ID=req.ID, TTL=-1)
        t = r.lease_ttl
        return epb.LeaseTimeToLiveResponse(
            header=self.header(), ID=req.ID, TTL=t.ttl, grantedTTL=t.granted_ttl, keys=list(t.keys)
        )

    async def lease_leases(
        self, req: epb.LeaseLeasesRequest, deadline: float
    ) -> epb.LeaseLeasesResponse:
        out = epb.LeaseLeasesResponse(header=self.header())
        for lid in sorted(self.group.sm.leases()):
            out.leases.add(ID=lid)
        return out

    # -- Cluster ---------------------------------------------------------------------------
    def _member(self, pid: str, learner: bool) -> epb.Member:
        urls = [a if "/p2p/" in a else f"{a}/p2p/{pid}" for a in self.svc.addrs_of(pid)]
        return epb.Member(
            ID=member_id(pid),
            name=pid,
            peerURLs=urls,
            clientURLs=self.client_urls if pid == self.svc.id else [],
            isLearner=learner,
        )

    def members(self) -> list[epb.Member]:
        cs = self.group.conf
        return [self._member(p, False) for p in sorted(cs.voters)] + [
            self._member(p, True) for p in sorted(cs.learners)
        ]

    def _peer_of(self, mid: int) -> tuple[str, bool]:
        cs = self.group.conf
        for p in cs.voters:
            if member_id(p) == mid:
                return p, False
        for p in cs.learners:
            if member_id(p) == mid:
                return p, True
        raise errors.MEMBER_NOT_FOUND

    async def member_list(
        self, req: epb.MemberListRequest, deadline: float
    ) -> epb.MemberListResponse:
        if req.linearizable:
            await self._barrier(deadline)
        return epb.MemberListResponse(header=self.header(), members=self.members())

    def _parse_peer_urls(self, urls: list[str]) -> tuple[str, list[str]]:
        """MemberAdd/MemberUpdate peer URLs -> (the one peer id they name, multiaddrs)."""
        peers: set[str] = set()
        addrs: list[str] = []
        for url in urls:
            url = peer_url_to_multiaddr(url)
            head, sep, pid = url.rpartition("/p2p/")
            if not url.startswith("/") or not sep or not pid or "/" in pid:
                raise errors.MEMBER_BAD_URLS
            peers.add(pid)
            if head:
                addrs.append(head)
        if len(peers) != 1:
            raise errors.MEMBER_BAD_URLS
        return peers.pop(), addrs

    async def member_add(self, req: epb.MemberAddRequest, deadline: float) -> epb.MemberAddResponse:
        pid, addrs = self._parse_peer_urls(list(req.peerURLs))
        cs = self.group.conf
        if pid in cs.voters or pid in cs.learners:
            raise errors.PEER_URL_EXIST
        m = apb.MemberRequest(id=pid, addrs=addrs)
        areq = apb.Request(add_learner=m) if req.isLearner else apb.Request(add_voter=m)
        await self._call(areq, deadline)
        return epb.MemberAddResponse(
            header=self.header(),
            member=self._member(pid, req.isLearner),
            members=self.members(),
        )

    async def member_remove(
        self, req: epb.MemberRemoveRequest, deadline: float
    ) -> epb.MemberRemoveResponse:
        pid, _ = self._peer_of(req.ID)
        await self._call(apb.Request(remove=apb.MemberRequest(id=pid)), deadline)
        return epb.MemberRemoveResponse(header=self.header(), members=self.members())

    async def member_promote(
        self, req: epb.MemberPromoteRequest, deadline: float
    ) -> epb.MemberPromoteResponse:
        pid, learner = self._peer_of(req.ID)
        if not learner:
            raise errors.MEMBER_NOT_LEARNER
        await self._call(apb.Request(promote=apb.MemberRequest(id=pid)), deadline)
        return epb.MemberPromoteResponse(header=self.header(), members=self.members())

    async def member_update(
        self, req: epb.MemberUpdateRequest, deadline: float
    ) -> epb.MemberUpdateResponse:
        """Replace a member's addresses, as etcd does: ``raftd member add`` of that
        member again, in its role, with the addresses. Every other member sets them as
        the member's addresses when it applies the (otherwise empty) membership change.
        The URLs must name the member's own peer id."""
        pid, learner = self._peer_of(req.ID)
        upid, addrs = self._parse_peer_urls(list(req.peerURLs))
        if upid != pid or not addrs:
            raise errors.MEMBER_BAD_URLS
        m = apb.MemberRequest(id=pid, addrs=addrs)
        await self._call(
            apb.Request(add_learner=m) if learner else apb.Request(add_voter=m), deadline
        )
        return epb.MemberUpdateResponse(header=self.header(), members=self.members())

    # -- Maintenance -----------------------------------------------------------------------
    def _alarms(self) -> list[epb.AlarmMember]:
        failed = self.group.failed
        if failed is not None and "No space" in str(failed):
            return [epb.AlarmMember(memberID=self.member_id, alarm=epb.NOSPACE)]
        return []

    def db_size(self) -> int:
        size = 0
        for d in self.db_dirs:
            with contextlib.suppress(OSError):  # a file a compaction deleted meanwhile
                size += sum(e.stat().st_size for e in os.scandir(d) if e.is_file())
        return size

    async def status(self, req: epb.StatusRequest, deadline: float) -> epb.StatusResponse:
        st = self.group.status()
        size = self.db_size()
        out = epb.StatusResponse(
            header=self.header(),
            version=VERSION,
            dbSize=size,
            dbSizeInUse=size,
            leader=member_id(st["leader"]),
            raftIndex=st["commit"],
            raftTerm=st["term"],
            raftAppliedIndex=st["applied"],
            isLearner=st["role"] == "learner",
        )
        if self.group.failed is not None:
            out.errors.append(f"raftd: group stopped: {self.group.failed}")
        for a in self._alarms():
            out.errors.append(f"memberID:{a.memberID} alarm:{epb.AlarmType.Name(a.alarm)} ")
        return out

    async def alarm(self, req: epb.AlarmRequest, deadline: float) -> epb.AlarmResponse:
        """Reports NOSPACE while this daemon's group is stopped on a full disk; the alarm
        clears by restarting the daemon once there is room (deactivate changes nothing)."""
        return epb.AlarmResponse(header=self.header(), alarms=self._alarms())

    async def defragment(
        self, req: epb.DefragmentRequest, deadline: float
    ) -> epb.DefragmentResponse:
        """A no-op: LevelDB compacts its files in the background by itself."""
        return epb.DefragmentResponse(header=self.header())

    def _hash(self) -> int:
        h = 0
        for kv in self.group.sm.range(b"\x00", b"\x00").kvs:
            h = zlib.crc32(kv.key, h)
            h = zlib.crc32(kv.value, h)
            h = zlib.crc32(
                f"{kv.create_revision}:{kv.mod_revision}:{kv.version}:{kv.lease}".encode(), h
            )
        return h

    async def hash(self, req: epb.HashRequest, deadline: float) -> epb.HashResponse:
        return epb.HashResponse(header=self.header(), hash=self._hash())

    async def hash_kv(self, req: epb.HashKVRequest, deadline: float) -> epb.HashKVResponse:
        """CRC-32 of every key, value and revision at the current revision (the only one
        raftd can hash: ``revision`` must be 0 or the current one)."""
        sm = self.group.sm
        rev = sm.revision()
        if req.revision > rev:
            raise errors.FUTURE_REV
        if 0 < req.revision < rev:
            raise errors.COMPACTED
        return epb.HashKVResponse(
            header=self.header(rev), hash=self._hash(), compact_revision=sm.history.floor - 1
        )

    async def snapshot(self, req: epb.SnapshotRequest, send: Send) -> None:
        """Stream a raftd backup as a file ``etcdctl snapshot save`` accepts (see
        :mod:`raftd.etcd.snapfile`); ``raftd snapshot restore`` reads it, etcd's tools
        do not (it is not a bbolt database)."""
        size = 0
        sent = 0
        sha = hashlib.sha256()

        async def relay(r: apb.Response) -> None:
            nonlocal size, sent
            s = r.snapshot
            if s.chunk:
                sent += len(s.chunk)
                sha.update(s.chunk)
                left = size - sent + len(snapfile.padding(size)) + 32
                await send(
                    epb.SnapshotResponse(header=self.header(), remaining_bytes=left, blob=s.chunk)
                )
            elif not s.done:
                size = s.size

        try:
            await self.svc.snapshot(apb.Request(snapshot=apb.SnapshotRequest()), relay)
        except ApiError as exc:
            self._raise(exc.to_pb())
        pad = snapfile.padding(sent)
        sha.update(pad)
        await send(epb.SnapshotResponse(header=self.header(), remaining_bytes=32, blob=pad))
        await send(epb.SnapshotResponse(header=self.header(), remaining_bytes=0, blob=sha.digest()))

    async def move_leader(
        self, req: epb.MoveLeaderRequest, deadline: float
    ) -> epb.MoveLeaderResponse:
        try:
            pid, learner = self._peer_of(req.targetID)
        except EtcdError:
            raise errors.BAD_LEADER_TRANSFEREE from None
        if learner:
            raise errors.BAD_LEADER_TRANSFEREE
        await self._call(
            apb.Request(transfer_leader=apb.TransferLeaderRequest(target=pid)), deadline
        )
        return epb.MoveLeaderResponse(header=self.header())

    # -- Auth ------------------------------------------------------------------------------
    async def authenticate(
        self, req: epb.AuthenticateRequest, deadline: float
    ) -> epb.AuthenticateResponse:
        raise errors.AUTH_NOT_ENABLED


def peer_url_to_multiaddr(url: str) -> str:
    """A MemberAdd peer URL as a multiaddr. Multiaddrs pass through; etcdctl only lets
    ``http(s)://HOST:PORT`` URLs through, so ``http://HOST:PORT?p2p=<peer id>`` stands
    for ``/ip4|ip6|dns/HOST/tcp/PORT/p2p/<peer id>``. Anything else is returned as is
    (and refused by the caller)."""
    if url.startswith("/"):
        return url
    parts = urllib.parse.urlsplit(url)
    pid = urllib.parse.parse_qs(parts.query).get("p2p", [""])[0]
    if parts.scheme not in ("http", "https") or not pid or parts.path not in ("", "/"):
        return url
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return url
    if not host or port is None:
        return url
    try:
        proto = "ip6" if ipaddress.ip_address(host).version == 6 else "ip4"
    except ValueError:
        proto = "dns"
    return f"/{proto}/{host}/tcp/{port}/p2p/{pid}"
