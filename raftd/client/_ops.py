"""The client's one method table: every request-response operation defined once.

Each operation is a builder, ``op(args...) -> Call[T]``: the request and the parser of
its response, with the caller's ``timeout``. :class:`Operations` binds each builder as a
method of both clients through :class:`Op`, a descriptor: on a :class:`SyncRunner`
(:class:`raftd.client.Client`) ``client.put(...)`` returns the result; on an
:class:`AsyncRunner` (:class:`raftd.client.AsyncClient`) it is a coroutine. Signatures
and docstrings are the builders', and the type checker sees the right return type on
each client. Streams (watch, snapshot) are the clients' own.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from raftd.client import _proto as P
from raftd.client._proto import (
    CasResult,
    DeleteResult,
    GroupStatus,
    KeyValue,
    Lease,
    LeaseInfo,
    LeaseTTL,
    Member,
    PutResult,
    RangeResult,
    TxnResult,
)
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb

__all__ = ["AsyncRunner", "Call", "Op", "Operations", "SyncRunner"]

T = TypeVar("T")
Ps = ParamSpec("Ps")


class Call(Generic[T]):
    """One operation ready to send: ``request`` (id and namespace not yet set),
    ``parse`` (raises the response's error) and the caller's ``timeout``."""

    __slots__ = ("parse", "request", "timeout")

    def __init__(
        self, request: apb.Request, parse: Callable[[apb.Response], T], timeout: float | None
    ) -> None:
        self.request = request
        self.parse = parse
        self.timeout = timeout


class SyncRunner:
    """A client that runs a :class:`Call` and returns its result."""

    def _run(self, call: Call[T]) -> T:
        raise NotImplementedError


class AsyncRunner:
    """A client that runs a :class:`Call` as a coroutine."""

    async def _run(self, call: Call[T]) -> T:
        raise NotImplementedError


F = TypeVar("F", bound=Callable[..., Any])


def _like(fn: F, build: Callable[..., Any]) -> F:
    """``fn`` with the name, docstring and signature of the method ``build`` makes:
    ``self``, then the builder's parameters, returning what the call's parser does."""
    functools.update_wrapper(fn, build)
    del fn.__wrapped__  # type: ignore[attr-defined]
    sig = inspect.signature(build)
    ret = sig.return_annotation
    if isinstance(ret, str) and ret.startswith("Call[") and ret.endswith("]"):
        ret = ret[len("Call[") : -1]
    me = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    fn.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[me, *sig.parameters.values()], return_annotation=ret
    )
    return fn


class Op(Generic[Ps, T]):
    """A builder bound as a method of both clients (see the module doc). The bound
    method is cached in the instance, so a lookup costs what a plain method's does."""

    def __init__(self, build: Callable[Ps, Call[T]]) -> None:
        self.build = build
        self.name = build.__name__

        def run(client: SyncRunner, /, *args: Ps.args, **kwargs: Ps.kwargs) -> T:
            return client._run(build(*args, **kwargs))

        async def run_async(client: AsyncRunner, /, *args: Ps.args, **kwargs: Ps.kwargs) -> T:
            return await client._run(build(*args, **kwargs))

        self.sync = _like(run, build)
        self.async_ = _like(run_async, build)

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name
        for fn in (self.sync, self.async_):
            fn.__name__ = name
            fn.__qualname__ = f"{owner.__qualname__}.{name}"

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Callable[..., Any]: ...
    @overload
    def __get__(self, obj: SyncRunner, owner: type[Any] | None = None) -> Callable[Ps, T]: ...
    @overload
    def __get__(
        self, obj: AsyncRunner, owner: type[Any] | None = None
    ) -> Callable[Ps, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: object, owner: type[Any] | None = None) -> Any:
        if obj is None:  # looked up on the class: the plain function, for help()
            is_async = owner is not None and issubclass(owner, AsyncRunner)
            return self.async_ if is_async else self.sync
        fn = self.async_ if isinstance(obj, AsyncRunner) else self.sync
        bound = types.MethodType(fn, obj)
        obj.__dict__[self.name] = bound
        return bound


# -- key-value ----------------------------------------------------------------------------


def put(
    key: bytes | str,
    value: bytes | str,
    *,
    lease: int = 0,
    prev_kv: bool = False,
    timeout: float | None = None,
) -> Call[PutResult]:
    """Set ``key`` to ``value`` (attached to ``lease`` if not 0); ``prev_kv``: return
    the previous key-value too."""
    return Call(P.req_put(key, value, lease=lease, prev_kv=prev_kv), P.parse_put, timeout)


def get(
    key: bytes | str,
    *,
    stale: bool = False,
    min_revision: int = 0,
    timeout: float | None = None,
) -> Call[KeyValue | None]:
    """The key's current value, or None. Linearizable unless ``stale``."""
    return Call(P.req_get(key, stale=stale, min_revision=min_revision), P.parse_get, timeout)


def range_(
    key: bytes | str,
    range_end: bytes | str = b"",
    *,
    limit: int = 0,
    keys_only: bool = False,
    stale: bool = False,
    min_revision: int = 0,
    timeout: float | None = None,
) -> Call[RangeResult]:
    """Keys in ``[key, range_end)`` (etcd conventions: empty end = just ``key``,
    ``b"\\0"`` = every key >= ``key``), in key order, at most ``limit``."""
    req = P.req_range(
        key, range_end, limit=limit, keys_only=keys_only, stale=stale, min_revision=min_revision
    )
    return Call(req, P.parse_range, timeout)


def get_prefix(
    prefix: bytes | str,
    *,
    limit: int = 0,
    keys_only: bool = False,
    stale: bool = False,
    timeout: float | None = None,
) -> Call[RangeResult]:
    """Every key starting with ``prefix`` (every key if it is empty), in key order."""
    p = P.to_bytes(prefix)
    end = P.prefix_end(p) if p else b"\x00"
    return range_(p or b"\x00", end, limit=limit, keys_only=keys_only, stale=stale, timeout=timeout)


def delete(
    key: bytes | str, *, prev_kv: bool = False, timeout: float | None = None
) -> Call[DeleteResult]:
    """Delete ``key``; ``deleted`` is 0 if it did not exist."""
    return Call(P.req_delete(key, prev_kv=prev_kv), P.parse_delete, timeout)


def delete_range(
    key: bytes | str,
    range_end: bytes | str,
    *,
    prev_kv: bool = False,
    timeout: float | None = None,
) -> Call[DeleteResult]:
    """Delete the keys in ``[key, range_end)`` in one revision."""
    req = P.req_delete_range(key, range_end, prev_kv=prev_kv)
    return Call(req, P.parse_delete_range, timeout)


def delete_prefix(prefix: bytes | str, *, timeout: float | None = None) -> Call[DeleteResult]:
    """Delete every key starting with ``prefix`` in one revision."""
    p = P.to_bytes(prefix)
    return delete_range(p or b"\x00", P.prefix_end(p), timeout=timeout)


def cas(
    key: bytes | str,
    new_value: bytes | str,
    *,
    value: bytes | str | None = None,
    mod_revision: int | None = None,
    absent: bool = False,
    timeout: float | None = None,
) -> Call[CasResult]:
    """Put ``new_value`` if the key's value is ``value`` / its mod revision is
    ``mod_revision`` (0: absent) / it is ``absent``. A mismatch is not an error:
    ``succeeded`` is False and ``current`` tells what is there."""
    req = P.req_cas(key, new_value, value=value, mod_revision=mod_revision, absent=absent)
    return Call(req, P.parse_cas, timeout)


def txn(
    compares: Iterable[kpb.Compare],
    success: Iterable[kpb.RequestOp] = (),
    failure: Iterable[kpb.RequestOp] = (),
    *,
    timeout: float | None = None,
) -> Call[TxnResult]:
    """If every compare holds run ``success``, else ``failure`` (see
    :func:`raftd.client.compare`, :func:`op_put`...). One revision."""
    return Call(P.req_txn(compares, success, failure), P.parse_txn, timeout)


def barrier(*, timeout: float | None = None) -> Call[int]:
    """A linearizable no-op: returns once this daemon has applied everything committed
    before the call; returns the revision then."""
    return Call(apb.Request(barrier=apb.BarrierRequest()), P.parse_revision, timeout)


# -- cluster ------------------------------------------------------------------------------


def status(
    *,
    all_namespaces: bool = False,
    leader_commit: bool = False,
    timeout: float | None = None,
) -> Call[list[GroupStatus]]:
    """This daemon's view of the namespace (every namespace with ``all_namespaces``).
    ``leader_commit``: also ask the leader for its commit index (one ReadIndex round
    trip; fails with Unavailable / DeadlineExceeded when no leader answers)."""
    req = apb.Request(
        status=apb.StatusRequest(all_namespaces=all_namespaces, leader_commit=leader_commit)
    )
    return Call(req, P.parse_status, timeout)


def members(*, timeout: float | None = None) -> Call[list[Member]]:
    """The group's members."""
    return Call(apb.Request(members=apb.MembersRequest()), P.parse_members, timeout)


def add_voter(
    peer_id: str, addrs: Iterable[str] = (), *, timeout: float | None = None
) -> Call[list[Member]]:
    """Add ``peer_id`` (reachable at ``addrs``) as a voter; returns the new membership."""
    return Call(P.req_member("add_voter", peer_id, addrs), P.parse_members, timeout)


def add_learner(
    peer_id: str, addrs: Iterable[str] = (), *, timeout: float | None = None
) -> Call[list[Member]]:
    """Add ``peer_id`` (reachable at ``addrs``) as a learner; returns the new membership."""
    return Call(P.req_member("add_learner", peer_id, addrs), P.parse_members, timeout)


def promote(peer_id: str, *, timeout: float | None = None) -> Call[list[Member]]:
    """Make learner ``peer_id`` a voter; returns the new membership."""
    return Call(P.req_member("promote", peer_id, ()), P.parse_members, timeout)


def remove(peer_id: str, *, timeout: float | None = None) -> Call[list[Member]]:
    """Remove member ``peer_id``; returns the new membership."""
    return Call(P.req_member("remove", peer_id, ()), P.parse_members, timeout)


def transfer_leader(target: str = "", *, timeout: float | None = None) -> Call[str]:
    """Move leadership to ``target`` (default: the most caught-up other voter);
    returns the new leader."""
    req = apb.Request(transfer_leader=apb.TransferLeaderRequest(target=target))
    return Call(req, P.parse_transfer, timeout)


# -- leases -------------------------------------------------------------------------------


def lease_grant(ttl: int, *, lease_id: int = 0, timeout: float | None = None) -> Call[Lease]:
    """A new lease of ``ttl`` seconds (the daemon may raise it; see ``Lease.ttl``)."""
    req = apb.Request(lease_grant=kpb.LeaseGrantRequest(ttl=ttl, id=lease_id))
    return Call(req, P.parse_lease, timeout)


def lease_revoke(lease_id: int, *, timeout: float | None = None) -> Call[int]:
    """Revoke the lease and delete its keys; returns how many keys were deleted."""
    req = apb.Request(lease_revoke=kpb.LeaseRevokeRequest(id=lease_id))
    return Call(req, P.parse_revoke, timeout)


def lease_keepalive(lease_id: int, *, timeout: float | None = None) -> Call[int]:
    """Restart the lease's TTL; returns the TTL. NotFound if it expired."""
    req = apb.Request(lease_keepalive=apb.LeaseKeepAliveRequest(id=lease_id))
    return Call(req, P.parse_keepalive, timeout)


def lease_ttl(lease_id: int, *, keys: bool = False, timeout: float | None = None) -> Call[LeaseTTL]:
    """The lease's remaining and granted TTL (and its keys, with ``keys``)."""
    req = apb.Request(lease_ttl=apb.LeaseTimeToLiveRequest(id=lease_id, keys=keys))
    return Call(req, P.parse_lease_ttl, timeout)


def leases(*, timeout: float | None = None) -> Call[list[LeaseInfo]]:
    """Every lease of the namespace."""
    return Call(apb.Request(lease_list=apb.LeaseListRequest()), P.parse_leases, timeout)


class Operations:
    """The methods both clients share (see the module doc)."""

    put = Op(put)
    get = Op(get)
    range = Op(range_)
    get_prefix = Op(get_prefix)
    delete = Op(delete)
    delete_range = Op(delete_range)
    delete_prefix = Op(delete_prefix)
    cas = Op(cas)
    txn = Op(txn)
    barrier = Op(barrier)
    status = Op(status)
    members = Op(members)
    add_voter = Op(add_voter)
    add_learner = Op(add_learner)
    promote = Op(promote)
    remove = Op(remove)
    transfer_leader = Op(transfer_leader)
    lease_grant = Op(lease_grant)
    lease_revoke = Op(lease_revoke)
    lease_keepalive = Op(lease_keepalive)
    lease_ttl = Op(lease_ttl)
    leases = Op(leases)
