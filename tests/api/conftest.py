"""Shared fixtures: real ``raftd run`` processes (raftd.testing.cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftd.testing.cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A 3-node cluster shared by the tests of one module (they must not break it)."""
    with LocalCluster(3) as c:
        yield c
