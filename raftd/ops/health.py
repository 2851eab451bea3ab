"""Liveness and readiness of a daemon, as plain data (the HTTP layer renders it).

Readiness (``/readyz``) is per namespace, and the daemon is ready when every namespace is:

- its group runs (it was started and its storage has not failed);
- this node knows a leader (itself or another voter), so requests can be served or
  forwarded;
- its state machine is caught up: ``commit - applied <= max_lag``, where ``commit`` is
  the commit index this node knows. A follower that just restarted, or that is
  installing a snapshot, reports not ready until it has applied what it knows is
  committed (within the bound).

Liveness (``/healthz``) is only "the process serves HTTP": a node that cannot reach a
quorum is alive (restarting it would not help) but not ready.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftd.core import NONE
from raftd.ops.source import ObservedGroup

__all__ = ["DEFAULT_MAX_LAG", "NamespaceReadiness", "Readiness", "readiness"]

DEFAULT_MAX_LAG = 1000
"""Default bound on ``commit - applied`` (entries) for a namespace to be ready."""


@dataclass(frozen=True, slots=True)
class NamespaceReadiness:
    namespace: str
    ready: bool
    reason: str
    role: str
    term: int
    leader: str
    commit: int
    applied: int

    @property
    def lag(self) -> int:
        return max(0, self.commit - self.applied)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "reason": self.reason,
            "role": self.role,
            "term": self.term,
            "leader": self.leader,
            "commit": self.commit,
            "applied": self.applied,
            "lag": self.lag,
        }


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str
    max_lag: int
    namespaces: list[NamespaceReadiness] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "reason": self.reason,
            "max_lag": self.max_lag,
            "namespaces": {n.namespace: n.as_dict() for n in self.namespaces},
        }


def _group_readiness(ns: str, group: ObservedGroup, max_lag: int) -> NamespaceReadiness:
    try:
        st = group.status()
    except Exception as exc:  # a group in a bad state must not break the probe
        return NamespaceReadiness(ns, False, f"status failed: {exc}", "unknown", 0, "", 0, 0)
    role = str(st.get("role", "unknown"))
    term = int(st.get("term", 0))
    leader = str(st.get("leader", "") or "")
    commit = int(st.get("commit", 0))
    applied = int(st.get("applied", 0))

    def out(ready: bool, reason: str) -> NamespaceReadiness:
        return NamespaceReadiness(ns, ready, reason, role, term, leader, commit, applied)

    if group.failed is not None:
        return out(False, f"storage failed: {group.failed}")
    if role == "stopped" or not group.running:
        return out(False, "group not running")
    if leader == NONE:
        return out(False, "no leader known")
    if commit - applied > max_lag:
        return out(
            False, f"applied index {applied} lags commit index {commit} by more than {max_lag}"
        )
    return out(True, "ok")


def readiness(
    namespaces: Sequence[str],
    groups: Mapping[str, ObservedGroup],
    max_lag: int = DEFAULT_MAX_LAG,
) -> Readiness:
    """Evaluate readiness now of the configured ``namespaces``, whose running groups are
    ``groups`` (a namespace without one is not ready).

    Reads only in-memory state (no I/O, never blocks): call it on the trio thread."""
    results: list[NamespaceReadiness] = []
    for ns in namespaces:
        g = groups.get(ns)
        if g is None:
            results.append(
                NamespaceReadiness(ns, False, "group not started", "stopped", 0, "", 0, 0)
            )
        else:
            results.append(_group_readiness(ns, g, max_lag))
    if not results:
        return Readiness(False, "no namespaces", max_lag, results)
    bad = [r for r in results if not r.ready]
    if bad:
        reason = "; ".join(f"{r.namespace}: {r.reason}" for r in bad)
        return Readiness(False, reason, max_lag, results)
    return Readiness(True, "ok", max_lag, results)
