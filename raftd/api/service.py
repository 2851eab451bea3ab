"""What an API request does, for one namespace on this daemon.

:class:`NamespaceService` is I/O-free apart from the group and the forwarder: the
connection layer (:mod:`raftd.api.server`) parses frames and calls :meth:`handle` (or
:meth:`watch`); the command protocol handler calls :meth:`handle_forwarded`.

Paths, by operation:

- **reads** (get, range, barrier): LINEARIZABLE runs ``Group.read_barrier()`` (ReadIndex,
  works on followers and learners; retried across leader changes) then reads the local
  state machine; STALE reads it directly.
- **writes** (put, delete, delete_range, cas, txn, lease grant/revoke) and **leader
  operations** (membership changes, transfer, lease keepalive/TTL) run on the leader:
  here if this daemon leads, else forwarded over ``/raftd/1<ns>/cmd``. The daemon waits
  (within the request's deadline) for a leader to be known, and retries when the leader
  changes or is unreachable, so clients never see "not leader".
- **local** (status, members, lease list): this daemon's view. ``status`` with
  ``leader_commit`` also asks the leader for its commit index (``Group.read_index()``:
  a ReadIndex round, without waiting to apply it), retried across leader changes.

Exactly-once writes. Every write carries a ``client_id``/``seq``: the client's, or one
assigned here from a *lane*. A lane is a session identity of this daemon
(``raftd:<peer id>:<n>``) that carries at most one write at a time; the write keeps its
seq through every retry (to this leader or the next), and the state machine answers a
repeated seq with the remembered result instead of applying it again. Lanes are reused
(a free list), so the number of sessions grows with the peak number of concurrent writes,
not with the number of writes. Seqs start at the daemon's start time in nanoseconds, so
they keep increasing across restarts; a ``STALE_SEQUENCE`` answer (a clock that went
back) moves the lane forward and retries, which is safe because a stale command is never
applied.

Outcome of a write that cannot complete: ``UNAVAILABLE`` with ``indeterminate=false`` if
it never reached a leader; otherwise ``DEADLINE_EXCEEDED`` (or ``UNAVAILABLE``) with
``indeterminate=true``: it may have been applied, exactly once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from raftd.api.errors import ApiError
from raftd.api.leases import LeaseClock, min_lease_ttl
from raftd.core import NONE, TRANSIENT_REFUSALS, ConfChange, ConfChangeType, ConfState, NodeId
from raftd.kv.backupfile import write_backup
from raftd.kv.machine import RestoreInProgressError
from raftd.kv.watch import PUT, KeyEvent
from raftd.runtime.forward import Forwarder, ForwardError
from raftd.runtime.group import (
    CommandProposal,
    Group,
    GroupError,
    GroupUnavailable,
    LeadershipLost,
    NotLeader,
    ProposalRejected,
    ProposalsIgnored,
)
from raftd.runtime.presets import Preset
from raftd.transport.libp2p import parse_peer_id
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb
from raftd.wire.ranges import key_bounds

__all__ = [
    "INLINE_WRITE_OPS",
    "LEADER_OPS",
    "LOCAL_OPS",
    "MAX_TIMEOUT_S",
    "READ_OPS",
    "WRITE_OPS",
    "AddressBook",
    "InlineRead",
    "InlineWrite",
    "Lane",
    "LanePool",
    "NamespaceService",
]

log = logging.getLogger("raftd.api")
BACKUP_CHUNK = 256 * 1024

C = apb.Error
WRITE_OPS = frozenset(
    {"put", "delete", "delete_range", "cas", "txn", "lease_grant", "lease_revoke"}
)
#: Writes that :meth:`NamespaceService.start_write` serves without a task (a lease
#: grant may have its TTL raised first, so it takes the general path).
INLINE_WRITE_OPS = WRITE_OPS - {"lease_grant"}
CONF_OPS = frozenset({"add_voter", "add_learner", "promote", "remove"})
LEADER_OPS = CONF_OPS | {"transfer_leader", "lease_keepalive", "lease_ttl"}
READ_OPS = frozenset({"get", "range", "barrier"})
LOCAL_OPS = frozenset({"status", "members", "lease_list"})
#: Longest deadline a request may ask for.
MAX_TIMEOUT_S = 600.0
#: Watch events per response (whole revisions, so a response may hold a few more).
WATCH_BATCH = 1000


class AddressBook(Protocol):
    """The transport's peer addresses (``Libp2pTransport`` has both methods)."""

    def peer_addrs(self, peer_id: str) -> list[str]: ...

    def add_peer_addrs(self, peer_id: str, addrs: list[str]) -> None: ...


@dataclass(slots=True)
class Lane:
    """One session identity of this daemon; at most one write uses it at a time."""

    client_id: bytes
    seq: int

    def next(self) -> int:
        self.seq += 1
        return self.seq

    def skip(self) -> None:
        """Jump ahead after a STALE_SEQUENCE answer."""
        self.seq += 1 << 32


class LanePool:
    """Lanes ``raftd:<node>:<n>``, reused most-recent-first (see the module doc)."""

    def __init__(self, node_id: str, *, seq_base: int | None = None) -> None:
        self._prefix = f"raftd:{node_id}:".encode()
        self._base = time.time_ns() if seq_base is None else seq_base
        self._free: list[Lane] = []
        self.created = 0

    def acquire(self) -> Lane:
        if self._free:
            return self._free.pop()
        lane = Lane(self._prefix + str(self.created).encode(), self._base)
        self.created += 1
        return lane

    def release(self, lane: Lane) -> None:
        self._free.append(lane)


def _kv_of(key: bytes, rec: object | None, revision: int) -> kpb.KeyValue:
    if rec is None:
        return kpb.KeyValue(key=key, mod_revision=revision)
    return kpb.KeyValue(
        key=key,
        value=rec.value,  # type: ignore[attr-defined]
        create_revision=rec.create_revision,  # type: ignore[attr-defined]
        mod_revision=rec.mod_revision,  # type: ignore[attr-defined]
        version=rec.version,  # type: ignore[attr-defined]
        lease=rec.lease,  # type: ignore[attr-defined]
    )


def event_pb(e: KeyEvent, prev_kv: bool) -> apb.Event:
    """The wire form of one history event."""
    ev = apb.Event(
        type=apb.Event.PUT if e.type == PUT else apb.Event.DELETE,
        kv=_kv_of(e.key, e.record, e.revision),
    )
    if prev_kv and e.prev is not None:
        ev.prev_kv.CopyFrom(_kv_of(e.key, e.prev, e.prev.mod_revision))
    return ev


class _Attempt:
    """How far a leader-bound request got, to choose the error at the deadline."""

    __slots__ = ("in_flight", "maybe_applied")

    def __init__(self) -> None:
        self.in_flight = False  # a leader is working on it right now
        self.maybe_applied = False  # some attempt may have reached a leader

    def deadline_error(self, *, write: bool, leader: str) -> ApiError:
        if self.in_flight:
            return ApiError(
                C.DEADLINE_EXCEEDED,
                "deadline exceeded while the leader was working on the request",
                indeterminate=write,
                leader=leader,
            )
        return ApiError(
            C.UNAVAILABLE,
            "no reachable leader within the deadline (no quorum?)",
            indeterminate=write and self.maybe_applied,
            leader=leader,
        )


class NamespaceService:
    """Serves one namespace's API requests on this daemon (see the module doc)."""

    def __init__(
        self,
        group: Group,
        *,
        transport: AddressBook,
        forwarder: Forwarder | None,
        local_addrs: Callable[[], list[str]],
        preset: Preset | None = None,
    ) -> None:
        self.group = group
        self.namespace = group.namespace
        self.id = group.id
        self.transport = transport
        self.forwarder = forwarder
        self.local_addrs = local_addrs
        self.preset = preset or group.preset
        self.lanes = LanePool(group.id)
        self.leases = LeaseClock(group)
        self.min_lease_ttl = min_lease_ttl(self.preset.election_s)
        self._leader_event = trio.Event()
        self._changed = trio.Event()
        #: retries_after_send: writes resent (same client id and seq) after an attempt
        #: that may have been applied; the state machine deduplicates them.
        self.stats = {"retries_after_send": 0}
        #: Leaders seen to apply no PROP from here (an older version during a rolling
        #: upgrade), until when writes reach them over the cmd stream instead.
        self._cmd_only_leaders: dict[NodeId, float] = {}
        self._pending_round: _Round | None = None
        self._inflight_round: _Round | None = None
        #: Inline linearizable reads: the round in flight, and those for the next one.
        self._round_reads: list[InlineRead] | None = None
        self._next_reads: list[InlineRead] = []
        self._round_started = 0.0
        self._round_gen = 0
        group.add_leader_listener(self._on_leader_change)
        group.add_conf_listener(self._on_conf_change)
        group.sm.add_listener(self._on_apply)

    # -- notifications (synchronous, from the group's task) ------------------------------
    def _on_leader_change(self, leader: NodeId) -> None:
        self._leader_event.set()
        self._leader_event = trio.Event()

    def _on_apply(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _on_conf_change(self, cc: ConfChange, cs: ConfState) -> None:
        # A membership change made through the API names the new member's addresses:
        # every member learns them when it applies the entry.
        if not cc.context or cc.node_id == self.id or cc.type == ConfChangeType.REMOVE_NODE:
            return
        try:
            ctx = apb.MemberContext.FromString(cc.context)
            if ctx.addrs:
                self.transport.add_peer_addrs(cc.node_id, list(ctx.addrs))
        except Exception as exc:  # another component's context format, or bad addresses
            log.debug("%s: conf change context not used: %s", self.namespace, exc)

    async def _wait_leader_change(self, old: NodeId, wait_s: float) -> None:
        """Return when the known leader is no longer ``old``, or after ``wait_s``."""
        with trio.move_on_after(wait_s):
            while self.group.leader == old:
                await self._leader_event.wait()

    async def wait_revision(self, revision: int) -> None:
        """Return once the local state machine reached ``revision``."""
        while self.group.sm.revision() < revision:
            ev = self._changed
            if self.group.sm.revision() >= revision:
                return
            await ev.wait()

    def timeout_of(self, req: apb.Request) -> float:
        if req.timeout_ms:
            return min(req.timeout_ms / 1000.0, MAX_TIMEOUT_S)
        return self.preset.request_timeout_s

    # -- entry points ---------------------------------------------------------------------
    async def handle(self, req: apb.Request) -> apb.Response:
        """Serve one request from a local client (any op but auth/watch/watch_cancel).
        Never raises for request problems: errors are in the response."""
        op = req.WhichOneof("op")
        deadline = trio.current_time() + self.timeout_of(req)
        try:
            validate(req, op)
            if op in READ_OPS:
                resp = await self._read(req, op, deadline)
            elif op in WRITE_OPS:
                resp = await self._write(req, op, deadline)
            elif op in LEADER_OPS:
                resp = await self._leader_op(req, op, deadline)
            elif op in LOCAL_OPS:
                resp = await self._local(req, op, deadline)
            else:
                raise ApiError(C.INVALID_ARGUMENT, f"operation {op!r} is not served here")
        except ApiError as exc:
            resp = exc.response()
        except RestoreInProgressError:
            resp = ApiError(C.UNAVAILABLE, "state machine is being restored").response()
        resp.id = req.id
        return resp

    def start_write(
        self,
        req: apb.Request,
        reply: Callable[[apb.Response], None],
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> InlineWrite | None:
        """Start a write as :meth:`handle` would, without a task of its own: the answer
        is passed to ``reply`` (exactly once, on the group's task or synchronously here
        for a request refused at once), with ``resp.id`` set. Returns None, doing
        nothing, when the request is not one this path takes (then run :meth:`handle`).

        The caller owns the deadline: it calls :meth:`InlineWrite.expire` once
        ``InlineWrite.deadline`` has passed, and :meth:`InlineWrite.abandon` when it
        stops caring (no reply then). The rare continuations that must wait for I/O (a
        leader that ignores PROP messages, a lane's stale sequence) run in a task
        started with ``spawn``."""
        op = req.WhichOneof("op")
        if op not in INLINE_WRITE_OPS:
            return None
        if self._cmd_only_leaders.get(self.group.leader, -math.inf) > trio.current_time():
            return None
        w = InlineWrite(self, req, op, reply, spawn)
        w.begin()
        return w

    def start_read(
        self,
        req: apb.Request,
        reply: Callable[[apb.Response], None],
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> InlineRead | None:
        """Serve a read as :meth:`handle` would, without a task of its own, under the
        same contract as :meth:`start_write`: a stale read is answered here and now; a
        linearizable one joins the next ReadIndex round, which this service keeps at
        most one of in flight (as ``_coalesced_read_barrier`` does), and is answered
        from the group's callback. Returns None for requests this path does not take
        (another op, or a ``min_revision`` not yet reached)."""
        op = req.WhichOneof("op")
        if op not in READ_OPS or req.min_revision > self.group.sm.revision():
            return None
        r = InlineRead(self, req, op, reply, spawn)
        r.begin()
        return r

    def _join_read_round(self, r: InlineRead) -> None:
        self._next_reads.append(r)
        if self._round_reads is None:
            self._start_read_round()
        elif trio.current_time() - self._round_started > self.preset.election_s:
            # A ReadIndex request or its answer can be lost with the leader unchanged,
            # and nothing else ends that round: give up on it, and serve its reads with
            # the next one (which starts after all of them arrived).
            self._next_reads[:0] = self._round_reads
            self._round_reads = None
            self._start_read_round()

    def _start_read_round(self) -> None:
        reads, self._next_reads = self._next_reads, []
        reads = [r for r in reads if not r.finished]
        if not reads:
            return
        self._round_gen += 1
        try:
            self.group.read_barrier_start(functools.partial(self._read_round_done, self._round_gen))
        except NotLeader:
            for r in reads:
                r.fallback()  # waits for a leader within its deadline
            return
        except GroupUnavailable as exc:
            for r in reads:
                r.fail(ApiError(C.UNAVAILABLE, str(exc)))
            return
        self._round_reads = reads
        self._round_started = trio.current_time()

    def _read_round_done(self, gen: int, waiter: Any) -> None:
        if gen != self._round_gen:
            return  # a round given up on: its reads went to a later one
        reads, self._round_reads = self._round_reads or [], None
        err = waiter.error
        for r in reads:
            if r.finished:
                continue
            if err is None:
                r.finish(waiter.result)
            elif isinstance(err, GroupUnavailable):
                r.fail(ApiError(C.UNAVAILABLE, str(err)))
            else:
                r.fallback()  # the leader changed: retried as the general path does
        if self._next_reads:
            self._start_read_round()

    async def handle_forwarded(self, req: apb.Request, remote: str) -> apb.Response:
        """Run a request another daemon forwarded to us as leader: never forward again
        (answer NOT_LEADER instead). Writes answer with the raw ``command_result``."""
        op = req.WhichOneof("op")
        deadline = trio.current_time() + self.timeout_of(req)
        with trio.move_on_at(deadline):
            if op not in WRITE_OPS and op not in LEADER_OPS:
                return ApiError(C.INVALID_ARGUMENT, f"{op!r} cannot be forwarded").response()
            try:
                validate(req, op)
            except ApiError as exc:
                return exc.response()
            return await self._exec_leader(req, op, deadline)
        return ApiError(
            C.DEADLINE_EXCEEDED,
            "deadline exceeded on the leader",
            indeterminate=op in WRITE_OPS,
            leader=self.group.leader,
        ).response()

    # -- reads -----------------------------------------------------------------------------
    async def barrier(self, deadline: float) -> int:
        """ReadIndex with retries across leader changes, until ``deadline``. Returns the
        read index (the local state machine has applied it)."""
        return await self._read_index_retrying(
            self._coalesced_read_barrier, deadline, "the read index"
        )

    async def leader_commit(self, deadline: float) -> int:
        """The leader's commit index (``Group.read_index()``: confirmed by a ReadIndex
        round that starts after the call; not waiting for this daemon to apply it), with
        retries across leader changes until ``deadline``. ApiError UNAVAILABLE (no
        leader, group down) or DEADLINE_EXCEEDED otherwise."""
        return await self._read_index_retrying(
            self.group.read_index, deadline, "the leader's commit index"
        )

    async def _read_index_retrying(
        self, read: Callable[[], Awaitable[int]], deadline: float, what: str
    ) -> int:
        with trio.move_on_at(deadline):
            while True:
                leader = self.group.leader
                if leader == NONE:
                    await self._wait_leader_change(NONE, deadline - trio.current_time())
                    continue
                try:
                    return await read()
                except _RetryRound:
                    continue
                except NotLeader:
                    await self._wait_leader_change(leader, 0.05)
                except GroupUnavailable as exc:
                    raise ApiError(C.UNAVAILABLE, str(exc)) from exc
        if self.group.leader == NONE:
            raise ApiError(C.UNAVAILABLE, "no leader within the deadline (no quorum?)")
        raise ApiError(C.DEADLINE_EXCEEDED, f"deadline exceeded waiting for {what}")

    async def _coalesced_read_barrier(self) -> int:
        """``Group.read_barrier()`` with at most one ReadIndex round in flight: a request
        that arrives while a round is in flight joins the NEXT round (the one in flight
        may have fixed its read index before the request arrived, so using it would not
        be linearizable). Under load every round serves everything that arrived during
        the previous one: one heartbeat round trip for many reads instead of one each."""
        rnd = self._pending_round
        if rnd is None:
            rnd = self._pending_round = _Round()
        while self._inflight_round is not None and self._inflight_round is not rnd:
            await self._inflight_round.done.wait()
        if rnd.started:
            await rnd.done.wait()
        else:
            rnd.started = True
            self._pending_round = None  # later arrivals make the next round
            self._inflight_round = rnd
            try:
                rnd.index = await self.group.read_barrier()
            except GroupError as exc:
                rnd.error = exc
            except BaseException:
                rnd.error = _RetryRound()  # this driver was cancelled: others retry
                raise
            finally:
                self._inflight_round = None
                rnd.done.set()
        if rnd.error is not None:
            raise rnd.error
        return rnd.index

    async def _prepare_read(self, linearizable: bool, min_revision: int, deadline: float) -> int:
        index = 0
        if linearizable:
            index = await self.barrier(deadline)
        if min_revision > self.group.sm.revision():
            with trio.move_on_at(deadline):
                await self.wait_revision(min_revision)
            if self.group.sm.revision() < min_revision:
                raise ApiError(
                    C.DEADLINE_EXCEEDED,
                    f"revision {min_revision} not reached within the deadline "
                    f"(at {self.group.sm.revision()})",
                )
        return index

    async def _read(self, req: apb.Request, op: str, deadline: float) -> apb.Response:
        linearizable = req.consistency == apb.LINEARIZABLE
        index = await self._prepare_read(linearizable, req.min_revision, deadline)
        return self._read_now(req, op, index)

    def _read_now(self, req: apb.Request, op: str, index: int) -> apb.Response:
        """The local part of a read, once its read index (0: a stale read) is applied."""
        sm = self.group.sm
        resp = apb.Response(raft_index=index, revision=sm.revision())
        if op == "get":
            kv = sm.get(req.get.key)
            if kv is None:
                raise ApiError(C.NOT_FOUND, f"key {req.get.key!r} not found")
            resp.get.kv.CopyFrom(kv)
        elif op == "range":
            r = req.range
            out = sm.range(r.key, r.range_end, r.limit)
            if r.keys_only:
                for kv in out.kvs:
                    kv.value = b""
            resp.range.CopyFrom(out)
        else:
            resp.barrier.SetInParent()
        return resp

    async def _local(self, req: apb.Request, op: str, deadline: float) -> apb.Response:
        await self._prepare_read(False, req.min_revision, deadline)
        resp = apb.Response(revision=self.group.sm.revision())
        if op == "status":
            resp.status.groups.append(await self.status_for(req.status, deadline))
        elif op == "members":
            resp.members.CopyFrom(self.members_pb(self.group.conf))
        else:
            for lid, rec in sorted(self.group.sm.leases().items()):
                resp.lease_list.leases.add(id=lid, granted_ttl=rec.ttl, keys=len(rec.keys))
        return resp

    # -- status ----------------------------------------------------------------------------
    def addrs_of(self, peer: str) -> list[str]:
        if peer == self.id:
            return list(self.local_addrs())
        try:
            return list(self.transport.peer_addrs(peer))
        except Exception:
            return []

    def members_pb(self, cs: ConfState) -> apb.MembersResponse:
        out = apb.MembersResponse(leader=self.group.leader)
        for v in cs.voters:
            out.members.add(id=v, voter=True, addrs=self.addrs_of(v))
        for v in cs.learners:
            out.members.add(id=v, voter=False, addrs=self.addrs_of(v))
        return out

    async def status_for(self, req: apb.StatusRequest, deadline: float) -> apb.GroupStatus:
        """This namespace's ``GroupStatus`` for ``req``: with ``leader_commit``, first
        the leader's commit index (raises ApiError if it cannot be had by
        ``deadline``), then the local view, so ``applied`` is read after it."""
        if not req.leader_commit:
            return self.status_pb()
        index = await self.leader_commit(deadline)
        gs = self.status_pb()
        gs.leader_commit = index
        return gs

    def status_pb(self) -> apb.GroupStatus:
        st = self.group.status()
        gs = apb.GroupStatus(
            id=st["id"],
            namespace=st["namespace"],
            role=st["role"],
            term=st["term"],
            leader=st["leader"],
            commit=st["commit"],
            applied=st["applied"],
            revision=self.group.sm.revision(),
        )
        for m in st["members"]:
            gs.members.add(id=m["id"], voter=m["voter"], addrs=self.addrs_of(m["id"]))
        return gs

    # -- writes and leader operations ------------------------------------------------------
    async def _write(self, req: apb.Request, op: str, deadline: float) -> apb.Response:
        own = bool(req.client_id)
        fwd = apb.Request()
        fwd.CopyFrom(req)
        if op == "lease_grant" and fwd.lease_grant.ttl < self.min_lease_ttl:
            fwd.lease_grant.ttl = self.min_lease_ttl
        lane = None if own else self.lanes.acquire()
        try:
            for _ in range(4):
                if lane is not None:
                    fwd.client_id = lane.client_id
                    fwd.seq = lane.next()
                leader = self.group.leader
                if self._cmd_only_leaders.get(leader, -math.inf) > trio.current_time():
                    cr, index = await self._replicate_by_command(fwd, op, deadline)
                else:
                    cr, index = await self._replicate(fwd, op, deadline)
                if cr.status == kpb.CommandResult.STALE_SEQUENCE and lane is not None:
                    lane.skip()  # never applied: a fresh seq is a fresh attempt
                    continue
                break
            return result_response(op, cr, index)
        finally:
            if lane is not None:
                self.lanes.release(lane)

    async def _replicate(
        self, req: apb.Request, op: str, deadline: float
    ) -> tuple[kpb.CommandResult, int]:
        """Replicate a write from this daemon as etcd does: the leader appends it, a
        follower hands it to the leader in Raft's own PROP message (no command stream,
        no response from the leader), and the answer is THIS daemon's apply result of
        the entry, so a stale read here right after sees the write. Lost proposals are
        proposed again by the group (same client id and seq: applied at most once)."""
        data = command_of(req, op)
        proposal: CommandProposal | None = None
        try:
            with self.group.command(data, (req.client_id, req.seq)) as (proposal, waiter):
                with trio.move_on_at(deadline):
                    res = await proposal.wait(waiter)
                    if res.result is None:
                        raise ApiError(C.INTERNAL, "entry applied without a result")
                    return res.result, res.index
                attempt = _Attempt()
                attempt.in_flight = proposal.sent
                raise attempt.deadline_error(write=True, leader=self.group.leader)
        except ProposalsIgnored as exc:
            if self.forwarder is None:
                raise ApiError(
                    C.UNAVAILABLE, str(exc), indeterminate=True, leader=exc.leader
                ) from None
            # A leader of an older version drops PROP messages (rolling upgrade): its
            # cmd stream takes the same session instead (applied at most once).
            log.warning(
                "%s: leader %s applied no proposal from here: sending writes to it by command",
                self.namespace,
                exc.leader[-8:],
            )
            self._cmd_only_leaders[exc.leader] = trio.current_time() + 60.0
        except GroupUnavailable as exc:
            sent = proposal is not None and proposal.sent
            raise ApiError(C.UNAVAILABLE, str(exc), indeterminate=sent) from None
        return await self._replicate_by_command(req, op, deadline)

    async def _replicate_by_command(
        self, req: apb.Request, op: str, deadline: float
    ) -> tuple[kpb.CommandResult, int]:
        """The pre-PROP path, for leaders that do not take PROP messages: the write goes
        over the leader's cmd stream and the answer is the leader's result; then wait
        (briefly) until it is applied here too, for read-your-writes on this daemon."""
        resp = await self._via_leader(req, op, deadline, retry_safe=True)
        if resp.error.code != C.OK:
            raise _from_pb(resp.error)
        if resp.raft_index and self.group.sm.applied_index() < resp.raft_index:
            with trio.move_on_at(min(deadline, trio.current_time() + 1.0)):
                await self.group.wait_applied(resp.raft_index)
        return kpb.CommandResult.FromString(resp.command_result), resp.raft_index

    async def _leader_op(self, req: apb.Request, op: str, deadline: float) -> apb.Response:
        resp = await self._via_leader(req, op, deadline, retry_safe=op in _IDEMPOTENT_OPS)
        if resp.error.code != C.OK:
            raise _from_pb(resp.error)
        return resp

    async def _via_leader(
        self, req: apb.Request, op: str, deadline: float, *, retry_safe: bool
    ) -> apb.Response:
        """Run ``req`` on the leader (here or forwarded), retrying across leader changes
        and unreachable leaders until ``deadline``. ``retry_safe``: resending cannot
        apply it twice (deduplicated writes, idempotent operations)."""
        st = _Attempt()
        write = op in WRITE_OPS
        backoff = 0.02
        with trio.move_on_at(deadline):
            hint = NONE
            while True:
                leader = hint or self.group.leader
                hint = NONE
                if leader == NONE:
                    await self._wait_leader_change(NONE, deadline - trio.current_time())
                    continue
                st.in_flight = True
                if leader == self.id:
                    resp = await self._exec_leader(req, op, deadline)
                else:
                    if self.forwarder is None:
                        raise ApiError(C.UNAVAILABLE, "this daemon cannot forward to the leader")
                    fwd = apb.Request()
                    fwd.CopyFrom(req)
                    fwd.namespace = self.namespace
                    fwd.timeout_ms = max(1, int((deadline - trio.current_time()) * 1000))
                    try:
                        resp = await self.forwarder.call(leader, fwd)
                    except ForwardError as exc:
                        st.in_flight = False
                        st.maybe_applied |= exc.sent
                        if exc.sent and not retry_safe:
                            raise ApiError(
                                C.UNAVAILABLE,
                                f"lost the leader while it worked on the request: {exc}",
                                indeterminate=write or op in CONF_OPS,
                                leader=leader,
                            ) from exc
                        if exc.sent:
                            self.stats["retries_after_send"] += 1
                            log.info(
                                "%s: lost the leader %s with a write in flight (%s): retrying "
                                "with the same client id and seq",
                                self.namespace,
                                leader[-8:],
                                exc,
                            )
                        else:
                            log.debug("%s: forward to %s failed: %s", self.namespace, leader, exc)
                        await self._wait_leader_change(leader, backoff)
                        backoff = min(backoff * 2, 0.5)
                        continue
                st.in_flight = False
                if resp.error.code == C.NOT_LEADER:
                    st.maybe_applied |= resp.error.indeterminate
                    if resp.error.indeterminate:
                        self.stats["retries_after_send"] += 1
                    if resp.error.indeterminate and not retry_safe:
                        raise ApiError(
                            C.UNAVAILABLE,
                            "leadership changed while the request was being applied",
                            indeterminate=True,
                            leader=resp.error.leader,
                        )
                    if resp.error.leader not in (NONE, leader):
                        hint = resp.error.leader
                    else:
                        await self._wait_leader_change(leader, backoff)
                        backoff = min(backoff * 2, 0.5)
                    continue
                if resp.error.code == C.DEADLINE_EXCEEDED and write:
                    st.maybe_applied = True
                return resp
        raise st.deadline_error(write=write or op in CONF_OPS, leader=self.group.leader)

    async def _exec_leader(self, req: apb.Request, op: str, deadline: float) -> apb.Response:
        """Run ``req`` here as the leader. NOT_LEADER (``indeterminate`` if it may have
        been proposed) when this node does not lead."""
        g = self.group
        if not g.is_leader:
            return _not_leader(g.leader, False)
        try:
            if op in WRITE_OPS:
                data = command_of(req, op)
                res = await g.propose(data)
                if res.result is None:
                    raise ApiError(C.INTERNAL, "entry applied without a result")
                return apb.Response(
                    command_result=res.result.SerializeToString(),
                    raft_index=res.index,
                    revision=res.result.revision,
                )
            if op in CONF_OPS:
                if self._removes_me(req, op):
                    # The core refuses a leader's own removal or demotion. Do what etcd
                    # users expect instead of failing: hand leadership to the most
                    # caught-up voter, then answer "not the leader" naming it, so this
                    # request goes on to the new leader, which removes us.
                    moved = await self._transfer("", deadline)
                    return _not_leader(moved.transfer_leader.leader, False)
                return await self._conf_change(req, op)
            if op == "transfer_leader":
                return await self._transfer(req.transfer_leader.target, deadline)
            if op == "lease_keepalive":
                lid = req.lease_keepalive.id
                try:
                    ttl = self.leases.keepalive(lid)
                except KeyError:
                    raise ApiError(C.NOT_FOUND, f"lease {lid} not found") from None
                return apb.Response(lease_keepalive=apb.LeaseKeepAliveResponse(id=lid, ttl=ttl))
            if op == "lease_ttl":
                lid = req.lease_ttl.id
                rec = g.sm.lease(lid)
                if rec is None:
                    raise ApiError(C.NOT_FOUND, f"lease {lid} not found")
                out = apb.LeaseTimeToLiveResponse(
                    id=lid, ttl=round(self.leases.remaining(lid)), granted_ttl=rec.ttl
                )
                if req.lease_ttl.keys:
                    out.keys.extend(rec.keys)
                return apb.Response(lease_ttl=out)
            raise ApiError(C.INVALID_ARGUMENT, f"{op!r} is not a leader operation")
        except NotLeader as exc:
            return _not_leader(exc.leader, False)
        except LeadershipLost:
            return _not_leader(g.leader, True)
        except ProposalRejected as exc:
            if op in CONF_OPS and str(exc) not in TRANSIENT_REFUSALS:
                # Returned, not raised: the sibling ``except ApiError`` below does not
                # catch what an except clause raises (it came out as INTERNAL).
                return ApiError(C.FAILED_PRECONDITION, str(exc)).response()
            # Nothing was appended, and the same request may go through in a moment (a
            # transfer or another membership change in progress, a brand-new leader):
            # retry until the deadline.
            return _not_leader(NONE, False)
        except GroupUnavailable as exc:
            return ApiError(C.UNAVAILABLE, str(exc), indeterminate=op in WRITE_OPS).response()
        except ApiError as exc:
            return exc.response()

    def _removes_me(self, req: apb.Request, op: str) -> bool:
        """Whether ``req`` removes or demotes this node (the leader) while other voters
        remain to take over."""
        if op not in ("remove", "add_learner") or getattr(req, op).id != self.id:
            return False
        cs = self.group.conf
        return self.id in cs.voters and len(cs.voters) > 1

    async def _conf_change(self, req: apb.Request, op: str) -> apb.Response:
        m: apb.MemberRequest = getattr(req, op)
        cs = self.group.conf
        members = set(cs.voters) | set(cs.learners)
        if op == "promote":
            if m.id in cs.voters:
                return apb.Response(members=self.members_pb(cs))
            if m.id not in cs.learners:
                raise ApiError(C.NOT_FOUND, f"{m.id} is not a learner of {self.namespace}")
        if op == "remove" and m.id not in members:
            raise ApiError(C.NOT_FOUND, f"{m.id} is not a member of {self.namespace}")
        # Adding a member again in the same role changes nothing, unless it names
        # addresses: then the (no-op) change carries them to every member.
        if op == "add_voter" and m.id in cs.voters and not m.addrs:
            return apb.Response(members=self.members_pb(cs))
        if op == "add_learner" and m.id in cs.learners and not m.addrs:
            return apb.Response(members=self.members_pb(cs))
        kind = {
            "add_voter": ConfChangeType.ADD_VOTER,
            "promote": ConfChangeType.ADD_VOTER,
            "add_learner": ConfChangeType.ADD_LEARNER,
            "remove": ConfChangeType.REMOVE_NODE,
        }[op]
        ctx = b""
        if m.addrs and op != "remove":
            try:
                self.transport.add_peer_addrs(m.id, list(m.addrs))
            except ValueError as exc:
                raise ApiError(C.INVALID_ARGUMENT, f"bad address for {m.id}: {exc}") from exc
            ctx = apb.MemberContext(addrs=list(m.addrs)).SerializeToString()
        new = await self.group.propose_conf_change(ConfChange(kind, m.id, ctx))
        return apb.Response(members=self.members_pb(new))

    async def _transfer(self, target: str, deadline: float) -> apb.Response:
        if not target:
            node = self.group.node
            picked = node.most_caught_up_voter() if node is not None else None
            if picked is None:
                raise ApiError(C.FAILED_PRECONDITION, "no other voter to transfer to")
            target = picked
        if target == self.id:
            return apb.Response(transfer_leader=apb.TransferLeaderResponse(leader=target))
        if target not in self.group.conf.voters:
            raise ApiError(C.FAILED_PRECONDITION, f"{target} is not a voter of {self.namespace}")
        self.group.transfer_leader(target)
        limit = min(deadline, trio.current_time() + 4 * self.preset.election_s)
        with trio.move_on_at(limit):
            while self.group.leader != target:
                await self._leader_event.wait()
            return apb.Response(transfer_leader=apb.TransferLeaderResponse(leader=target))
        raise ApiError(
            C.UNAVAILABLE,
            f"leadership did not move to {target} in time",
            leader=self.group.leader,
        )

    # -- backup ----------------------------------------------------------------------------
    async def snapshot(
        self, req: apb.Request, send: Callable[[apb.Response], Awaitable[None]]
    ) -> None:
        """Stream a consistent backup (``raftd snapshot save``): a linearizable read
        point first, so it holds every write acknowledged before the request; then the
        backup file (see :mod:`raftd.kv.backupfile`) in chunks, never whole in memory."""
        deadline = trio.current_time() + self.timeout_of(req)
        await self.barrier(deadline)
        sm = self.group.sm
        fd, name = tempfile.mkstemp(prefix="raftd-backup-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f:
                info = await trio.to_thread.run_sync(
                    write_backup, sm, self.group.namespace, f.write
                )
            first = apb.Response(id=req.id, revision=sm.revision())
            first.snapshot.size = info.size
            first.snapshot.index = info.index
            await send(first)
            async with await trio.open_file(name, "rb") as src:
                while chunk := await src.read(BACKUP_CHUNK):
                    resp = apb.Response(id=req.id)
                    resp.snapshot.chunk = chunk
                    await send(resp)
            last = apb.Response(id=req.id, revision=sm.revision())
            last.snapshot.done = True
            last.snapshot.index = info.index
            last.snapshot.size = info.size
            await send(last)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)

    # -- watch -----------------------------------------------------------------------------
    async def watch(
        self, req: apb.Request, send: Callable[[apb.Response], Awaitable[None]]
    ) -> None:
        """Serve a watch until cancelled: ``created``, then event batches. Raises
        :class:`ApiError` (FAILED_PRECONDITION "compacted") if the start revision is no
        longer in the history; the caller turns it into the final ``canceled``."""
        w = req.watch
        if not w.key and not w.range_end:
            raise ApiError(C.INVALID_ARGUMENT, "watch needs a key or a range")
        sm = self.group.sm
        key, end = key_bounds(w.key, w.range_end)
        start = w.start_revision if w.start_revision > 0 else sm.revision() + 1
        hist = sm.history
        if start < hist.floor:
            raise _compacted(start, hist.floor)
        await send(
            apb.Response(
                id=req.id,
                revision=sm.revision(),
                watch=apb.WatchResponse(created=True, header_revision=sm.revision()),
            )
        )
        while True:
            ev = self._changed
            hist = sm.history
            try:
                events, nxt = hist.read(start, key, end, WATCH_BATCH)
            except LookupError:
                raise _compacted(start, hist.floor) from None
            if events:
                resp = apb.Response(id=req.id, revision=events[-1].revision)
                resp.watch.events.extend(event_pb(e, w.prev_kv) for e in events)
                await send(resp)
            start = nxt
            if not events or nxt > hist.last:
                await ev.wait()


class _Inline:
    """What a request served without a task of its own carries (see
    :meth:`NamespaceService.start_write`, :meth:`NamespaceService.start_read`)."""

    __slots__ = ("deadline", "finished", "op", "reply", "req", "service", "spawn")

    def __init__(
        self,
        service: NamespaceService,
        req: apb.Request,
        op: str,
        reply: Callable[[apb.Response], None],
        spawn: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        self.service = service
        self.req = req
        self.op = op
        self.reply = reply
        self.spawn = spawn
        self.deadline = trio.current_time() + service.timeout_of(req)
        self.finished = False

    def _failure(self, exc: Exception) -> apb.Response:
        """The answer for an exception raised while serving it."""
        if isinstance(exc, ApiError):
            return exc.response()
        if isinstance(exc, RestoreInProgressError):
            return ApiError(C.UNAVAILABLE, "state machine is being restored").response()
        log.error("%s failed", self.op, exc_info=exc)
        return ApiError(C.INTERNAL, f"internal error: {exc!r}").response()

    def _answer(self, resp: apb.Response) -> None:
        """Answer once (later calls do nothing), after releasing what it holds."""
        if self.finished:
            return
        self.finished = True
        self._release()
        resp.id = self.req.id
        self.reply(resp)

    def _release(self) -> None:
        """Give back what the request holds in the group (nothing by default)."""

    def expire(self) -> None:
        raise NotImplementedError

    def _in_task(self, step: Callable[[], Awaitable[apb.Response]]) -> None:
        """Finish in a task: ``step`` gives the answer, by this request's deadline."""

        async def run() -> None:
            with trio.move_on_at(self.deadline):
                try:
                    resp = await step()
                except Exception as exc:
                    resp = self._failure(exc)
                if not self.finished:
                    self._answer(resp)
                return
            self.expire()

        self.spawn(run)


class InlineWrite(_Inline):
    """One write served by :meth:`NamespaceService.start_write`: the same steps as
    ``_write`` and ``_replicate`` (a lane's session unless the client brought one, the
    command proposed from here, this daemon's apply result as the answer), driven by the
    group's completion callback instead of a waiting task. ``finished`` is True once the
    answer was given or the caller abandoned it."""

    __slots__ = ("lane", "proposal", "session", "waiter")

    lane: Lane | None
    proposal: CommandProposal | None
    session: tuple[bytes, int]
    waiter: Any

    def begin(self) -> None:
        """Propose the write (or answer at once); called once, right after creation."""
        svc, req = self.service, self.req
        self.lane = self.proposal = self.waiter = None
        self.session = (b"", 0)
        try:
            validate(req, self.op)
            if req.client_id:
                self.session = (req.client_id, req.seq)
            else:
                lane = self.lane = svc.lanes.acquire()
                self.session = (lane.client_id, lane.next())
            data = command_bytes(req, self.op, *self.session)
            self.proposal, self.waiter = svc.group.command_start(
                data, self.session, self._on_result
            )
        except GroupUnavailable as exc:
            self._answer(ApiError(C.UNAVAILABLE, str(exc)).response())
        except Exception as exc:
            self._answer(self._failure(exc))

    def expire(self) -> None:
        """The deadline passed: answer as ``_replicate`` does then."""
        if self.finished:
            return
        attempt = _Attempt()
        attempt.in_flight = self.proposal is not None and self.proposal.sent
        err = attempt.deadline_error(write=True, leader=self.service.group.leader)
        self._answer(err.response())

    def abandon(self) -> None:
        """Stop waiting without an answer (the connection is gone)."""
        if not self.finished:
            self.finished = True
            self._release()

    def _release(self) -> None:
        if self.proposal is not None:
            self.service.group.command_stop(self.session, self.proposal, self.waiter)
            self.proposal = None
        self.waiter = None  # an unanswered waiter still holds our callback: a cycle
        if self.lane is not None:
            self.service.lanes.release(self.lane)
            self.lane = None

    def _on_result(self, waiter: Any) -> None:
        if self.finished:
            return
        svc, op = self.service, self.op
        err = waiter.error
        if err is not None:
            if isinstance(err, ProposalsIgnored) and svc.forwarder is not None:
                # As in ``_replicate``: an older leader's cmd stream takes the same
                # session instead (applied at most once).
                log.warning(
                    "%s: leader %s applied no proposal from here: sending writes to it by command",
                    svc.namespace,
                    err.leader[-8:],
                )
                svc._cmd_only_leaders[err.leader] = trio.current_time() + 60.0
                self._continue(self._by_command)
                return
            if isinstance(err, GroupError):
                sent = self.proposal is not None and self.proposal.sent
                self._answer(ApiError(C.UNAVAILABLE, str(err), indeterminate=sent).response())
            else:
                self._answer(self._failure(err))
            return
        res = waiter.result
        cr = res.result
        if cr is None:
            self._answer(ApiError(C.INTERNAL, "entry applied without a result").response())
            return
        if cr.status == kpb.CommandResult.STALE_SEQUENCE and self.lane is not None:
            # Never applied: move the lane on and try again, as ``_write`` does.
            self.lane.skip()
            self._continue(self._general)
            return
        try:
            resp = result_response(op, cr, res.index)
        except ApiError as exc:
            resp = exc.response()
        self._answer(resp)

    def _continue(self, step: Callable[[], Awaitable[apb.Response]]) -> None:
        if self.proposal is not None:
            # The waiter is resolved: only the proposal's bookkeeping remains.
            self.service.group.command_stop(self.session, self.proposal, self.waiter)
        self._in_task(step)

    async def _by_command(self) -> apb.Response:
        fwd = apb.Request()
        fwd.CopyFrom(self.req)
        fwd.client_id, fwd.seq = self.session
        cr, index = await self.service._replicate_by_command(fwd, self.op, self.deadline)
        return result_response(self.op, cr, index)

    async def _general(self) -> apb.Response:
        if self.lane is not None:
            self.service.lanes.release(self.lane)
            self.lane = None
        return await self.service._write(self.req, self.op, self.deadline)


class InlineRead(_Inline):
    """One read served by :meth:`NamespaceService.start_read` (see there); the caller
    keeps its deadline as for :class:`InlineWrite`."""

    __slots__ = ()

    def begin(self) -> None:
        try:
            validate(self.req, self.op)
        except ApiError as exc:
            self.fail(exc)
            return
        if self.req.consistency == apb.LINEARIZABLE:
            self.service._join_read_round(self)
        else:
            self.finish(0)

    def finish(self, index: int) -> None:
        """Answer from the local state machine (``index`` is applied here)."""
        try:
            resp = self.service._read_now(self.req, self.op, index)
        except Exception as exc:
            resp = self._failure(exc)
        self._answer(resp)

    def fail(self, err: ApiError) -> None:
        self._answer(err.response())

    def fallback(self) -> None:
        """Finish on the general path, in a task, within the same deadline."""
        self._in_task(lambda: self.service._read(self.req, self.op, self.deadline))

    def expire(self) -> None:
        """The deadline passed: answer as ``_read_index_retrying`` does then."""
        if self.finished:
            return
        if self.service.group.leader == NONE:
            self.fail(ApiError(C.UNAVAILABLE, "no leader within the deadline (no quorum?)"))
        else:
            self.fail(ApiError(C.DEADLINE_EXCEEDED, "deadline exceeded waiting for the read index"))

    def abandon(self) -> None:
        """Stop without an answer (the connection is gone); a round skips it."""
        self.finished = True


class _RetryRound(Exception):
    """The read round's driver gave up: start another round."""


class _Round:
    """One ReadIndex round shared by the reads that joined it."""

    __slots__ = ("done", "error", "index", "started")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.started = False
        self.index = 0
        self.error: Exception | None = None


_IDEMPOTENT_OPS = frozenset({"lease_keepalive", "lease_ttl", "transfer_leader"})


def _compacted(start: int, floor: int) -> ApiError:
    return ApiError(
        C.FAILED_PRECONDITION,
        f"compacted: revision {start} is older than the watch history (oldest held: "
        f"{floor}); read the current state and watch from its revision + 1",
        compact_revision=floor,
    )


def _not_leader(leader: str, indeterminate: bool) -> apb.Response:
    return apb.Response(
        error=apb.Error(
            code=C.NOT_LEADER,
            message="not the leader",
            leader=leader,
            indeterminate=indeterminate,
        )
    )


def _from_pb(err: apb.Error) -> ApiError:
    return ApiError(
        err.code,
        err.message,
        indeterminate=err.indeterminate,
        leader=err.leader,
        compact_revision=err.compact_revision,
    )


def command_of(req: apb.Request, op: str) -> bytes:
    """The state machine command of a write request (with its client id and seq)."""
    return command_bytes(req, op, req.client_id, req.seq)


def command_bytes(req: apb.Request, op: str, client_id: bytes, seq: int) -> bytes:
    """The state machine command of a write request under the session (client id, seq)."""
    cmd = kpb.Command(client_id=client_id, seq=seq)
    getattr(cmd, op).CopyFrom(getattr(req, op))
    return cmd.SerializeToString(deterministic=True)


def result_response(op: str, cr: kpb.CommandResult, index: int) -> apb.Response:
    """Map a write's state machine result to the API response (raises ApiError)."""
    if cr.status == kpb.CommandResult.INVALID:
        raise ApiError(C.INVALID_ARGUMENT, cr.error)
    if cr.status == kpb.CommandResult.LEASE_NOT_FOUND:
        raise ApiError(C.NOT_FOUND, cr.error)
    if cr.status == kpb.CommandResult.STALE_SEQUENCE:
        raise ApiError(C.FAILED_PRECONDITION, f"stale sequence: {cr.error}")
    resp = apb.Response(revision=cr.revision, raft_index=index)
    which = cr.WhichOneof("response")
    if which != op:
        raise ApiError(C.INTERNAL, f"{op} answered with {which}")
    getattr(resp, op).CopyFrom(getattr(cr, op))
    if op == "cas" and not cr.cas.succeeded:
        resp.error.CopyFrom(apb.Error(code=C.FAILED_PRECONDITION, message="compare failed"))
    return resp


def validate(req: apb.Request, op: str | None) -> None:
    """Reject malformed requests before they go anywhere (raises ApiError)."""
    if op is None:
        raise ApiError(C.INVALID_ARGUMENT, "request has no operation")
    if req.client_id and req.seq == 0:
        raise ApiError(C.INVALID_ARGUMENT, "seq must be > 0 when client_id is set")
    if req.seq and not req.client_id:
        raise ApiError(C.INVALID_ARGUMENT, "seq without client_id")
    if op in ("get", "put", "delete", "cas"):
        if not getattr(req, op).key:
            raise ApiError(C.INVALID_ARGUMENT, f"{op}: empty key")
    elif op in ("range", "delete_range"):
        r = getattr(req, op)
        if not r.key and not r.range_end:
            raise ApiError(C.INVALID_ARGUMENT, f"{op}: empty key and range_end")
        if op == "range" and r.limit < 0:
            raise ApiError(C.INVALID_ARGUMENT, "range: negative limit")
    elif op == "lease_grant":
        if req.lease_grant.ttl <= 0:
            raise ApiError(C.INVALID_ARGUMENT, "lease_grant: ttl must be > 0")
        if req.lease_grant.id < 0:
            raise ApiError(C.INVALID_ARGUMENT, "lease_grant: negative id")
    elif op in ("lease_revoke", "lease_keepalive", "lease_ttl"):
        if getattr(req, op).id <= 0:
            raise ApiError(C.INVALID_ARGUMENT, f"{op}: lease id must be > 0")
    elif op in CONF_OPS or (op == "transfer_leader" and req.transfer_leader.target):
        peer = req.transfer_leader.target if op == "transfer_leader" else getattr(req, op).id
        if not peer:
            raise ApiError(C.INVALID_ARGUMENT, f"{op}: empty member id")
        try:
            parse_peer_id(peer)
        except ValueError as exc:
            raise ApiError(C.INVALID_ARGUMENT, f"{op}: {exc}") from None
    if op == "cas" and req.cas.WhichOneof("expected") is None:
        raise ApiError(C.INVALID_ARGUMENT, "cas: no expectation (value, mod_revision, absent)")
