"""Timing presets. One tick drives the core; timeouts are counted in ticks.

| preset   | tick   | heartbeat | election timeout | snapshot every        | bootstrap window |
|----------|--------|-----------|------------------|-----------------------|------------------|
| local    | 50 ms  | 100 ms    | 500-1000 ms      | 100,000 entries/60 s  | 1.5 s            |
| regional | 100 ms | 200 ms    | 1.5-3 s          | 100,000 entries/120 s | 4 s              |
| global   | 250 ms | 500 ms    | 5-10 s           | 100,000 entries/300 s | 10 s             |

``local`` is for a LAN or one host: failover is about the election timeout (0.5-1 s).
``global`` tolerates 300 ms RTT links: a heartbeat round trip fits ten times into the
lowest election timeout.

``e2e`` (tests only, not a ``--preset`` choice; select it with ``RAFTD_PRESET=e2e``) is
``local`` with snapshots every 2,000 entries and 500 trailing entries, so that the
real-process tests (tests/e2e) see the log compacted past a follower within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    tick_s: float
    heartbeat_ticks: int
    election_ticks: int
    snapshot_entries: int
    snapshot_interval_s: float
    compaction_trailing: int
    bootstrap_window_s: float
    dead_voter_timeout_s: float
    request_timeout_s: float
    dial_timeout_s: float

    @property
    def heartbeat_s(self) -> float:
        return self.tick_s * self.heartbeat_ticks

    @property
    def election_s(self) -> float:
        return self.tick_s * self.election_ticks


PRESETS: dict[str, Preset] = {
    "local": Preset(
        name="local",
        tick_s=0.05,
        heartbeat_ticks=2,
        election_ticks=10,
        snapshot_entries=100_000,
        snapshot_interval_s=60.0,
        compaction_trailing=5_000,
        bootstrap_window_s=1.5,
        dead_voter_timeout_s=10.0,
        request_timeout_s=5.0,
        dial_timeout_s=2.0,
    ),
    "regional": Preset(
        name="regional",
        tick_s=0.1,
        heartbeat_ticks=2,
        election_ticks=15,
        snapshot_entries=100_000,
        snapshot_interval_s=120.0,
        compaction_trailing=5_000,
        bootstrap_window_s=4.0,
        dead_voter_timeout_s=30.0,
        request_timeout_s=10.0,
        dial_timeout_s=5.0,
    ),
    "global": Preset(
        name="global",
        tick_s=0.25,
        heartbeat_ticks=2,
        election_ticks=20,
        snapshot_entries=100_000,
        snapshot_interval_s=300.0,
        compaction_trailing=10_000,
        bootstrap_window_s=10.0,
        dead_voter_timeout_s=120.0,
        request_timeout_s=30.0,
        dial_timeout_s=10.0,
    ),
}

# Test-only presets (not ``--preset`` choices; selected with ``RAFTD_PRESET``): ``local``
# timings with small snapshot/compaction thresholds, so lagging nodes need snapshot
# installs within seconds.
PRESETS["chaos"] = replace(
    PRESETS["local"], name="chaos", snapshot_entries=200, compaction_trailing=50
)  # the chaos harness
PRESETS["e2e"] = replace(
    PRESETS["local"], name="e2e", snapshot_entries=2_000, compaction_trailing=500
)  # tests/e2e
