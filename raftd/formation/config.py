"""Formation timing, derived from the daemon's preset and configuration.

| preset   | heartbeat | stale info | bootstrap window | solo window | dead voter | learner GC |
|----------|-----------|------------|------------------|-------------|------------|------------|
| local    | 1 s       | 3.5 s      | 1.5 s            | 5 s         | 10 s       | 30 s       |
| regional | 2 s       | 7 s        | 4 s              | 12 s        | 30 s       | 90 s       |
| global   | 5 s       | 17.5 s     | 10 s             | 30 s        | 120 s      | 360 s      |

(The bootstrap window and the dead-voter timeout are the preset's; the rest derive from
it.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from raftd.runtime.presets import Preset

__all__ = ["FormationConfig", "FormationSettings"]


class FormationSettings(Protocol):
    """The slice of the daemon's configuration formation reads (``DaemonConfig`` has
    it)."""

    @property
    def timing(self) -> Preset: ...

    @property
    def expect(self) -> int: ...

    @property
    def voter_cap(self) -> int: ...


@dataclass(frozen=True, slots=True)
class FormationConfig:
    heartbeat_s: float  # presence announcements and peer exchange rounds
    stale_s: float  # announcements older than this do not count
    window_s: float  # bootstrap window: look for a cluster / other founders this long
    solo_window_s: float  # a node that saw nobody waits this long before founding alone
    expect: int  # --expect: wait for this many founders (0: window rule)
    voter_cap: int
    dead_voter_s: float  # a voter silent this long is replaced / demoted
    learner_gc_s: float  # a learner silent this long is removed
    alive_s: float  # a member answered within this: alive
    dial_timeout_s: float
    rpc_timeout_s: float  # one formation request, dial included
    tick_s: float  # how often the formation re-evaluates
    join_timeout_s: float  # accepted but no state after this: look again
    orphan_s: float  # no leader and nobody else announces our cluster for this long
    transfer_cooldown_s: float
    backoff_cap_s: float  # longest pause between dials to an unreachable peer

    @classmethod
    def of(cls, cfg: FormationSettings) -> FormationConfig:
        p = cfg.timing
        hb = min(5.0, max(1.0, p.bootstrap_window_s / 2))
        stale = 3.5 * hb
        dead = p.dead_voter_timeout_s
        return cls(
            heartbeat_s=hb,
            stale_s=stale,
            window_s=p.bootstrap_window_s,
            solo_window_s=max(5.0, 3 * p.bootstrap_window_s),
            expect=cfg.expect,
            voter_cap=cfg.voter_cap,
            dead_voter_s=dead,
            learner_gc_s=max(30.0, 3 * dead),
            alive_s=max(1.0, 3 * p.election_s),
            dial_timeout_s=p.dial_timeout_s,
            rpc_timeout_s=p.dial_timeout_s + max(1.0, 2 * p.election_s),
            tick_s=min(0.2, p.tick_s * 4),
            join_timeout_s=max(10.0, 4 * stale),
            orphan_s=max(10.0, 3 * stale),
            transfer_cooldown_s=max(5.0, 10 * p.election_s),
            backoff_cap_s=max(2.0, 2 * hb),
        )
