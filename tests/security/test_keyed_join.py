"""Joining a keyed cluster (in-process daemons, real libp2p and LevelDB, discovery by a
``--bootstrap`` entry and peer exchange only).

The join request, the peer exchange that finds the cluster, and the Raft traffic that
follows all travel under the envelope: a late node with the shared key joins and catches
up; a node with a wrong key, or none, pointed at the same entry never becomes a member
and receives nothing.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from raftd.app.config import DaemonConfig
from raftd.app.daemon import Daemon
from raftd.formation.service import Formation
from raftd.kv import commands
from raftd.testing.launch import free_port
from raftd.transport.host import load_or_create_identity, peer_id_of

NS = "/raft/keyed"


def key_file(path: Path) -> Path:
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return path


class Fleet:
    """Daemons started one by one, each bootstrapping from daemon 0."""

    def __init__(self, tmp: Path, nursery: trio.Nursery) -> None:
        self.tmp = tmp
        self.nursery = nursery
        self.daemons: list[Daemon] = []
        self.seed = ""

    async def start(self, key: Path | None) -> Daemon:
        i = len(self.daemons)
        port = free_port()
        d_dir = self.tmp / f"d{i}"
        if i == 0:
            pid = peer_id_of(load_or_create_identity(d_dir))
            self.seed = f"/ip4/127.0.0.1/tcp/{port}/p2p/{pid}"
        cfg = DaemonConfig(
            data_dir=d_dir,
            namespaces=[NS],
            listen=[f"/ip4/127.0.0.1/tcp/{port}"],
            bootstrap=[self.seed] if i else [],
            discovery=["pex"],
            key_file=key,
        )
        cfg.validate()
        d = Daemon(cfg)
        await self.nursery.start(d.run)
        self.daemons.append(d)
        return d


@asynccontextmanager
async def fleet(tmp: Path) -> AsyncIterator[Fleet]:
    async with trio.open_nursery() as nursery:
        f = Fleet(tmp, nursery)
        try:
            yield f
        finally:
            for d in f.daemons:
                d.stop()


def formation(d: Daemon) -> Formation:
    assert isinstance(d.formation, Formation)
    return d.formation


def members(d: Daemon) -> set[str]:
    cs = d.groups[NS].conf
    return set(cs.voters) | set(cs.learners)


async def until(pred: Callable[[], bool], what: str) -> None:
    """Poll ``pred`` (``what`` it waits for) until true; the caller bounds the wait with
    trio.fail_after."""
    while True:
        if pred():
            return
        await trio.sleep(0.05)


async def test_a_keyed_node_joins_and_a_wrong_or_missing_key_cannot(tmp_path: Path) -> None:
    good = key_file(tmp_path / "good")
    wrong = key_file(tmp_path / "wrong")
    async with fleet(tmp_path) as f:
        founders = [await f.start(good) for _ in range(3)]
        ids = {d.peer_id for d in founders}
        with trio.fail_after(60):
            await until(lambda: all(members(d) == ids for d in founders), "3 keyed founders")
            leader = next(d for d in founders if d.groups[NS].is_leader)
            for i in range(50):
                r = await leader.groups[NS].propose(commands.put(b"secret%d" % i, b"v"))
                assert r.result is not None

            # Outsiders first, then the keyed late joiner: by the time it is in, the
            # outsiders have had every chance to get in as well.
            outsiders = [await f.start(wrong), await f.start(None)]
            joiner = await f.start(good)
            everyone = ids | {joiner.peer_id}
            await until(
                lambda: all(members(d) == everyone for d in [*founders, joiner]),
                "the keyed joiner is a member everywhere",
            )
            jg = joiner.groups[NS]
            await jg.wait_applied(leader.groups[NS].applied_index())
            got = jg.sm.get(b"secret49")
            assert got is not None and got.value == b"v"
            # The outsiders kept trying (their exchanges with the keyed nodes fail) ...
            await until(
                lambda: all(formation(o).metrics()[NS]["pex_failed"] >= 3 for o in outsiders),
                "outsiders' peer exchanges failed",
            )
        # ... and got nowhere: not members, no data, not counted by anyone.
        for o in outsiders:
            assert o.peer_id not in members(leader)
            assert o.groups[NS].sm.get(b"secret0") is None
            assert not ({d.peer_id for d in founders} & members(o))
        assert sum(formation(d).metrics()[NS]["bootstraps"] for d in [*founders, joiner]) == 1
