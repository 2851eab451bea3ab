"""Fixtures shared by every test package: the one network-namespace fixture.

Tests that need Linux network namespaces (see :mod:`harness.netns`) request
``need_netns`` (or ``make_topology``). Policy: without root/netns support they skip with
the reason; with ``RAFTD_REQUIRE_NETNS=1`` (CI) they fail instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from harness.netns import Topology, cleanup_stale, netns_or_skip


@pytest.fixture(scope="session")
def netns_session() -> None:
    """Skip (or, under RAFTD_REQUIRE_NETNS=1, fail) without netns; once per session,
    remove leftovers of crashed earlier runs."""
    netns_or_skip()
    cleanup_stale()


@pytest.fixture
def need_netns(netns_session: None) -> None:
    """Per-test form of the policy; request it in any test that needs namespaces."""


@pytest.fixture
def make_topology(need_netns: None) -> Iterator[Callable[..., Topology]]:
    """Factory: ``make_topology(3)`` or ``make_topology(hosts, bridges=...)`` returns a
    started :class:`Topology` (same arguments) that is torn down after the test."""
    with ExitStack() as stack:

        def make(*args: Any, **kwargs: Any) -> Topology:
            return stack.enter_context(Topology(*args, **kwargs))

        yield make
