"""The state machine writes on the event loop, and the daemon's LevelDB, shared by every
namespace, queues each write behind the one in progress, fsync included. So a namespace
never applies while another namespace's write is in flight on the writer thread (or a
compaction on a worker): it waits for that write without holding the loop.

In-process daemons (real libp2p, real LevelDB), two namespaces written at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from raftd.client import open_client
from raftd.testing.inproc import cluster

NS_A = "/raft/a"
NS_B = "/raft/b"


async def test_no_namespace_applies_while_another_ones_write_is_in_flight(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, namespaces=[NS_A, NS_B], preset="tiny") as (c, _):
        with trio.fail_after(90):
            for ns in (NS_A, NS_B):
                await c.leader(ns)
            applies = 0
            in_flight_at_apply: list[int] = []
            for node in c.nodes:
                assert node.daemon is not None and node.daemon.db is not None
                db = node.daemon.db
                for ns in (NS_A, NS_B):
                    sm = node.group(ns).sm
                    original = sm.apply_many

                    def apply_many(items: Any, _orig: Any = original, _db: Any = db) -> Any:
                        nonlocal applies
                        applies += 1
                        if _db._off_loop:
                            in_flight_at_apply.append(_db._off_loop)
                        return _orig(items)

                    sm.apply_many = apply_many  # type: ignore[method-assign]

            async def load(ns: str, sock: str, n: int) -> None:
                async with open_client(sock, namespace=ns, timeout=30) as cl:
                    for i in range(n):
                        await cl.put(f"{ns}/k{i % 50}", "v" * 100)

            # Every node takes writes for both namespaces, so each one has appends,
            # acknowledgements, applies and snapshots of the two interleaving.
            async with trio.open_nursery() as nursery:
                for node in c.nodes:
                    for ns in (NS_A, NS_B):
                        for _ in range(4):
                            nursery.start_soon(load, ns, node.socket, 150)
        assert applies > 500, applies
        assert in_flight_at_apply == [], (
            f"{len(in_flight_at_apply)} of {applies} applies ran while a write was in flight"
        )
