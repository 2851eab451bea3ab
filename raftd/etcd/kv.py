"""Pure translation between etcd's KV messages and raftd's state machine.

Nothing here does I/O: the functions map an etcd request to raftd's command (the data
of a Raft entry), map raftd's key-values and events to etcd's ``mvccpb`` form, and apply
etcd's range options (filters, sort, limit, count) to the keys a range read found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from raftd.etcd import errors
from raftd.kv.backend import KeyRecord
from raftd.kv.watch import PUT, KeyEvent
from raftd.wire.pb import kv_pb2 as kpb
from raftd.wire.pb.etcd import kv_pb2 as mvcc
from raftd.wire.pb.etcd import rpc_pb2 as epb

__all__ = [
    "MAX_TXN_OPS",
    "apply_range_options",
    "event_of",
    "kv_of",
    "kv_of_record",
    "range_at",
    "txn_command",
]

#: etcd's default --max-txn-ops.
MAX_TXN_OPS = 128

_RR = epb.RangeRequest
_EC = epb.Compare
_KC = kpb.Compare

_TARGETS = {
    _EC.VERSION: _KC.VERSION,
    _EC.CREATE: _KC.CREATE,
    _EC.MOD: _KC.MOD,
    _EC.VALUE: _KC.VALUE,
    _EC.LEASE: _KC.LEASE,
}
_RESULTS = {
    _EC.EQUAL: _KC.EQUAL,
    _EC.GREATER: _KC.GREATER,
    _EC.LESS: _KC.LESS,
    _EC.NOT_EQUAL: _KC.NOT_EQUAL,
}


def kv_of(kv: kpb.KeyValue) -> mvcc.KeyValue:
    """raftd's KeyValue as etcd's (same fields, different numbers)."""
    return mvcc.KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        lease=kv.lease,
    )


def kv_of_record(key: bytes, r: KeyRecord) -> mvcc.KeyValue:
    return mvcc.KeyValue(
        key=key,
        value=r.value,
        create_revision=r.create_revision,
        mod_revision=r.mod_revision,
        version=r.version,
        lease=r.lease,
    )


def event_of(e: KeyEvent, prev_kv: bool) -> mvcc.Event:
    """One history event in etcd's form (a DELETE carries only key and mod_revision)."""
    if e.type == PUT and e.record is not None:
        ev = mvcc.Event(type=mvcc.Event.PUT, kv=kv_of_record(e.key, e.record))
    else:
        ev = mvcc.Event(
            type=mvcc.Event.DELETE, kv=mvcc.KeyValue(key=e.key, mod_revision=e.revision)
        )
    if prev_kv and e.prev is not None:
        ev.prev_kv.CopyFrom(kv_of_record(e.key, e.prev))
    return ev


def range_at(current: Sequence[kpb.KeyValue], events: Iterable[KeyEvent]) -> list[mvcc.KeyValue]:
    """The keys of a range as they were before ``events`` (every change after the asked
    revision, oldest first, restricted to the range): undo them newest first."""
    state: dict[bytes, mvcc.KeyValue | None] = {kv.key: kv_of(kv) for kv in current}
    for e in reversed(list(events)):
        state[e.key] = kv_of_record(e.key, e.prev) if e.prev is not None else None
    return [state[k] for k in sorted(state) if state[k] is not None]  # type: ignore[misc]


def _sort_key(target: int) -> Callable[[mvcc.KeyValue], Any]:
    if target == _RR.VERSION:
        return lambda kv: kv.version
    if target == _RR.CREATE:
        return lambda kv: kv.create_revision
    if target == _RR.MOD:
        return lambda kv: kv.mod_revision
    if target == _RR.VALUE:
        return lambda kv: kv.value
    return lambda kv: kv.key


def apply_range_options(
    kvs: list[mvcc.KeyValue], req: epb.RangeRequest, resp: epb.RangeResponse
) -> None:
    """Fill ``resp`` (kvs, more, count) from every key of the range (in key order) as
    etcd does: ``count`` is the number of keys in the range; the revision filters,
    sort, limit, ``keys_only`` and ``count_only`` shape ``kvs``."""
    resp.count = len(kvs)
    if req.count_only:
        return
    out = kvs
    if req.min_mod_revision:
        out = [kv for kv in out if kv.mod_revision >= req.min_mod_revision]
    if req.max_mod_revision:
        out = [kv for kv in out if kv.mod_revision <= req.max_mod_revision]
    if req.min_create_revision:
        out = [kv for kv in out if kv.create_revision >= req.min_create_revision]
    if req.max_create_revision:
        out = [kv for kv in out if kv.create_revision <= req.max_create_revision]
    order = req.sort_order
    if order == _RR.NONE and req.sort_target != _RR.KEY:
        order = _RR.ASCEND  # as etcd: a sort target without an order sorts ascending
    if order == _RR.DESCEND or (order == _RR.ASCEND and req.sort_target != _RR.KEY):
        # stable sort over key order, as etcd's
        out = sorted(out, key=_sort_key(req.sort_target), reverse=order == _RR.DESCEND)
    if req.limit > 0 and len(out) > req.limit:
        out = out[: req.limit]
        resp.more = True
    for kv in out:
        if req.keys_only:
            kv.value = b""
        resp.kvs.append(kv)


def _compare(c: epb.Compare) -> kpb.Compare:
    if not c.key:
        raise errors.EMPTY_KEY
    if c.target not in _TARGETS or c.result not in _RESULTS:
        raise errors.invalid("unknown compare target or result")
    out = kpb.Compare(
        key=c.key, range_end=c.range_end, target=_TARGETS[c.target], result=_RESULTS[c.result]
    )
    if c.target == _EC.VALUE:
        out.value = c.value
    elif c.target == _EC.VERSION:
        out.version = c.version
    elif c.target == _EC.CREATE:
        out.create_revision = c.create_revision
    elif c.target == _EC.MOD:
        out.mod_revision = c.mod_revision
    else:
        out.lease = c.lease
    return out


def _ops(ops: Sequence[epb.RequestOp]) -> list[kpb.RequestOp]:
    if len(ops) > MAX_TXN_OPS:
        raise errors.TOO_MANY_OPS
    out: list[kpb.RequestOp] = []
    puts: set[bytes] = set()
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_range":
            r = op.request_range
            if not r.key:
                raise errors.EMPTY_KEY
            if r.revision:
                raise errors.invalid("raftd does not support a revision in a txn range")
            out.append(kpb.RequestOp(range=kpb.RangeRequest(key=r.key, range_end=r.range_end)))
        elif kind == "request_put":
            p = op.request_put
            if not p.key:
                raise errors.EMPTY_KEY
            if p.ignore_value or p.ignore_lease:
                raise errors.invalid("raftd does not support ignore_value/ignore_lease in a txn")
            if p.key in puts:
                raise errors.DUPLICATE_KEY
            puts.add(p.key)
            out.append(
                kpb.RequestOp(
                    put=kpb.PutRequest(key=p.key, value=p.value, prev_kv=p.prev_kv, lease=p.lease)
                )
            )
        elif kind == "request_delete_range":
            d = op.request_delete_range
            if not d.key:
                raise errors.EMPTY_KEY
            out.append(
                kpb.RequestOp(
                    delete_range=kpb.DeleteRangeRequest(
                        key=d.key, range_end=d.range_end, prev_kv=d.prev_kv
                    )
                )
            )
        elif kind == "request_txn":
            raise errors.invalid("raftd does not support nested transactions")
        else:
            raise errors.invalid("empty request op")
    return out


def txn_command(req: epb.TxnRequest) -> kpb.TxnRequest:
    """etcd's Txn as raftd's (raises EtcdError for what raftd cannot run). Ranges are
    read whole inside the transaction; their options are applied to the answer."""
    return kpb.TxnRequest(
        compare=[_compare(c) for c in req.compare],
        success=_ops(req.success),
        failure=_ops(req.failure),
    )
