"""The stalled-node scenario of the simulator: a node whose own process stalled does not
blame the others for it.

One seeded run (``scripts/sim --scenario stall``) on the pure core, with no drops, no
partitions and a healthy, connected leader:

1. **Warm-up.** Rounds (everyone ticks, every message is delivered) until a leader is
   elected, a proposal commits and every node knows the leader.
2. **The victim** is a follower (even seeds) or the leader (odd seeds).
3. **Lead-in.** For a seeded number of rounds the victim's reads lag: it still ticks, but
   the messages sent to it wait in the bag (a loaded process whose ticker runs before its
   socket reader). It ends early before the tick that would end the victim's election
   timeout (a follower's campaign, a leader's check-quorum), so the stall starts with the
   victim's timer as close to expiring as the lead-in brought it. A leader's lead-in
   starts with the tick of its check-quorum: the most hostile moment, since only the
   answers of its followers after that check (now waiting, unread) can keep it leader at
   the next one.
4. **Stall.** For a seeded number of rounds the victim is stopped: not ticked, no Ready
   run, nothing read; the others keep ticking and sending, and what they send to it piles
   up in the bag. A follower stalls for more than an election timeout
   (``election_tick + 1 .. 4 * election_tick`` rounds); a leader for less, short enough
   that its followers keep it (``1 .. election_tick - 2 * heartbeat_tick - 2`` rounds).
5. **Resume** through :meth:`Simulator.resume`: every waiting message, then the missed
   ticks, by :func:`raftd.core.wakeup.step_wakeup` (the daemon's own policy).
6. **After.** ``3 * election_tick`` rounds of normal running, then a proposal must commit.

Checks (:class:`~raftd.testing.sim.Violation`, with the invariant's name):

- ``stalled-follower-campaigned``: the follower victim sent a PRE_VOTE or VOTE, or its
  campaign count grew, from the stall's start to the end of the run;
- ``stalled-leader-deposed``: the leader victim stopped leading, or the term changed;
- ``stall-liveness``: no proposal committed after the resume;
- every invariant of the random simulator (election safety, log matching, ...), checked
  as the messages flow.

A policy that steps the missed ticks before the waiting messages, or all of them at once,
breaks these on a share of the seeds (``tests/core/test_sim_stall.py`` runs both mutants).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from raftd.core import Message, MessageType, NodeId, ProposalDroppedError, StateType
from raftd.testing.sim import SimConfig, Simulator, Violation

__all__ = ["StallRun", "replay_command", "run_stall_seed"]

_CAMPAIGN = (MessageType.PRE_VOTE, MessageType.VOTE)


@dataclass(slots=True)
class StallRun:
    """What one seed chose and saw (for tests and reports)."""

    seed: int
    nodes: int = 0
    heartbeat_tick: int = 0
    victim_role: str = ""
    lead_in: int = 0
    stall: int = 0
    ticks_on_resume: int = 0


class StallScenario:
    """One seeded run; :meth:`run` raises :class:`Violation`. See the module docstring."""

    ELECTION_TICK = 10
    MAX_ROUND_PASSES = 50

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"stall:{seed}")
        self.rng = rng
        self.info = StallRun(seed=seed)
        self.info.nodes = rng.choice([3, 3, 5])
        self.info.heartbeat_tick = rng.choice([1, 2])
        self.info.victim_role = "follower" if seed % 2 == 0 else "leader"
        self.sim = Simulator(
            SimConfig(
                seed=seed,
                nodes=self.info.nodes,
                steps=0,
                spare=0,
                election_tick=self.ELECTION_TICK,
                heartbeat_tick=self.info.heartbeat_tick,
            )
        )
        self.sim.faults = False
        self.victim: NodeId = ""
        self.watching = False
        self.stalled = False

    # -- rounds ----------------------------------------------------------------------------
    def _round(self, *, hold: bool) -> None:
        """Everyone ticks (a stalled victim counts a missed tick), then Readies and
        deliveries until nothing more moves; with ``hold``, messages to the victim wait."""
        sim = self.sim
        for nid in sim.alive():
            ns = sim.nodes[nid]
            if self.stalled and nid == self.victim:
                ns.missed_ticks += 1
                continue
            assert ns.raw is not None
            ns.raw.tick()
        for _ in range(self.MAX_ROUND_PASSES):
            for nid in sim.alive():
                if self.stalled and nid == self.victim:
                    continue
                before = len(sim.bag)
                sim.process_ready(nid)
                self._watch(sim.bag[before:])
            moved = False
            i = 0
            while i < len(sim.bag):
                if hold and sim.bag[i].to == self.victim:
                    i += 1
                    continue
                sim._deliver(i)
                moved = True
            if not moved:
                break
        sim._check_committed_not_lost()

    def _watch(self, sent: list[Message]) -> None:
        if not self.watching or self.info.victim_role != "follower":
            return
        for m in sent:
            if m.type in _CAMPAIGN and m.frm == self.victim:
                raise Violation(
                    "stalled-follower-campaigned",
                    f"{self.victim} sent {m.type.name} after a stall of {self.info.stall} "
                    f"ticks (lead-in {self.info.lead_in}, stepped "
                    f"{self.info.ticks_on_resume} ticks on resume)",
                )

    def _check(self) -> None:
        if not self.watching:
            return
        raw = self.sim.nodes[self.victim].raw
        assert raw is not None
        if self.info.victim_role == "follower":
            if raw.campaigns != self._campaigns0:
                raise Violation(
                    "stalled-follower-campaigned",
                    f"{self.victim} started {raw.campaigns - self._campaigns0} election(s) "
                    f"after a stall of {self.info.stall} ticks (lead-in {self.info.lead_in})",
                )
        elif raw.state != StateType.LEADER or raw.term != self._term0:
            raise Violation(
                "stalled-leader-deposed",
                f"leader {self.victim} of term {self._term0} is {raw.state.name} in term "
                f"{raw.term} after a stall of {self.info.stall} ticks (lead-in "
                f"{self.info.lead_in}, stepped {self.info.ticks_on_resume} ticks on resume)",
            )

    # -- phases ----------------------------------------------------------------------------
    def _commit_one(self, rounds: int, what: str) -> None:
        sim = self.sim
        marker: bytes | None = None
        for _ in range(rounds):
            self._round(hold=False)
            self._check()
            ld = sim.leader()
            if ld is None:
                continue
            if marker is None or (marker not in sim.acked and marker not in sim.pending_props):
                raw = sim.nodes[ld].raw
                assert raw is not None
                sim.next_prop += 1
                data = b"p%d" % sim.next_prop
                try:
                    sim.pending_props[data] = (ld, raw.propose(data))
                except ProposalDroppedError:
                    continue
                marker = data
            elif marker in sim.acked:
                return
        raise Violation(what, f"no proposal committed within {rounds} rounds")

    def _warm_up(self) -> None:
        et = self.ELECTION_TICK
        self._commit_one(20 * et, "stall-setup")
        ld = self.sim.leader()
        for _ in range(2 * et):  # every node hears of the leader
            self._round(hold=False)
        if self.sim.leader() != ld or ld is None:
            raise Violation("stall-setup", "the leader changed during the warm-up")

    def run(self) -> StallRun:
        et = self.ELECTION_TICK
        hb = self.info.heartbeat_tick
        sim = self.sim
        rng = self.rng
        self._warm_up()
        ld = sim.leader()
        assert ld is not None
        if self.info.victim_role == "leader":
            self.victim = ld
            # Up to its next check-quorum: the lead-in starts with it.
            for _ in range(2 * et):
                lraw = sim.nodes[ld].raw
                assert lraw is not None
                if lraw.timeout_due():
                    break
                self._round(hold=False)
        else:
            self.victim = rng.choice([n for n in sim.alive() if n != ld])
        raw = sim.nodes[self.victim].raw
        assert raw is not None
        lraw = sim.nodes[ld].raw
        assert lraw is not None
        self._campaigns0 = raw.campaigns
        self._term0 = lraw.term
        self.watching = True

        lead_in = rng.randint(0, et - 1)
        if self.info.victim_role == "leader":
            # Its first tick is the check-quorum (passed: it heard from everyone); what
            # its followers answer after it is what the next check will count.
            lead_in += 1
        for i in range(lead_in):
            if raw.timeout_due() and (i or self.info.victim_role == "follower"):
                break
            self._round(hold=True)
            self.info.lead_in += 1
            self._check()

        if self.info.victim_role == "follower":
            self.info.stall = rng.randint(et + 1, 4 * et)
        else:
            self.info.stall = rng.randint(1, et - 2 * hb - 2)
        self.stalled = True
        sim.nodes[self.victim].stall_left = self.info.stall
        for _ in range(self.info.stall):
            self._round(hold=True)
            self._check()
        self.stalled = False
        # What it sends on resume leaves with its next Ready (watched in the rounds).
        self.info.ticks_on_resume = sim.resume(self.victim)
        self._check()

        for _ in range(3 * et):
            self._round(hold=False)
            self._check()
        self._commit_one(10 * et, "stall-liveness")
        self._check()
        return self.info


def replay_command(seed: int) -> str:
    return f"scripts/sim --scenario stall --seeds 1 --start {seed}"


def run_stall_seed(seed: int) -> str | None:
    """Run one seed; None if clean, else a report naming the seed, the broken invariant
    and the replay command."""
    sc = StallScenario(seed)
    try:
        sc.run()
    except Violation as v:
        return f"seed {seed} (stall, victim {sc.info.victim_role}): {v}\n  replay: " + (
            replay_command(seed)
        )
    except Exception as exc:  # a crash of the core is a violation too
        return (
            f"seed {seed} (stall): exception: {type(exc).__name__}: {exc}\n  replay: "
            + replay_command(seed)
        )
    return None
