"""etcd's gRPC errors: the status code and the exact message each client maps back.

Clients recognize errors by message (clientv3's ``rpctypes`` compares the description),
so the strings below are etcd's, byte for byte.
"""

from __future__ import annotations

from raftd.etcd.status import StatusCode

__all__ = ["EtcdError", "invalid"]

_C = StatusCode


class EtcdError(Exception):
    """An error answered to an etcd client: a gRPC status code and etcd's message."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


def _e(code: StatusCode, message: str) -> EtcdError:
    return EtcdError(code, message)


EMPTY_KEY = _e(_C.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = _e(_C.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = _e(_C.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = _e(_C.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = _e(_C.INVALID_ARGUMENT, "etcdserver: too many operations in txn request")
DUPLICATE_KEY = _e(_C.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request")
COMPACTED = _e(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
FUTURE_REV = _e(_C.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
NO_SPACE = _e(_C.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")
LEASE_NOT_FOUND = _e(_C.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXIST = _e(_C.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = _e(_C.OUT_OF_RANGE, "etcdserver: too large lease TTL")
MEMBER_NOT_FOUND = _e(_C.NOT_FOUND, "etcdserver: member not found")
MEMBER_BAD_URLS = _e(_C.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid")
MEMBER_NOT_LEARNER = _e(_C.FAILED_PRECONDITION, "etcdserver: can only promote a learner member")
PEER_URL_EXIST = _e(_C.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
NOT_CAPABLE = _e(_C.UNAVAILABLE, "etcdserver: not capable")
NO_LEADER = _e(_C.UNAVAILABLE, "etcdserver: no leader")
TIMEOUT = _e(_C.UNAVAILABLE, "etcdserver: request timed out")
LEADER_CHANGED = _e(_C.UNAVAILABLE, "etcdserver: leader changed")
BAD_LEADER_TRANSFEREE = _e(_C.FAILED_PRECONDITION, "etcdserver: bad leader transferee")
AUTH_NOT_ENABLED = _e(_C.FAILED_PRECONDITION, "etcdserver: authentication is not enabled")
REQUEST_TOO_LARGE = _e(_C.INVALID_ARGUMENT, "etcdserver: request is too large")


def invalid(message: str) -> EtcdError:
    """INVALID_ARGUMENT with etcd's ``etcdserver:`` prefix (what raftd does not run)."""
    return EtcdError(_C.INVALID_ARGUMENT, f"etcdserver: {message}")
