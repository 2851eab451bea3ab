"""An idle group's ticker sleeps through the ticks that only advance its timers, and
timing still works: an idle cluster keeps its leader and term; cut off, the leader is
replaced; writes go on. The daemons' loop watchdogs need no wake-ups of their own.
Real libp2p hosts and LevelDB in one trio process."""

from __future__ import annotations

from pathlib import Path

import trio

from raftd.kv import commands
from raftd.testing.inproc import cluster

IDLE_TICKS = 60  # 3 s of the local preset's 50 ms ticks


async def test_idle_followers_sleep_through_quiet_ticks_and_failover_works(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            g = ld.group()
            r = await g.propose(commands.put(b"k", b"v"))  # a first write: all caught up
            assert r.result is not None
            term = g.status()["term"]
            followers = [n.group() for n in c.live() if n is not ld]
            before = [(f.stats.ticks, f.stats.ticker_wakeups) for f in followers]
            dogs = [n.daemon.watchdog for n in c.live() if n.daemon is not None]
            dogs_before = [w.wakeups for w in dogs]
            idle_since = trio.current_time()
            lead_before = (g.stats.ticks, g.stats.ticker_wakeups, g.stats.loop_wakeups)
            # Idle: wait until every follower has counted IDLE_TICKS more ticks.
            pairs = list(zip(followers, before, strict=True))
            while any(f._ticks_total < b[0] + IDLE_TICKS for f, b in pairs):  # noqa: ASYNC110
                await trio.sleep(0.05)  # a poll of counters that have no event to wait on
            assert g.is_leader and g.status()["term"] == term  # no election while idle
            idle_s = trio.current_time() - idle_since
            own = [w.wakeups - b for w, b in zip(dogs, dogs_before, strict=True)]
            print(f"watchdogs' own wake-ups over {idle_s:.1f} s idle: {own}")
            # The leader's ticker and the followers' loops report as they wake, which
            # keeps each daemon's watchdog from waking on its own (4 a second each if
            # nothing did); one sometimes slips through when the shared loop is late.
            assert len(own) == 3 and sum(own) <= idle_s, own
            for f, (t0, w0) in zip(followers, before, strict=True):
                ticks, wakeups = f._ticks_total - t0, f.stats.ticker_wakeups - w0
                print(f"follower: {ticks} ticks, {wakeups} ticker wake-ups")
                # Heartbeats reset the election timer before it is due: a follower's
                # ticker wakes for far fewer ticks than it counts.
                assert wakeups * 2 <= ticks, (ticks, wakeups)
            lt, lw = g._ticks_total - lead_before[0], g.stats.ticker_wakeups - lead_before[1]
            print(f"leader: {lt} ticks, {lw} ticker wake-ups")
            # The leader wakes for its heartbeats (every 2nd tick), not for the others.
            assert lw < lt, (lt, lw)
            # ... and its followers' routine answers wait for that wake-up: without
            # that, each heartbeat woke the loop once more per answer (two followers:
            # three wake-ups per heartbeat, 1.5 per tick).
            ll = g.stats.loop_wakeups - lead_before[2]
            print(f"leader: {ll} Ready-loop wake-ups")
            assert ll <= 0.75 * lt, (lt, ll)

            c.isolate(ld)
            new = await c.leader(exclude=ld)
            assert new.group().status()["term"] > term
            c.heal()
            r = await new.group().propose(commands.put(b"k2", b"v2"))
            assert r.result is not None
