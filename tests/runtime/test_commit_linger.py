"""A leader holds back an append that would only carry a new commit index, briefly.

At low load every write used to cost each follower two appends (the entry, then the
commit index) and two answers. The leader now waits ``Group.COMMIT_LINGER_S`` for the
next proposal, whose appends carry the commit index; if none comes, it sends the commit
index on its own (an append marked ``commit_only``, which is not answered). A follower
that forwarded a write waiting in the new commit index gets it at once. Real daemons in
one process (real libp2p, real LevelDB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from raftd.client import open_client
from raftd.core.types import Message, MessageType
from raftd.testing.inproc import NS, cluster


def _record_sends(group: Any) -> list[Message]:
    sent: list[Message] = []
    original = group.transport.send

    def send(to: str, m: Message) -> Any:
        sent.append(m)
        return original(to, m)

    setattr(group.transport, "send", send)  # noqa: B010 - patching a method
    return sent


async def test_a_lone_write_reaches_the_followers_commit_by_the_flushed_append(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as (c, nursery):
        with trio.fail_after(60):
            ld = await c.leader()
            lg = ld.group()
            followers = [n for n in c.nodes if n is not ld]
            async with open_client(ld.socket, namespace=NS, timeout=30) as cl:
                await cl.put("warm", "up")
                sent = _record_sends(lg)
                await cl.put("k", "v")
            index = lg.applied_index()
            for f in followers:
                while f.group().applied_index() < index:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            # The first message that told each follower the new commit index: the flushed
            # commit-only append, not the next heartbeat (100 ms later).
            for f in followers:
                pid = f.group().id
                first = next(
                    m
                    for m in sent
                    if m.to == pid
                    and m.commit >= index
                    and m.type in (MessageType.APP, MessageType.HEARTBEAT)
                )
                assert first.type == MessageType.APP, first
                assert first.commit_only and not first.entries, first
        nursery.cancel_scope.cancel()


async def test_the_next_write_carries_the_commit_index(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (c, nursery):
        with trio.fail_after(60):
            ld = await c.leader()
            lg = ld.group()
            fw = c.other(ld)
            async with (
                open_client(ld.socket, namespace=NS, timeout=30) as cl,
                open_client(fw.socket, namespace=NS, timeout=30) as cf,
            ):
                await cl.put("warm", "up")
                sent = _record_sends(lg)
                # Back-to-back writes on the leader: each one's appends carry the commit
                # index of the one before.
                for i in range(30):
                    await cl.put(f"l{i}", "v")
                carried = [m for m in sent if m.type == MessageType.APP and m.entries]
                empty = [m for m in sent if m.type == MessageType.APP and not m.entries]
                assert len(carried) >= 2 * 30
                # Most commit indexes rode on the next write's appends.
                assert len(empty) < len(carried) / 2, (len(empty), len(carried))
                # Writes through a follower (which waits for the commit index to answer)
                # are answered as before.
                for i in range(10):
                    await cf.put(f"f{i}", "v")
                got = await cl.get("f9")
                assert got is not None and got.value == b"v"
        nursery.cancel_scope.cancel()
