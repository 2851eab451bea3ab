"""scripts/bench-core: the CPU ceiling of the pure core.

Drives a 3-node cluster of RawNodes over MemoryStorage and an in-process message queue
(no I/O, no serialization) and prints committed entries per second at 1 and at 256
proposals in flight, with 100-byte entries. Proposals are made one by one, as clients
would; the leader batches them into appends. The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import deque

from raftd.core import Message, RawNode, StateType
from raftd.core.storage import MemoryStorage
from raftd.testing.network import bootstrap_storage

IDS = ("a", "b", "c")


class Cluster:
    """Three RawNodes and a FIFO message queue; the Ready contract is followed."""

    def __init__(self) -> None:
        self.storage: dict[str, MemoryStorage] = {}
        self.nodes: dict[str, RawNode] = {}
        for nid in IDS:
            st = bootstrap_storage(IDS)
            self.storage[nid] = st
            from raftd.core import Config

            self.nodes[nid] = RawNode(Config(id=nid, storage=st, rng=random.Random(nid), applied=1))
        self.queue: deque[Message] = deque()
        self.applied = 0  # entries applied by the leader

    def handle(self, nid: str) -> None:
        node = self.nodes[nid]
        st = self.storage[nid]
        while node.has_ready():
            rd = node.ready()
            self.queue.extend(rd.early_messages)
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            self.queue.extend(rd.messages)
            if nid == "a" and rd.committed_entries:
                self.applied += len(rd.committed_entries)
                last = rd.committed_entries[-1].index
                # Compact as a runtime would, so memory stays flat over long runs.
                if last - st.first_index() > 50_000:
                    for s in self.storage.values():
                        s.compact(min(last - 10_000, s.last_index()))
            node.advance(rd)

    def pump(self) -> None:
        for nid in IDS:
            self.handle(nid)
        q = self.queue
        while q:
            m = q.popleft()
            self.nodes[m.to].step(m)
            self.handle(m.to)


def run(inflight: int, seconds: float, payload: int = 100) -> dict[str, float]:
    c = Cluster()
    leader = c.nodes["a"]
    leader.campaign()
    c.pump()
    assert leader.raft.state == StateType.LEADER
    c.applied = 0
    data = random.Random(1).randbytes(payload)
    proposed = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(inflight - (proposed - c.applied)):
            leader.propose(data)
            proposed += 1
        c.pump()
    dt = time.perf_counter() - t0
    return {
        "inflight": inflight,
        "entries": c.applied,
        "seconds": dt,
        "entries_per_s": c.applied / dt,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args(argv)
    results = []
    for inflight in (1, 256):
        r = run(inflight, a.seconds)
        results.append(r)
        print(
            f"inflight={inflight:<4} committed={int(r['entries']):>8} "
            f"in {r['seconds']:.2f}s  -> {r['entries_per_s']:,.0f} entries/s"
        )
    print(
        json.dumps(
            {
                "system": "raftd-core",
                "op": "commit",
                "nodes": 3,
                "entry_bytes": payload_size(),
                "inflight_1_per_s": round(results[0]["entries_per_s"]),
                "inflight_256_per_s": round(results[1]["entries_per_s"]),
            }
        )
    )
    return 0


def payload_size() -> int:
    return 100
