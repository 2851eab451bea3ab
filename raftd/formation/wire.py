"""Messages of the formation protocol ``/raftd/1<ns>/form`` and of presence announcements.

JSON objects, one per frame, validated on decode (:class:`WireError` for anything
malformed: wrong types, oversized lists or strings). JSON rather than protobuf: the
messages are small, rare (about one per peer per second), and evolve with the design;
unknown fields are ignored so a newer node can add some.

- :class:`NodeInfo`: a node's self-description in one namespace (also the pubsub
  presence payload): its addresses, its formation state, and its cluster as it sees it.
- ``pex``: request and response alike carry the sender's :class:`NodeInfo` and, when
  peer exchange is on, :class:`PexEntry` rumours about third parties, each with its age.
- ``join`` / ``leave``: membership requests, answered by a :class:`Reply`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_FRAME",
    "JoinRequest",
    "LeaveRequest",
    "NodeInfo",
    "PexEntry",
    "PexMessage",
    "Reply",
    "WireError",
    "decode",
    "encode",
]

MAX_FRAME = 256 * 1024
_MAX_ID = 128
_MAX_ADDR = 256
_MAX_ADDRS = 16
_MAX_MEMBERS = 512
_MAX_ENTRIES = 256

# Formation states a node announces.
FRESH = "fresh"  # empty group, looking for a cluster or founders
JOINING = "joining"  # accepted by a cluster, catching up (group still empty)
MEMBER = "member"  # has group state (may have been removed: see voters/learners)
DISSOLVING = "dissolving"  # wiping its state to join another cluster
STATES = (FRESH, JOINING, MEMBER, DISSOLVING)


class WireError(ValueError):
    """A formation message is malformed."""


def _str(d: dict[str, Any], key: str, limit: int = _MAX_ID, default: str = "") -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or len(v) > limit:
        raise WireError(f"{key}: expected a string of at most {limit} characters")
    return v


def _int(d: dict[str, Any], key: str, default: int = 0) -> int:
    v = d.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise WireError(f"{key}: expected an integer")
    return v


def _bool(d: dict[str, Any], key: str, default: bool = False) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise WireError(f"{key}: expected true or false")
    return v


def _strs(d: dict[str, Any], key: str, n: int, limit: int = _MAX_ID) -> tuple[str, ...]:
    v = d.get(key, [])
    if not isinstance(v, list) or len(v) > n:
        raise WireError(f"{key}: expected a list of at most {n} strings")
    for s in v:
        if not isinstance(s, str) or len(s) > limit:
            raise WireError(f"{key}: expected strings of at most {limit} characters")
    return tuple(v)


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise WireError(f"{what}: expected an object")
    return v


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node says about itself in one namespace (see the module docstring).

    ``writes``: its cluster has applied user writes (never merged automatically then).
    ``connected``: peers it has a live connection to (lets a leader that cannot reach a
    member hand leadership to a voter that can). ``conflict``: the cluster id of another
    cluster of the namespace that also holds writes, if it sees one.
    """

    id: str
    ns: str
    addrs: tuple[str, ...] = ()
    state: str = FRESH
    cluster: str = ""
    founded_ms: int = 0
    writes: bool = False
    leader: str = ""
    term: int = 0
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    expect: int = 0
    connected: tuple[str, ...] = ()
    conflict: str = ""
    applied: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ns": self.ns,
            "addrs": list(self.addrs),
            "state": self.state,
            "cluster": self.cluster,
            "founded_ms": self.founded_ms,
            "writes": self.writes,
            "leader": self.leader,
            "term": self.term,
            "voters": list(self.voters),
            "learners": list(self.learners),
            "expect": self.expect,
            "connected": list(self.connected),
            "conflict": self.conflict,
            "applied": self.applied,
        }

    @staticmethod
    def from_dict(v: Any) -> NodeInfo:
        d = _obj(v, "info")
        state = _str(d, "state", 16, FRESH)
        if state not in STATES:
            raise WireError(f"state: unknown {state!r}")
        info = NodeInfo(
            id=_str(d, "id"),
            ns=_str(d, "ns", 512),
            addrs=_strs(d, "addrs", _MAX_ADDRS, _MAX_ADDR),
            state=state,
            cluster=_str(d, "cluster", 64),
            founded_ms=_int(d, "founded_ms"),
            writes=_bool(d, "writes"),
            leader=_str(d, "leader"),
            term=_int(d, "term"),
            voters=_strs(d, "voters", _MAX_MEMBERS),
            learners=_strs(d, "learners", _MAX_MEMBERS),
            expect=_int(d, "expect"),
            connected=_strs(d, "connected", _MAX_MEMBERS),
            conflict=_str(d, "conflict", 64),
            applied=_int(d, "applied"),
        )
        if not info.id:
            raise WireError("id: empty")
        return info

    def members(self) -> tuple[str, ...]:
        return self.voters + self.learners


@dataclass(frozen=True, slots=True)
class PexEntry:
    """A rumour about a third party: its addresses and last self-description, as the
    sender knew them ``age_ms`` milliseconds ago."""

    id: str
    addrs: tuple[str, ...]
    age_ms: int
    info: NodeInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "addrs": list(self.addrs), "age_ms": self.age_ms}
        if self.info is not None:
            d["info"] = self.info.to_dict()
        return d

    @staticmethod
    def from_dict(v: Any) -> PexEntry:
        d = _obj(v, "peer")
        info = NodeInfo.from_dict(d["info"]) if d.get("info") is not None else None
        age = _int(d, "age_ms")
        if age < 0:
            raise WireError("age_ms: negative")
        e = PexEntry(_str(d, "id"), _strs(d, "addrs", _MAX_ADDRS, _MAX_ADDR), age, info)
        if not e.id or (info is not None and info.id != e.id):
            raise WireError("peer: id missing or different from its info's")
        return e


@dataclass(frozen=True, slots=True)
class PexMessage:
    """``pex``: the sender's own info and (with pex on) what it knows about others."""

    info: NodeInfo
    peers: tuple[PexEntry, ...] = ()
    t: str = field(default="pex", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"t": "pex", "self": self.info.to_dict(), "peers": [p.to_dict() for p in self.peers]}


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """``join``: add ``id`` (reachable at ``addrs``) to ``cluster``. ``empty``: the node
    has no state for the namespace (fresh or wiped). ``relayed``: forwarded by a member
    on the joiner's behalf (never forwarded again)."""

    cluster: str
    id: str
    addrs: tuple[str, ...]
    empty: bool = True
    relayed: bool = False
    t: str = field(default="join", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": "join",
            "cluster": self.cluster,
            "id": self.id,
            "addrs": list(self.addrs),
            "empty": self.empty,
            "relayed": self.relayed,
        }


@dataclass(frozen=True, slots=True)
class LeaveRequest:
    """``leave``: remove ``id`` from ``cluster`` (sent by ``id`` itself, or relayed)."""

    cluster: str
    id: str
    relayed: bool = False
    t: str = field(default="leave", init=False)

    def to_dict(self) -> dict[str, Any]:
        return {"t": "leave", "cluster": self.cluster, "id": self.id, "relayed": self.relayed}


# Reply codes.
OK = "ok"  # done: joined as a learner (or already a member) / removed
CATCH_UP = "catch_up"  # joined, but as a voter that could not be removed first
WRONG_CLUSTER = "wrong_cluster"  # the receiver is not in that cluster
NOT_LEADER = "not_leader"  # no leader reachable right now (retry; ``leader`` hints)
BUSY = "busy"  # the leader is busy with other changes (retry)
REFUSED = "refused"  # not allowed (e.g. relayed by a non-member)
ERROR = "error"
CODES = (OK, CATCH_UP, WRONG_CLUSTER, NOT_LEADER, BUSY, REFUSED, ERROR)


@dataclass(frozen=True, slots=True)
class Reply:
    code: str
    msg: str = ""
    leader: str = ""
    info: NodeInfo | None = None
    t: str = field(default="reply", init=False)

    @property
    def ok(self) -> bool:
        return self.code in (OK, CATCH_UP)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "t": "reply",
            "code": self.code,
            "msg": self.msg,
            "leader": self.leader,
        }
        if self.info is not None:
            d["info"] = self.info.to_dict()
        return d


Message = PexMessage | JoinRequest | LeaveRequest | Reply


def encode(msg: Message) -> bytes:
    data = json.dumps(msg.to_dict(), separators=(",", ":")).encode()
    if len(data) > MAX_FRAME:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_FRAME}")
    return data


def decode(data: bytes) -> Message:
    """Parse one frame; raises :class:`WireError`."""
    if len(data) > MAX_FRAME:
        raise WireError("frame too large")
    try:
        d = _obj(json.loads(data), "message")
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    t = d.get("t")
    try:
        if t == "pex":
            peers = d.get("peers", [])
            if not isinstance(peers, list) or len(peers) > _MAX_ENTRIES:
                raise WireError("peers: expected a list")
            return PexMessage(
                NodeInfo.from_dict(d.get("self")), tuple(PexEntry.from_dict(p) for p in peers)
            )
        if t == "join":
            return JoinRequest(
                _str(d, "cluster", 64),
                _str(d, "id"),
                _strs(d, "addrs", _MAX_ADDRS, _MAX_ADDR),
                _bool(d, "empty", True),
                _bool(d, "relayed"),
            )
        if t == "leave":
            return LeaveRequest(_str(d, "cluster", 64), _str(d, "id"), _bool(d, "relayed"))
        if t == "reply":
            code = _str(d, "code", 32)
            if code not in CODES:
                raise WireError(f"code: unknown {code!r}")
            info = NodeInfo.from_dict(d["info"]) if d.get("info") is not None else None
            return Reply(code, _str(d, "msg", 1024), _str(d, "leader"), info)
    except KeyError as exc:
        raise WireError(f"missing field {exc}") from None
    raise WireError(f"unknown message type {t!r}")
