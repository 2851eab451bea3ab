"""The client's protocol logic, without I/O: typed results, errors, request builders and
response parsers shared by the sync and the trio client."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb
from raftd.wire.ranges import prefix_end

__all__ = [
    "DEFAULT_SOCKET",
    "CasResult",
    "Compacted",
    "ConnectionLost",
    "DeadlineExceeded",
    "DeleteResult",
    "Event",
    "FailedPrecondition",
    "GroupStatus",
    "Internal",
    "InvalidArgument",
    "KeyValue",
    "Lease",
    "LeaseInfo",
    "LeaseTTL",
    "Member",
    "NotFound",
    "PutResult",
    "RaftdError",
    "RangeResult",
    "TooLarge",
    "TxnResult",
    "Unauthenticated",
    "Unavailable",
    "UnknownNamespace",
    "compare",
    "op_delete",
    "op_delete_range",
    "op_get",
    "op_put",
    "prefix_end",
]

T = TypeVar("T")
C = apb.Error

#: Where the client looks for the daemon when neither ``socket=`` nor ``$RAFTD_SOCKET``
#: says: the socket of a daemon run with ``--data-dir /var/lib/raftd``.
DEFAULT_SOCKET = "/var/lib/raftd/raftd.sock"

WRITE_OPS = frozenset(
    {"put", "delete", "delete_range", "cas", "txn", "lease_grant", "lease_revoke"}
)


# -- errors -----------------------------------------------------------------------------


class RaftdError(Exception):
    """An error from the daemon (or the connection to it).

    ``code`` is the protocol's error code name (``"UNAVAILABLE"``...). ``indeterminate``
    is True when a write may have been applied (or may still be): retrying it without
    the same ``client_id``/``seq`` could apply it twice.
    """

    code = "UNKNOWN"

    def __init__(
        self, message: str, *, indeterminate: bool = False, leader: str = "", code: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.indeterminate = indeterminate
        self.leader = leader
        if code:
            self.code = code

    def __str__(self) -> str:
        extra = " (the write may or may not have been applied)" if self.indeterminate else ""
        return f"{self.code}: {self.message}{extra}"


class InvalidArgument(RaftdError):
    code = "INVALID_ARGUMENT"


class NotFound(RaftdError):
    code = "NOT_FOUND"


class FailedPrecondition(RaftdError):
    code = "FAILED_PRECONDITION"


class Compacted(FailedPrecondition):
    """A watch asked for a revision older than the daemon's watch history."""

    def __init__(self, message: str, *, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class Unavailable(RaftdError):
    code = "UNAVAILABLE"


class ConnectionLost(Unavailable):
    """The connection to the daemon failed (or could not be made)."""


class DeadlineExceeded(RaftdError):
    code = "DEADLINE_EXCEEDED"


class UnknownNamespace(RaftdError):
    code = "UNKNOWN_NAMESPACE"


class TooLarge(RaftdError):
    code = "TOO_LARGE"


class Internal(RaftdError):
    code = "INTERNAL"


class Unauthenticated(RaftdError):
    code = "UNAUTHENTICATED"


_BY_CODE: dict[int, type[RaftdError]] = {
    C.INVALID_ARGUMENT: InvalidArgument,
    C.NOT_FOUND: NotFound,
    C.FAILED_PRECONDITION: FailedPrecondition,
    C.UNAVAILABLE: Unavailable,
    C.DEADLINE_EXCEEDED: DeadlineExceeded,
    C.UNKNOWN_NAMESPACE: UnknownNamespace,
    C.TOO_LARGE: TooLarge,
    C.INTERNAL: Internal,
    C.UNAUTHENTICATED: Unauthenticated,
}


def error_from_pb(err: apb.Error) -> RaftdError:
    if err.code == C.FAILED_PRECONDITION and err.compact_revision:
        return Compacted(err.message, compact_revision=err.compact_revision)
    cls = _BY_CODE.get(err.code, RaftdError)
    name = C.Code.Name(err.code) if err.code in C.Code.values() else str(err.code)
    return cls(err.message, indeterminate=err.indeterminate, leader=err.leader, code=name)


def check(resp: apb.Response) -> apb.Response:
    """Raise the response's error, if any."""
    if resp.HasField("error") and resp.error.code != C.OK:
        raise error_from_pb(resp.error)
    return resp


# -- values ------------------------------------------------------------------------------


def to_bytes(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @classmethod
    def from_pb(cls, kv: kpb.KeyValue) -> KeyValue:
        return cls(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": _text(self.key),
            "value": _text(self.value),
            "create_revision": self.create_revision,
            "mod_revision": self.mod_revision,
            "version": self.version,
            "lease": self.lease,
        }


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: int
    prev: list[KeyValue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RangeResult:
    revision: int
    kvs: list[KeyValue]
    more: bool = False


@dataclass(frozen=True, slots=True)
class CasResult:
    """``succeeded``: the swap happened. ``current``: the key before the command."""

    revision: int
    succeeded: bool
    current: KeyValue | None


@dataclass(frozen=True, slots=True)
class TxnResult:
    revision: int
    succeeded: bool
    responses: list[RangeResult | PutResult | DeleteResult]


@dataclass(frozen=True, slots=True)
class Event:
    """One change: ``type`` is ``"put"`` or ``"delete"``; a delete's ``kv`` has only the
    key and the deleting revision (``mod_revision``)."""

    type: str
    kv: KeyValue
    prev: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    voter: bool
    addrs: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "voter": self.voter, "addrs": list(self.addrs)}


@dataclass(frozen=True, slots=True)
class GroupStatus:
    id: str
    namespace: str
    role: str
    term: int
    leader: str
    commit: int
    applied: int
    members: list[Member]
    revision: int
    #: The leader's commit index, only when asked for (``status(leader_commit=True)``);
    #: else 0. ``applied`` was read after it.
    leader_commit: int = 0

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "namespace": self.namespace,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "commit": self.commit,
            "applied": self.applied,
            "members": [m.as_dict() for m in self.members],
            "revision": self.revision,
        }
        if self.leader_commit:
            out["leader_commit"] = self.leader_commit
        return out


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseTTL:
    id: int
    ttl: int
    granted_ttl: int
    keys: list[bytes]


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """A lease in :meth:`Client.leases`: its id, granted TTL and number of keys."""

    id: int
    granted_ttl: int
    keys: int


# -- txn helpers -------------------------------------------------------------------------

_RESULTS = {
    "=": kpb.Compare.EQUAL,
    "==": kpb.Compare.EQUAL,
    "!=": kpb.Compare.NOT_EQUAL,
    ">": kpb.Compare.GREATER,
    "<": kpb.Compare.LESS,
}


def compare(key: bytes | str, target: str, op: str, operand: int | bytes | str) -> kpb.Compare:
    """``compare("k", "value", "=", "v")``; targets: value, version, create, mod;
    operators: ``=``, ``!=``, ``>``, ``<``. A missing key has version/create/mod 0."""
    if op not in _RESULTS:
        raise ValueError(f"unknown compare operator {op!r}")
    c = kpb.Compare(key=to_bytes(key), result=_RESULTS[op])
    if target == "value":
        if isinstance(operand, int):
            raise TypeError("a value compare needs bytes or str")
        c.target = kpb.Compare.VALUE
        c.value = to_bytes(operand)
        return c
    fields = {"version": "version", "create": "create_revision", "mod": "mod_revision"}
    targets = {"version": kpb.Compare.VERSION, "create": kpb.Compare.CREATE, "mod": kpb.Compare.MOD}
    if target not in fields:
        raise ValueError(f"unknown compare target {target!r}")
    if not isinstance(operand, int):
        raise TypeError(f"a {target} compare needs an int")
    c.target = targets[target]
    setattr(c, fields[target], operand)
    return c


def op_put(key: bytes | str, value: bytes | str, *, lease: int = 0) -> kpb.RequestOp:
    return kpb.RequestOp(put=kpb.PutRequest(key=to_bytes(key), value=to_bytes(value), lease=lease))


def op_get(key: bytes | str, range_end: bytes | str = b"", *, limit: int = 0) -> kpb.RequestOp:
    return kpb.RequestOp(
        range=kpb.RangeRequest(key=to_bytes(key), range_end=to_bytes(range_end), limit=limit)
    )


def op_delete(key: bytes | str) -> kpb.RequestOp:
    return kpb.RequestOp(delete=kpb.DeleteRequest(key=to_bytes(key)))


def op_delete_range(key: bytes | str, range_end: bytes | str) -> kpb.RequestOp:
    return kpb.RequestOp(
        delete_range=kpb.DeleteRangeRequest(key=to_bytes(key), range_end=to_bytes(range_end))
    )


# -- builders and parsers ----------------------------------------------------------------

Parser = Callable[[apb.Response], T]


def req_put(key: bytes | str, value: bytes | str, *, lease: int, prev_kv: bool) -> apb.Request:
    return apb.Request(
        put=kpb.PutRequest(key=to_bytes(key), value=to_bytes(value), lease=lease, prev_kv=prev_kv)
    )


def parse_put(resp: apb.Response) -> PutResult:
    check(resp)
    prev = KeyValue.from_pb(resp.put.prev_kv) if resp.put.HasField("prev_kv") else None
    return PutResult(resp.revision, prev)


def req_get(key: bytes | str, *, stale: bool, min_revision: int) -> apb.Request:
    return apb.Request(
        get=apb.GetRequest(key=to_bytes(key)),
        consistency=apb.STALE if stale else apb.LINEARIZABLE,
        min_revision=min_revision,
    )


def parse_get(resp: apb.Response) -> KeyValue | None:
    if resp.error.code == C.NOT_FOUND:
        return None
    check(resp)
    return KeyValue.from_pb(resp.get.kv)


def req_range(
    key: bytes | str,
    range_end: bytes | str,
    *,
    limit: int,
    keys_only: bool,
    stale: bool,
    min_revision: int,
) -> apb.Request:
    return apb.Request(
        range=kpb.RangeRequest(
            key=to_bytes(key), range_end=to_bytes(range_end), limit=limit, keys_only=keys_only
        ),
        consistency=apb.STALE if stale else apb.LINEARIZABLE,
        min_revision=min_revision,
    )


def _range_result(r: kpb.RangeResponse, revision: int) -> RangeResult:
    return RangeResult(revision, [KeyValue.from_pb(kv) for kv in r.kvs], r.more)


def parse_range(resp: apb.Response) -> RangeResult:
    check(resp)
    return _range_result(resp.range, resp.revision)


def req_delete(key: bytes | str, *, prev_kv: bool) -> apb.Request:
    return apb.Request(delete=kpb.DeleteRequest(key=to_bytes(key), prev_kv=prev_kv))


def parse_delete(resp: apb.Response) -> DeleteResult:
    check(resp)
    d = resp.delete
    prev = [KeyValue.from_pb(d.prev_kv)] if d.HasField("prev_kv") else []
    return DeleteResult(resp.revision, int(d.deleted), prev)


def req_delete_range(key: bytes | str, range_end: bytes | str, *, prev_kv: bool) -> apb.Request:
    return apb.Request(
        delete_range=kpb.DeleteRangeRequest(
            key=to_bytes(key), range_end=to_bytes(range_end), prev_kv=prev_kv
        )
    )


def parse_delete_range(resp: apb.Response) -> DeleteResult:
    check(resp)
    d = resp.delete_range
    return DeleteResult(resp.revision, d.deleted, [KeyValue.from_pb(kv) for kv in d.prev_kvs])


def req_cas(
    key: bytes | str,
    new_value: bytes | str,
    *,
    value: bytes | str | None,
    mod_revision: int | None,
    absent: bool,
) -> apb.Request:
    if (value is not None) + (mod_revision is not None) + absent != 1:
        raise ValueError("cas needs exactly one of value=, mod_revision=, absent=True")
    r = kpb.CompareAndSwapRequest(key=to_bytes(key), new_value=to_bytes(new_value))
    if value is not None:
        r.value = to_bytes(value)
    elif mod_revision is not None:
        r.mod_revision = mod_revision
    else:
        r.absent = True
    return apb.Request(cas=r)


def parse_cas(resp: apb.Response) -> CasResult:
    if not (resp.error.code == C.FAILED_PRECONDITION and resp.HasField("cas")):
        check(resp)
    c = resp.cas
    cur = KeyValue.from_pb(c.current) if c.HasField("current") else None
    return CasResult(resp.revision, c.succeeded, cur)


def req_txn(
    compares: Iterable[kpb.Compare],
    success: Iterable[kpb.RequestOp],
    failure: Iterable[kpb.RequestOp],
) -> apb.Request:
    return apb.Request(
        txn=kpb.TxnRequest(compare=list(compares), success=list(success), failure=list(failure))
    )


def parse_txn(resp: apb.Response) -> TxnResult:
    check(resp)
    out: list[RangeResult | PutResult | DeleteResult] = []
    for r in resp.txn.responses:
        kind = r.WhichOneof("response")
        if kind == "range":
            out.append(_range_result(r.range, resp.revision))
        elif kind == "put":
            prev = KeyValue.from_pb(r.put.prev_kv) if r.put.HasField("prev_kv") else None
            out.append(PutResult(resp.revision, prev))
        elif kind == "delete":
            out.append(DeleteResult(resp.revision, int(r.delete.deleted)))
        elif kind == "delete_range":
            out.append(DeleteResult(resp.revision, r.delete_range.deleted))
    return TxnResult(resp.revision, resp.txn.succeeded, out)


def parse_revision(resp: apb.Response) -> int:
    check(resp)
    return resp.revision


def _members(ms: Iterable[apb.Member]) -> list[Member]:
    return [Member(m.id, m.voter, list(m.addrs)) for m in ms]


def parse_status(resp: apb.Response) -> list[GroupStatus]:
    check(resp)
    return [
        GroupStatus(
            g.id,
            g.namespace,
            g.role,
            g.term,
            g.leader,
            g.commit,
            g.applied,
            _members(g.members),
            g.revision,
            g.leader_commit,
        )
        for g in resp.status.groups
    ]


def parse_members(resp: apb.Response) -> list[Member]:
    check(resp)
    return _members(resp.members.members)


def req_member(op: str, peer_id: str, addrs: Iterable[str]) -> apb.Request:
    req = apb.Request()
    getattr(req, op).CopyFrom(apb.MemberRequest(id=peer_id, addrs=list(addrs)))
    return req


def parse_transfer(resp: apb.Response) -> str:
    check(resp)
    return resp.transfer_leader.leader


def parse_lease(resp: apb.Response) -> Lease:
    check(resp)
    return Lease(resp.lease_grant.id, resp.lease_grant.ttl)


def parse_revoke(resp: apb.Response) -> int:
    check(resp)
    return resp.lease_revoke.deleted


def parse_keepalive(resp: apb.Response) -> int:
    check(resp)
    return resp.lease_keepalive.ttl


def parse_lease_ttl(resp: apb.Response) -> LeaseTTL:
    check(resp)
    t = resp.lease_ttl
    return LeaseTTL(t.id, t.ttl, t.granted_ttl, list(t.keys))


def parse_leases(resp: apb.Response) -> list[LeaseInfo]:
    check(resp)
    return [LeaseInfo(x.id, x.granted_ttl, x.keys) for x in resp.lease_list.leases]


def parse_none(resp: apb.Response) -> None:
    check(resp)


def events_of(resp: apb.Response) -> list[Event]:
    out = []
    for e in resp.watch.events:
        prev = KeyValue.from_pb(e.prev_kv) if e.HasField("prev_kv") else None
        kind = "put" if e.type == apb.Event.PUT else "delete"
        out.append(Event(kind, KeyValue.from_pb(e.kv), prev))
    return out


def req_watch(
    key: bytes | str, range_end: bytes | str, *, start_revision: int, prev_kv: bool
) -> apb.Request:
    return apb.Request(
        watch=apb.WatchRequest(
            key=to_bytes(key),
            range_end=to_bytes(range_end),
            start_revision=start_revision,
            prev_kv=prev_kv,
        )
    )


def default_socket(socket: str | os.PathLike[str] | None) -> str:
    if socket is not None:
        return os.fspath(socket)
    return os.environ.get("RAFTD_SOCKET") or DEFAULT_SOCKET


def default_namespace(namespace: str | None) -> str:
    if namespace is not None:
        return namespace
    return os.environ.get("RAFTD_NAMESPACE", "")


def default_token(token: str | None) -> str | None:
    if token is not None:
        return token
    if os.environ.get("RAFTD_API_TOKEN"):
        return os.environ["RAFTD_API_TOKEN"]
    path = os.environ.get("RAFTD_API_TOKEN_FILE")
    if path:
        with open(path) as f:
            return f.read().strip()
    return None


def parse_address(address: str) -> tuple[str, str, int]:
    """``tcp://host:port`` -> ("tcp", host, port); anything else is a unix socket path
    -> ("unix", path, 0)."""
    if address.startswith("tcp://"):
        rest = address[len("tcp://") :]
        host, sep, port = rest.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bad TCP address {address!r}: expected tcp://host:port")
        return "tcp", host.strip("[]") or "127.0.0.1", int(port)
    if address.startswith("unix://"):
        return "unix", address[len("unix://") :], 0
    return "unix", address, 0


def is_write(req: apb.Request) -> bool:
    return req.WhichOneof("op") in WRITE_OPS
