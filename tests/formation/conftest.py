"""Fixtures for the formation tests in network namespaces.

Namespaces come from the shared ``need_netns`` fixture (tests/conftest.py): without
root/netns support these tests skip with the reason; with ``RAFTD_REQUIRE_NETNS=1`` they
fail instead.

``RAFTD_FORMATION_TRIALS`` (default 3) sets how many trials each randomized or timing
sensitive formation case runs; ``RAFTD_FORMATION_SEED`` fixes the base seed (printed by
every randomized test, so a failure can be replayed).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from harness.fleet import Fleet
from harness.netns import Topology

TRIALS = int(os.environ.get("RAFTD_FORMATION_TRIALS", "3"))
BASE_SEED = int(
    os.environ.get("RAFTD_FORMATION_SEED", str(random.SystemRandom().randrange(1 << 30)))
)

MakeFleet = Callable[..., Fleet]


def stop(fleet: Fleet) -> None:
    """SIGTERM every daemon still running: each must exit 0 (a clean shutdown)."""
    codes = fleet.stop_all()
    bad = {name: rc for name, rc in codes.items() if rc != 0}
    assert not bad, f"daemons exited uncleanly on SIGTERM: {bad}\n{fleet.explain()}"


@pytest.fixture
def make_fleet(need_netns: None, tmp_path: Path) -> Iterator[MakeFleet]:
    """``make_fleet(3)`` or ``make_fleet(["a", "b"], bridges={...}, namespaces=[...])``:
    a started topology with a (not yet started) fleet of daemons on it; everything is
    stopped and torn down after the test. On failure the daemons' logs stay in tmp_path."""
    with ExitStack() as stack:
        count = 0

        def make(hosts: Any, *, bridges: dict[str, list[str]] | None = None, **kw: Any) -> Fleet:
            nonlocal count
            topo = stack.enter_context(Topology(hosts, bridges=bridges))
            fleet = Fleet(topo, tmp_path / f"fleet{count}", **kw)
            count += 1
            stack.callback(stop, fleet)
            return fleet

        yield make
