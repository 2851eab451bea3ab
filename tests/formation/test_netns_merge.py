"""Duplicate clusters in one namespace, made on purpose: one host's link is down while
everything boots, so it founds a cluster of its own (after the solo window) while the
others found theirs. Then the link comes up.

- Without user writes on the lone node's side, the younger cluster dissolves: its member
  wipes its state and joins the older one, which ends as ONE cluster.
- With user writes on both sides, nothing merges: both sides report the namespace
  conflict (status and metrics), and no data is lost on either side.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from harness.fleet import Fleet, FleetNode
from raftd.testing.launch import wait_until

from .conftest import MakeFleet

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def split_boot(make_fleet: MakeFleet) -> tuple[Fleet, list[FleetNode], FleetNode]:
    fleet = make_fleet(4)
    main, lone = fleet.nodes[:3], fleet[3]
    lone.host.link_down()
    fleet.start_all()
    main_cid = fleet.wait_one_cluster(main, timeout=60)
    # Alone, it waits for the solo window (5 s with `local`), then founds its own.
    lone_cid = fleet.wait_one_cluster([lone], timeout=60)
    assert lone_cid != main_cid
    return fleet, main, lone


def put(node: FleetNode, key: str, value: str) -> None:
    def attempt() -> bool:
        with node.client() as c:
            c.put(key, value)
        return True

    wait_until(attempt, 30, interval=0.3, what=f"put {key} through {node.name}")


def holds_for(fn: Callable[[], bool], seconds: float, *, what: str) -> None:
    """Observe ``fn`` for ``seconds``: it must hold at every poll."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert fn(), f"{what}: no longer true"
        time.sleep(0.1)


def get(node: FleetNode, key: str) -> bytes | None:
    with node.client() as c:
        kv = c.get(key, stale=True)
    return None if kv is None else kv.value


def test_an_isolated_cluster_without_writes_merges_when_the_link_comes_up(
    make_fleet: MakeFleet,
) -> None:
    fleet, main, lone = split_boot(make_fleet)
    main_cid = main[0].status()["cluster_id"]  # type: ignore[index]
    put(main[0], "merge/k", "main")  # the surviving cluster may hold writes
    lone.host.link_up()
    t0 = time.monotonic()
    assert fleet.wait_one_cluster(timeout=90) == main_cid
    print(f"merged {time.monotonic() - t0:.1f}s after the link came up")
    st = lone.status()
    assert st is not None and st["formation"]["dissolves"] == 1
    wait_until(lambda: get(lone, "merge/k") == b"main", 30, what="data replicated to the joiner")


def test_clusters_that_both_hold_writes_report_a_conflict_and_keep_their_data(
    make_fleet: MakeFleet,
) -> None:
    fleet, main, lone = split_boot(make_fleet)
    main_cid = main[0].status()["cluster_id"]  # type: ignore[index]
    lone_cid = lone.status()["cluster_id"]  # type: ignore[index]
    put(main[0], "conflict/main", "m")
    put(lone, "conflict/lone", "l")
    lone.host.link_up()

    def conflict_seen() -> bool:
        for n in fleet:
            s = n.status()
            if s is None or s["conflict"] is None:
                return False
            mine = s["cluster_id"]
            other = lone_cid if mine == main_cid else main_cid
            c = s["conflict"]
            if c["cluster_id"] != mine or c["other_cluster_id"] != other or not c["other_leader"]:
                return False
            if s["formation"]["conflict"] != 1:
                return False
        return True

    wait_until(conflict_seen, 60, what="conflict reported everywhere", explain=fleet.explain)

    # Nothing merges, nothing is lost: over a few formation heartbeats, each side keeps
    # its own cluster, data and members.
    def unchanged() -> bool:
        return {(n.status() or {}).get("cluster_id") for n in main} == {main_cid} and (
            lone.status() or {}
        ).get("cluster_id") == lone_cid

    holds_for(unchanged, 3.0, what="both clusters stay as they are")
    assert get(lone, "conflict/lone") == b"l" and get(lone, "conflict/main") is None
    for n in main:
        assert get(n, "conflict/main") == b"m" and get(n, "conflict/lone") is None
