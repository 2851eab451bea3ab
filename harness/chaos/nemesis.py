"""The nemesis: one fault at a time, on a seeded schedule, while the clients run.

Cycle: a quiet period, then a fault of the next kind, held for a while, then healed, then
a wait (30 s at most) until the cluster has recovered: every node up and agreeing on a
leader whose membership has every node as a voter (so each fault starts from a healthy
cluster, and a fault's epoch holds its own recovery; see :mod:`harness.chaos`). The
next kind is the least used so far in the campaign (ties broken by the run's seeded RNG),
so every enabled kind gets its turn even in short campaigns. Choices (which node, which
partition, hold times) come from the seeded RNG; what they hit (e.g. which node leads at
that moment) depends on the cluster. Every action is logged as an event (``nemesis.jsonl``
and the node's log).

Kinds:

``kill``            kill -9 of a random node, restarted after the hold.
``kill-leader``     the same on the current leader.
``pause``           SIGSTOP of the leader (half of the time) or a random node; SIGCONT after.
``partition-leader`` the leader's link set down (it is alone); up after the hold.
``partition-half``  a random minority (n//2 nodes) and majority cannot talk; the nodes of
                    each side still talk to each other (blackhole routes).
``partition-bridge`` a partial partition: the nodes but one are split into two halves that
                    cannot talk to each other; the remaining "bridge" node talks to both,
                    so both halves plus the bridge are majorities (Jepsen's ``bridge``).
``kill-all``        kill -9 of every node at once, all restarted after 0.5-2 s.
``membership``      a random voter is removed through another node's API (``remove``),
                    then added back as a voter (``add_voter``). When it is the leader
                    (30% of the time it is chosen on purpose), half the time leadership
                    is first moved by hand (``transfer_leader``), half the time the
                    leader is removed directly (the daemon then hands leadership over
                    itself before the removal).
``transfer``        leadership transfer to a random other voter (``transfer_leader``).
``slow-disk``       every fsync/fdatasync of one node's data dir sleeps 0.5-2 s first
                    (``timing.disk_delay``) for the hold time: the leader half of the
                    time, else a random follower. Needs the data dirs on slowfs (the
                    runner mounts them when this kind is enabled; see
                    :mod:`harness.slowfs`).
``snapshot``        a follower is killed until the leader has applied more entries than the
                    preset's snapshot + compaction thresholds (the ``chaos`` preset: 200 +
                    50), then restarted: it can only catch up by a snapshot install.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from harness.chaos.cluster import ChaosCluster, ChaosNode
from harness.chaos.history import Clock
from harness.netns import NetnsError
from raftd.app.presets import PRESETS
from raftd.client import RaftdError
from raftd.client import _proto as P
from raftd.wire.pb import api_pb2 as apb

__all__ = ["KINDS", "KindPicker", "Nemesis", "NemesisTiming", "epochs_of"]

KINDS: tuple[str, ...] = (
    "kill",
    "kill-leader",
    "pause",
    "partition-leader",
    "partition-half",
    "partition-bridge",
    "kill-all",
    "membership",
    "transfer",
    "snapshot",
    "slow-disk",
)


@dataclass(frozen=True, slots=True)
class NemesisTiming:
    """Seconds: quiet time before each fault and how long a fault is held."""

    quiet: tuple[float, float] = (1.0, 2.5)
    hold: tuple[float, float] = (2.0, 5.0)
    kill_all_hold: tuple[float, float] = (0.5, 2.0)
    snapshot_max_hold: float = 15.0
    disk_delay: tuple[float, float] = (0.5, 2.0)
    """slow-disk: seconds each fsync of the slowed node sleeps (chosen per fault)."""
    admin_timeout: float = 5.0
    recovery: float = 30.0
    """At most this long is waited for recovery after each fault, before the quiet time."""


class KindPicker:
    """Least-used-first choice of the next fault kind, shared across a campaign's runs."""

    def __init__(self, kinds: Sequence[str]) -> None:
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"unknown nemesis kinds {sorted(unknown)}; choose from {KINDS}")
        self.kinds = list(dict.fromkeys(kinds))
        self.counts: Counter[str] = Counter({k: 0 for k in self.kinds})

    def pick(self, rng: random.Random) -> str:
        low = min(self.counts[k] for k in self.kinds)
        kind = rng.choice([k for k in self.kinds if self.counts[k] == low])
        self.counts[kind] += 1
        return kind


def epochs_of(
    events: Sequence[dict[str, object]], start: float, end: float
) -> list[tuple[str, float, float]]:
    """``(kind, from, to)``: each fault's epoch runs from its start to the next fault's
    start (or ``end``), so it includes the fault, its healing and the recovery after."""
    starts = [
        (str(e["kind"]), float(e["t"]))  # type: ignore[arg-type]
        for e in events
        if e.get("phase") == "start"
    ]
    out: list[tuple[str, float, float]] = []
    for i, (kind, t) in enumerate(starts):
        t_end = starts[i + 1][1] if i + 1 < len(starts) else end
        out.append((kind, max(t, start), min(t_end, end)))
    return [e for e in out if e[2] > e[1]]


class Nemesis:
    """The nemesis thread of one run (see the module docstring)."""

    def __init__(
        self,
        cluster: ChaosCluster,
        picker: KindPicker,
        rng: random.Random,
        clock: Clock,
        *,
        timing: NemesisTiming | None = None,
        log: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.cluster = cluster
        self.picker = picker
        self.rng = rng
        self.clock = clock
        self.timing = timing or NemesisTiming()
        self.log = log
        self.events: list[dict[str, object]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="chaos-nemesis", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the nemesis to heal the current fault and stop (see :meth:`stop`)."""
        self._stop.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after healing the current fault (holds are cut short); bounded."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.errors.append(f"nemesis still running {timeout:.0f}s after stop")

    def event(self, kind: str, phase: str, **detail: object) -> None:
        ev: dict[str, object] = {"t": round(self.clock.now(), 6), "kind": kind, "phase": phase}
        ev.update(detail)
        with self._lock:
            self.events.append(ev)
        text = " ".join(f"{k}={v}" for k, v in detail.items())
        self.log(f"  nemesis {ev['t']:8.2f}s {kind} {phase} {text}".rstrip())

    def _main(self) -> None:
        try:
            while not self._stop.is_set():
                if self._stop.wait(self.rng.uniform(*self.timing.quiet)):
                    break
                kind = self.picker.pick(self.rng)
                try:
                    self._fault(kind)
                except (RaftdError, NetnsError, OSError, TimeoutError, RuntimeError) as exc:
                    self.event(kind, "error", error=repr(exc))
                self._await_recovery(kind)
        except Exception as exc:  # a harness bug: report it
            self.errors.append(f"nemesis: {exc!r}")
            raise

    def _await_recovery(self, kind: str) -> None:
        """Wait (bounded by ``timing.recovery``) until every node is up and agrees on a
        leader whose membership is complete, so that the next fault starts from a healthy
        cluster and each fault's epoch holds its own recovery."""
        t0 = time.monotonic()
        deadline = t0 + self.timing.recovery
        while not self._stop.is_set():
            if self.cluster.stable() is not None:
                self.event(kind, "recovered", after_s=round(time.monotonic() - t0, 2))
                return
            if time.monotonic() > deadline:
                self.event(kind, "not-recovered", after_s=round(time.monotonic() - t0, 2))
                return
            self._stop.wait(0.2)

    def _hold(self, span: tuple[float, float] | None = None) -> None:
        self._stop.wait(self.rng.uniform(*(span or self.timing.hold)))

    # -- choosing targets --------------------------------------------------------------
    def _random_node(self) -> ChaosNode:
        alive = [n for n in self.cluster.nodes if n.alive and not n.paused]
        return self.rng.choice(alive or self.cluster.nodes)

    def _leader(self) -> tuple[ChaosNode, bool]:
        lead = self.cluster.leader()
        if lead is not None:
            return lead, True
        return self._random_node(), False

    # -- faults ------------------------------------------------------------------------
    def _fault(self, kind: str) -> None:
        c = self.cluster
        if kind in ("kill", "kill-leader"):
            node, is_leader = (
                self._leader() if kind == "kill-leader" else (self._random_node(), False)
            )
            self.event(kind, "start", node=node.name, leader=is_leader)
            node.kill()
            try:
                self._hold()
            finally:
                node.start()
                self.event(kind, "heal", node=node.name)
        elif kind == "pause":
            if self.rng.random() < 0.5:
                node, is_leader = self._leader()
            else:
                node, is_leader = self._random_node(), False
            self.event(kind, "start", node=node.name, leader=is_leader)
            node.pause()
            try:
                self._hold()
            finally:
                node.resume()
                self.event(kind, "heal", node=node.name)
        elif kind == "partition-leader":
            node, is_leader = self._leader()
            self.event(kind, "start", node=node.name, leader=is_leader)
            c.isolate(node)
            try:
                self._hold()
            finally:
                node.note("link up")
                node.host.link_up()
                self.event(kind, "heal", node=node.name)
        elif kind in ("partition-half", "partition-bridge"):
            perm = self.rng.sample(c.nodes, len(c.nodes))
            bridge: list[ChaosNode] = []
            if kind == "partition-bridge" and len(perm) >= 3:
                bridge, perm = perm[:1], perm[1:]
                cut = len(perm) // 2
            else:
                cut = len(c.nodes) // 2
            groups = [perm[:cut], perm[cut:]]
            self.event(
                kind,
                "start",
                groups=[[n.name for n in g] for g in groups],
                bridge=[n.name for n in bridge],
            )
            try:
                c.block(groups, bridge=bridge)
                self._hold()
            finally:
                c.unblock_all()
                self.event(kind, "heal")
        elif kind == "kill-all":
            self.event(kind, "start", nodes=[n.name for n in c.nodes])
            for n in c.nodes:
                n.kill()
            try:
                self._hold(self.timing.kill_all_hold)
            finally:
                for n in c.nodes:
                    if not n.alive:
                        n.start()
                self.event(kind, "heal")
        elif kind == "membership":
            self._membership()
        elif kind == "transfer":
            self._transfer()
        elif kind == "snapshot":
            self._snapshot()
        elif kind == "slow-disk":
            self._slow_disk()
        else:
            raise ValueError(kind)

    def _admin(self, via: ChaosNode, req: apb.Request) -> list[str]:
        members = via.call(req, P.parse_members, self.timing.admin_timeout)
        return [f"{m.id[-6:]}{'' if m.voter else '(learner)'}" for m in members]

    def _membership(self) -> None:
        c = self.cluster
        kind = "membership"
        lead, _ = self._leader()
        target = lead if self.rng.random() < 0.3 else self._random_node()
        others = [n for n in c.nodes if n is not target and n.alive and not n.paused]
        if not others:
            self.event(kind, "skip", reason="no other live node")
            return
        via = self.rng.choice(others)
        self.event(kind, "start", node=target.name, leader=target is lead, via=via.name)
        if target is lead and self.rng.random() < 0.5:
            # Move leadership away first, as a careful operator would; otherwise the
            # daemon does it itself when asked to remove the leader.
            new_lead = self.rng.choice(others)
            try:
                req = apb.Request(
                    transfer_leader=apb.TransferLeaderRequest(target=new_lead.peer_id)
                )
                via.call(req, P.parse_transfer, self.timing.admin_timeout)
                self.event(kind, "transferred", leader=new_lead.name)
            except RaftdError as exc:
                self.event(kind, "transfer-failed", error=str(exc))
        target.note("removed from the membership")
        try:
            members = self._admin(via, P.req_member("remove", target.peer_id, ()))
            self.event(kind, "removed", node=target.name, members=members)
        except RaftdError as exc:
            self.event(kind, "remove-failed", node=target.name, error=str(exc))
        self._hold()
        # Add it back, whatever happened (the remove may have been applied after all).
        deadline = time.monotonic() + 20.0
        last = ""
        while time.monotonic() < deadline:
            via = self.rng.choice([n for n in c.nodes if n is not target] or c.nodes)
            try:
                current = via.call(apb.Request(members=apb.MembersRequest()), P.parse_members, 2.0)
                m = next((m for m in current if m.id == target.peer_id), None)
                if m is not None and m.voter:
                    self.event(kind, "heal", node=target.name, via=via.name)
                    return
                op = "add_voter" if m is None else "promote"
                addrs = [target.addr] if m is None else []
                members = self._admin(via, P.req_member(op, target.peer_id, addrs))
                self.event(kind, op, node=target.name, via=via.name, members=members)
            except RaftdError as exc:
                last = str(exc)
                time.sleep(0.3)
        self.event(kind, "heal-failed", node=target.name, error=last)

    def _transfer(self) -> None:
        c = self.cluster
        kind = "transfer"
        lead, known = self._leader()
        targets = [n for n in c.nodes if n is not lead]
        if not targets:
            self.event(kind, "skip", reason="single node")
            return
        target = self.rng.choice(targets)
        via = self._random_node()
        self.event(
            kind, "start", node=target.name, leader=lead.name if known else None, via=via.name
        )
        try:
            req = apb.Request(transfer_leader=apb.TransferLeaderRequest(target=target.peer_id))
            new = via.call(req, P.parse_transfer, self.timing.admin_timeout)
            found = c.by_id(new)
            self.event(kind, "done", leader=found.name if found else new)
        except RaftdError as exc:
            self.event(kind, "failed", error=str(exc))

    def _snapshot(self) -> None:
        c = self.cluster
        kind = "snapshot"
        p = PRESETS[c.preset]
        lead, _ = self._leader()
        followers = [n for n in c.nodes if n is not lead and n.alive]
        if not followers:
            self.event(kind, "skip", reason="no follower")
            return
        node = self.rng.choice(followers)
        before = self._applied(lead)
        need = p.snapshot_entries + p.compaction_trailing + 20
        self.event(kind, "start", node=node.name, leader=lead.name, leader_applied=before)
        node.kill()
        try:
            deadline = time.monotonic() + self.timing.snapshot_max_hold
            now = before
            while not self._stop.is_set() and time.monotonic() < deadline:
                now = self._applied(lead)
                if before is not None and now is not None and now - before >= need:
                    break
                self._stop.wait(0.5)
        finally:
            node.start()
            self.event(kind, "heal", node=node.name, leader_applied=now)

    def _slow_disk(self) -> None:
        c = self.cluster
        kind = "slow-disk"
        lead, known = self._leader()
        node = lead
        if self.rng.random() >= 0.5:
            node = self.rng.choice([n for n in c.nodes if n is not lead] or [lead])
        delay = round(self.rng.uniform(*self.timing.disk_delay), 3)
        hold = self.rng.uniform(*self.timing.hold)
        mount = node.mount
        if mount is None:
            self.event(kind, "skip", reason="data dirs are not on slowfs")
            return
        before = mount.delayed_calls()
        self.event(kind, "start", node=node.name, leader=known and node is lead, delay_s=delay)
        node.note(f"slow disk: every fsync delayed {delay}s")
        # Armed for longer than the hold: the heal below disarms it, also when the
        # nemesis is stopped early.
        mount.delay(delay, hold + 600.0)
        try:
            self._stop.wait(hold)
        finally:
            mount.clear()
            node.note("disk fast again")
            self.event(kind, "heal", node=node.name, delayed=mount.delayed_calls() - before)

    def _applied(self, node: ChaosNode) -> int | None:
        try:
            return node.status(timeout=1.0).applied
        except (RaftdError, OSError):
            return None
