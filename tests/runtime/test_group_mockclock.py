"""A 3-node cluster of real :class:`Group` runtimes on the in-memory twins (storage,
state machine, :class:`MemoryTransport`) under trio's ``MockClock``: an election,
replication under seeded message loss and delay, a partition of the leader (a new
leader is elected, the old one's uncommitted entries are discarded and the logs
converge), heal, and a leadership transfer.

Each run is ``trio.run`` with a fresh ``MockClock(autojump_threshold=0)``, so virtual
seconds cost only the CPU of the work done in them. trio's scheduling order is not
deterministic, so only outcomes are asserted, never the order of events.

Seeds: each run prints its seed. ``RAFTD_GROUP_SEED=N`` replays seed N;
``RAFTD_GROUP_RUNS=K`` runs K consecutive seeds (default 5) from a random start.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace

import trio
import trio.testing

from raftd.core import StateType
from raftd.kv import commands
from raftd.kv.machine import ApplyResult, KVStateMachine
from raftd.runtime.group import Group, GroupError, LeadershipLost, NotLeader, ProposalRejected
from raftd.runtime.presets import PRESETS
from raftd.storage.memory import MemoryRaftStorage
from raftd.transport.memory import MemoryNetwork, MemoryTransport

NS = "/raft/mock"
IDS = ("n1", "n2", "n3")
#: ``local`` timings; snapshots never fall due, so no image crosses the (file-spooling)
#: snapshot path, which would leave the virtual clock for worker threads.
PRESET = replace(PRESETS["local"], name="mock", snapshot_entries=10**9, snapshot_interval_s=10.0**9)
#: Virtual seconds any one phase may take before the run fails.
PHASE_S = 120.0

MemGroup = Group[MemoryRaftStorage, KVStateMachine]


@dataclass
class Cluster:
    net: MemoryNetwork
    groups: dict[str, MemGroup]
    transports: dict[str, MemoryTransport]
    isolated: set[str] = field(default_factory=set)
    #: term -> every leader id any node learned for that term.
    leaders_by_term: dict[int, set[str]] = field(default_factory=dict)

    def watch_leaders(self) -> None:
        for g in self.groups.values():

            def seen(leader: str, g: MemGroup = g) -> None:
                if leader:
                    term = int(g.status()["term"])
                    self.leaders_by_term.setdefault(term, set()).add(leader)

            g.add_leader_listener(seen)

    def reachable(self) -> list[MemGroup]:
        return [g for n, g in self.groups.items() if n not in self.isolated]

    def agreed_leader(self) -> MemGroup | None:
        """The leader every connected node follows, if they agree on one."""
        nodes = self.reachable()
        leaders = [g for g in nodes if g.role == StateType.LEADER]
        if len(leaders) != 1:
            return None
        lead = leaders[0]
        return lead if all(g.leader == lead.id for g in nodes) else None

    async def wait_for(self, cond: Callable[[], bool], what: str) -> None:
        """Poll ``cond`` every virtual 10 ms, for at most :data:`PHASE_S`."""
        # The conditions span several groups' state; polling in virtual time is free.
        with trio.move_on_after(PHASE_S) as scope:
            while not cond():  # noqa: ASYNC110
                await trio.sleep(0.01)
        if scope.cancelled_caught:
            raise AssertionError(f"not within {PHASE_S} virtual seconds: {what}")

    async def leader(self) -> MemGroup:
        await self.wait_for(lambda: self.agreed_leader() is not None, "one agreed leader")
        lead = self.agreed_leader()
        assert lead is not None
        return lead

    async def put(self, key: bytes, value: bytes) -> ApplyResult:
        """Propose through whoever leads until it applies (a retried put may land twice:
        the same key and value, so the outcome is the same)."""
        while True:
            lead = await self.leader()
            try:
                return await lead.propose(commands.put(key, value))
            except (NotLeader, LeadershipLost, ProposalRejected):
                await trio.sleep(0.05)

    def set_faults(self, drop: float, delay: float, rng: random.Random) -> None:
        for t in self.transports.values():
            t.set_fault(drop_rate=drop, delay_s=delay, seed=rng.randrange(2**32))

    def logs(self) -> dict[str, list[tuple[int, int, bytes]]]:
        out = {}
        for n, g in self.groups.items():
            st = g.storage
            ents = st.entries(st.first_index(), st.last_index() + 1)
            out[n] = [(e.index, e.term, e.data) for e in ents]
        return out

    def converged(self) -> bool:
        logs = list(self.logs().values())
        if not logs[0] or any(lg != logs[0] for lg in logs):
            return False
        return {g.applied_index() for g in self.groups.values()} == {logs[0][-1][0]}


def value_everywhere(c: Cluster, key: bytes) -> set[bytes | None]:
    out: set[bytes | None] = set()
    for g in c.groups.values():
        kv = g.sm.get(key)
        out.add(kv.value if kv is not None else None)
    return out


@contextmanager
def cluster_parts(seed: int) -> Iterator[Cluster]:
    net = MemoryNetwork()
    groups: dict[str, MemGroup] = {}
    transports: dict[str, MemoryTransport] = {}
    for n in IDS:
        t = net.transport(n, NS, rng=random.Random(f"{seed}/t/{n}"))
        g = Group(
            namespace=NS,
            node_id=n,
            storage=MemoryRaftStorage(NS),
            sm=KVStateMachine.memory(),
            transport=t,
            preset=PRESET,
            rng=random.Random(f"{seed}/g/{n}"),
            clock=trio.current_time,
        )
        g.bootstrap(list(IDS))
        groups[n], transports[n] = g, t
    yield Cluster(net, groups, transports)


async def scenario(seed: int) -> dict[str, object]:
    """One seeded run; returns what happened (for the failure message / debugging)."""
    rng = random.Random(seed)
    facts: dict[str, object] = {"seed": seed}
    with cluster_parts(seed) as c:
        c.watch_leaders()
        async with trio.open_nursery() as nursery:
            for n in IDS:
                await nursery.start(c.transports[n].run)
                await nursery.start(c.groups[n].run)

            # 1. Election.
            first = await c.leader()
            facts["first_leader"] = first.id

            # 2. Replication of N puts, some concurrently, under seeded loss and delay.
            drop, delay = rng.choice([0.0, 0.05, 0.1, 0.2]), rng.choice([0.0, 0.001, 0.01])
            c.set_faults(drop, delay, rng)
            n_puts = rng.randint(10, 40)
            facts.update(drop=drop, delay=delay, puts=n_puts)
            done = 0
            while done < n_puts:
                width = min(rng.randint(1, 8), n_puts - done)
                async with trio.open_nursery() as batch:
                    for i in range(done, done + width):
                        batch.start_soon(c.put, b"k%d" % i, b"v%d" % i)
                done += width
            c.set_faults(0.0, 0.0, rng)
            await c.wait_for(c.converged, "replicated logs equal and applied everywhere")
            for i in range(n_puts):
                assert value_everywhere(c, b"k%d" % i) == {b"v%d" % i}

            # 3. Partition the leader; give it writes it can never commit.
            old = await c.leader()
            facts["partitioned"] = old.id
            c.net.isolate(old.id)
            c.isolated.add(old.id)
            stale = [b"stale%d" % i for i in range(rng.randint(1, 5))]
            stale_errors: list[BaseException] = []

            async def doomed(key: bytes) -> None:
                try:
                    await old.propose(commands.put(key, b"never"))
                except GroupError as exc:
                    stale_errors.append(exc)
                else:
                    stale_errors.append(AssertionError(f"{key!r} committed in a minority"))

            for key in stale:
                nursery.start_soon(doomed, key)
            new = await c.leader()  # among the two still connected
            assert new.id != old.id
            facts["second_leader"] = new.id
            after = rng.randint(1, 10)
            for i in range(after):
                await c.put(b"p%d" % i, b"w%d" % i)
            # The isolated leader notices (check-quorum) and steps down; its writes fail.
            await c.wait_for(lambda: len(stale_errors) == len(stale), "stale proposals end")
            assert all(isinstance(e, LeadershipLost | NotLeader) for e in stale_errors), (
                stale_errors
            )
            assert old.role != StateType.LEADER
            # What the old leader appended before it stepped down is in its log only.
            stale_cmds = {commands.put(key, b"never") for key in stale}
            appended = [e for e in c.logs()[old.id] if e[2] in stale_cmds]
            lost = [e for e in stale_errors if isinstance(e, LeadershipLost)]
            assert len(appended) == len(lost), (appended, stale_errors)
            facts["stale_appended"] = len(appended)

            # 4. Heal: the old leader follows, its uncommitted suffix is replaced.
            await trio.sleep(rng.uniform(0.0, 2.0))  # a seeded pause before healing
            c.net.heal()
            c.isolated.clear()
            await c.put(b"healed", b"yes")
            await c.wait_for(c.converged, "logs converged after the heal")
            assert not [e for lg in c.logs().values() for e in lg if e[2] in stale_cmds]
            for key in stale:
                assert value_everywhere(c, key) == {None}
            for i in range(after):
                assert value_everywhere(c, b"p%d" % i) == {b"w%d" % i}
            for i in range(n_puts):
                assert value_everywhere(c, b"k%d" % i) == {b"v%d" % i}

            # 5. Leader change: hand leadership to a seeded choice of follower.
            lead = await c.leader()
            target = rng.choice([n for n in IDS if n != lead.id])
            facts["transfer_to"] = target

            next_try = -1.0

            def transferred() -> bool:
                nonlocal next_try
                agreed = c.agreed_leader()
                if agreed is not None and agreed.id == target:
                    return True
                if agreed is not None and trio.current_time() >= next_try:
                    # Asked again after an election timeout if a try was lost.
                    agreed.transfer_leader(target)
                    next_try = trio.current_time() + PRESET.election_s
                return False

            await c.wait_for(transferred, f"leadership transferred to {target}")
            terms = {g.status()["term"] for g in c.groups.values()}
            assert len(terms) == 1, terms
            await c.put(b"last", b"1")
            await c.wait_for(c.converged, "logs converged after the transfer")
            assert value_everywhere(c, b"last") == {b"1"}
            facts["final_term"] = terms.pop()
            # Election safety: one leader per term, as every node saw it.
            assert all(len(ids) == 1 for ids in c.leaders_by_term.values()), c.leaders_by_term
            facts["log_length"] = len(c.logs()[target])
            nursery.cancel_scope.cancel()
    return facts


def run_seed(seed: int) -> dict[str, object]:
    clock = trio.testing.MockClock(autojump_threshold=0)
    facts: dict[str, object] = trio.run(scenario, seed, clock=clock)
    facts["virtual_s"] = round(clock.current_time(), 1)
    return facts


def test_group_cluster_under_mock_clock() -> None:
    env_seed = os.environ.get("RAFTD_GROUP_SEED")
    if env_seed is not None:
        seeds = [int(env_seed)]
    else:
        runs = int(os.environ.get("RAFTD_GROUP_RUNS", "5"))
        start = random.randrange(10**9)
        seeds = list(range(start, start + runs))
    for seed in seeds:
        print(f"seed {seed} (replay: RAFTD_GROUP_SEED={seed})", flush=True)
        print(run_seed(seed), flush=True)


@asynccontextmanager
async def idle_cluster(seed: int) -> AsyncIterator[tuple[Cluster, MemGroup]]:
    """The three groups running with one write applied: yields the cluster and its
    leader, and stops them all when the block ends."""
    with cluster_parts(seed) as c:
        async with trio.open_nursery() as nursery:
            for n in IDS:
                await nursery.start(c.transports[n].run)
                await nursery.start(c.groups[n].run)
            await c.put(b"k", b"v")
            yield c, await c.leader()
            nursery.cancel_scope.cancel()


async def quorum_check_reads(clock: trio.testing.MockClock, seed: int) -> tuple[int, int, int]:
    """An idle leader for ten election timeouts with every timer on time, then for ten
    more with the whole process held up for 1.5 ticks before each tick. Returns its
    read rounds before quorum checks in each phase, and its term changes."""
    async with idle_cluster(seed) as (_, lead):
        term = lead.status()["term"]
        r0 = lead.stats.reads_before_timeout
        await trio.sleep(10 * PRESET.election_s)
        r1 = lead.stats.reads_before_timeout
        end = trio.current_time() + 10 * PRESET.election_s
        while trio.current_time() < end:
            # Time passes while no task runs: every timer then fires late.
            clock.jump(1.5 * PRESET.tick_s)
            await trio.sleep(PRESET.tick_s / 100)
        r2 = lead.stats.reads_before_timeout
        changed = int(lead.status()["term"]) - int(term)
    return r1 - r0, r2 - r1, changed


def test_a_leader_reads_before_its_quorum_check_only_when_held_up() -> None:
    """A leader's quorum check (every election timeout) needs its followers' answers
    over the whole timeout. On time, they were stepped as they came, and the loop goes
    straight on; after being held up, it first lets the transport read what queued
    meanwhile (a follower about to campaign always does)."""
    seed = random.randrange(10**9)
    print(f"seed {seed}")
    clock = trio.testing.MockClock(autojump_threshold=0)
    on_time, held_up, term_changes = trio.run(quorum_check_reads, clock, seed, clock=clock)
    print(f"read rounds before quorum checks: on time {on_time}, held up {held_up}")
    assert on_time == 0
    assert held_up >= 1
    assert term_changes == 0


async def idle_leader(seed: int) -> tuple[int, int, int, dict[str, float]]:
    """An idle leader for ten election timeouts. Returns the heartbeats' count in that
    time (per follower, from the ticks), the messages it received, its term changes and
    its smoothed RTT per follower."""
    async with idle_cluster(seed) as (c, lead):
        term = int(lead.status()["term"])
        received = c.transports[lead.id].stats.received
        await trio.sleep(10 * PRESET.election_s)
        received = c.transports[lead.id].stats.received - received
        changed = int(lead.status()["term"]) - term
        rtt = dict(lead.peer_rtt)
    return 10 * PRESET.election_ticks // PRESET.heartbeat_ticks, received, changed, rtt


def test_an_idle_leader_hears_from_each_follower_about_once_per_election_timeout() -> None:
    """Caught-up followers answer the heartbeats the leader asks about (the first after
    each quorum check) and let the others pass, and the leader keeps leading; its RTT
    is timed from the answered heartbeats only (the transport here has no delay)."""
    seed = random.randrange(10**9)
    print(f"seed {seed}")
    clock = trio.testing.MockClock(autojump_threshold=0)
    beats, received, term_changes, rtt = trio.run(idle_leader, seed, clock=clock)
    print(f"heartbeats per follower {beats}, messages received {received}, rtt {rtt}")
    assert term_changes == 0
    assert 2 * 10 <= received <= 2 * (10 + 2), received
    assert received < beats
    assert len(rtt) == 2, rtt
    assert all(v < PRESET.tick_s for v in rtt.values()), rtt
