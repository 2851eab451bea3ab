"""Discovery-first formation of real daemons, each in its own network namespace on a
bridge (as docker-compose gives each container its own network namespace): nothing
configured but the namespace, no peer list.

- simultaneous start of 3, 5 and 9 daemons; a staggered start in random order (random
  delays up to 5 s, seeded); each ends as ONE cluster with ``min(N, 5)`` voters and the
  rest learners;
- partial connectivity at boot: two bridges, A and C each see only B: one cluster.

``RAFTD_FORMATION_TRIALS`` (default 3) trials per case.
"""

from __future__ import annotations

import random
import time

import pytest

from raftd.testing.launch import wait_until

from .conftest import BASE_SEED, TRIALS, MakeFleet

pytestmark = [pytest.mark.netns, pytest.mark.slow]

TIMEOUT = {3: 40.0, 5: 60.0, 9: 120.0}


@pytest.mark.parametrize("trial", range(TRIALS))
@pytest.mark.parametrize("n", [3, 5, 9])
def test_simultaneous_start_forms_one_cluster(make_fleet: MakeFleet, n: int, trial: int) -> None:
    fleet = make_fleet(n)
    t0 = time.monotonic()
    fleet.start_all()
    cid = fleet.wait_one_cluster(timeout=TIMEOUT[n])
    took = time.monotonic() - t0
    print(f"{n} nodes, trial {trial}: cluster {cid} formed in {took:.1f}s")
    bootstraps = sum((n.status() or {}).get("formation", {}).get("bootstraps", 0) for n in fleet)
    print(f"  bootstraps={bootstraps} (1 unless partial views made a duplicate that merged)")
    sts = [n.status() for n in fleet]
    roles = sorted(s["role"] for s in sts if s)
    assert roles.count("leader") == 1
    assert roles.count("learner") == max(0, n - 5)
    if trial == 0:
        # Every source at its default did its part: mDNS found the peers, peer exchange
        # and GossipSub presence carried their node info.
        def sources_seen() -> bool:
            st = fleet[0].status()
            if st is None:
                return False
            peers = st["peers"].values()
            return (
                len(peers) == n - 1
                and all({"mdns", "direct"} <= set(p["sources"]) for p in peers)
                and any("pubsub" in p["sources"] for p in peers)
            )

        wait_until(sources_seen, 20, what="mdns, pex and pubsub all contributed")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_staggered_start_in_random_order(make_fleet: MakeFleet, trial: int) -> None:
    seed = BASE_SEED + trial
    rng = random.Random(seed)
    n = 5
    fleet = make_fleet(n)
    order = list(range(n))
    rng.shuffle(order)
    delays = sorted(rng.uniform(0, 5) for _ in range(n))
    print(
        f"seed={seed} (RAFTD_FORMATION_SEED={BASE_SEED}): order {order}, delays "
        + ", ".join(f"{d:.2f}" for d in delays)
    )
    t0 = time.monotonic()
    for i, d in zip(order, delays, strict=True):
        time.sleep(max(0.0, t0 + d - time.monotonic()))
        fleet[i].start()
    cid = fleet.wait_one_cluster(timeout=60)
    print(f"seed={seed}: cluster {cid} formed {time.monotonic() - t0:.1f}s after the first start")


def test_partial_connectivity_at_boot_forms_one_cluster(make_fleet: MakeFleet) -> None:
    """A and C each see only B (two bridges): B relays joins, peer exchange spreads
    what B has seen, and leadership settles where every member is reachable."""
    fleet = make_fleet(["a", "b", "c"], bridges={"left": ["a", "b"], "right": ["b", "c"]})
    fleet.start_all()
    cid = fleet.wait_one_cluster(timeout=60)
    leader = fleet[0].status()["leader"]  # type: ignore[index]
    print(f"cluster {cid}; leader is {fleet.by_id(leader).name}")
    # Only B reaches everyone, so with A or C leading, C or A would stay behind: the
    # cluster is only "one" (every member reports the same leader) when B leads or the
    # leader reaches everyone through B's relaying.
    assert fleet.by_id(leader).name == "b"
