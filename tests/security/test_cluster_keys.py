"""The shared key across real daemons (in-process, real libp2p and LevelDB).

Covers: a keyed 3-node cluster elects, replicates and installs snapshots; a node with a
wrong key or no key cannot receive or inject anything; crafted, bit-flipped and replayed
frames on a raw stream are refused; a private-network key mismatch cannot connect; and a
key rotation under write load loses no acknowledged write.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import multiaddr
import trio

from raftd.app.daemon import Daemon
from raftd.core import Message, MessageType
from raftd.kv import commands
from raftd.runtime.group import Group, LeadershipLost, NotLeader
from raftd.security.envelope import make_envelope
from raftd.security.keys import KeyRing, load_key_file
from raftd.testing.inproc import NS, cluster
from raftd.transport.base import protocol_id
from raftd.transport.host import load_or_create_identity, open_host
from raftd.transport.libp2p import parse_peer_id
from raftd.wire.framing import encode_frame
from raftd.wire.raft import encode_batch


class Progress:
    """Wakes waiters whenever the writer acknowledges another write."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def bump(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


def key_file(path: Path) -> Path:
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return path


async def put(g: Group, key: bytes, value: bytes) -> None:
    r = await g.propose(commands.put(key, value))
    assert r.result is not None


def auth_failures(d: Daemon | None) -> int:
    assert d is not None
    return sum(t.stats.auth_failures for t in d.transports.values())


async def test_keyed_cluster_replicates_and_installs_snapshots(tmp_path: Path) -> None:
    k = key_file(tmp_path / "key")
    async with cluster(tmp_path, preset="tiny", overrides=lambda i: {"key_file": k}) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            lagger = c.other(ld)
            c.isolate(lagger)
            for i in range(400):
                await put(ld.group(), b"k%d" % i, b"v")
            c.heal()
            lg = lagger.group()
            await lg.wait_applied(ld.group().applied_index())
            assert lg.stats.snapshots_installed >= 1  # the snapshot crossed sealed
            assert lg.sm.get(b"k399") is not None
            assert all(auth_failures(n.daemon) == 0 for n in c.nodes)


async def test_wrong_key_or_no_key_node_gets_nothing(tmp_path: Path) -> None:
    good = key_file(tmp_path / "good")
    bad = key_file(tmp_path / "bad")

    def keys(i: int) -> dict[str, Any]:
        return {"key_file": [good, good, good, bad, None][i]}

    # Five voters: the three with the right key form a quorum; the other two must get
    # nothing: no entries, no snapshot, no votes that count.
    async with cluster(tmp_path, n=5, overrides=keys) as (c, _):
        with trio.fail_after(30):
            ld = await c.leader()
            assert ld in c.nodes[:3]
            for i in range(20):
                await put(ld.group(), b"secret%d" % i, b"v")
            for n in c.nodes[:3]:
                await n.group().wait_applied(ld.group().applied_index())
            for out in c.nodes[3:]:
                g = out.group()
                assert g.applied_index() <= 1
                assert g.sm.get(b"secret0") is None
                assert not g.is_leader
            assert auth_failures(c.nodes[3].daemon) > 0  # wrong key: refuses ours
            assert auth_failures(c.nodes[4].daemon) > 0  # no key: refuses sealed streams
            # The outsiders reach the keyed nodes only once they campaign (they never
            # hear a leader they can read), one election timeout or more from now.
            while sum(auth_failures(n.daemon) for n in c.nodes[:3]) == 0:  # noqa: ASYNC110
                await trio.sleep(0.05)


async def test_raw_stream_injection_is_refused(tmp_path: Path) -> None:
    """A host that can connect at the libp2p layer but lacks the key cannot inject:
    plaintext frames, frames sealed under another key, a bit flip and a replay of a
    captured sealed frame are all refused, and the daemon keeps serving."""
    k = key_file(tmp_path / "key")
    other = key_file(tmp_path / "other")
    async with cluster(tmp_path, overrides=lambda i: {"key_file": k}) as (c, _):
        with trio.fail_after(60):
            ld = await c.leader()
            target = c.other(ld)
            assert target.daemon is not None
            proto = protocol_id(NS, "raft")
            before = auth_failures(target.daemon)
            attacker_dir = tmp_path / "attacker"
            attacker_dir.mkdir()
            kp = load_or_create_identity(attacker_dir)
            async with open_host(kp) as host:
                me = str(host.get_id())
                pid = parse_peer_id(target.peer_id)
                addr = multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{target.port}")
                host.get_peerstore().add_addrs(pid, [addr], 0)
                evil = Message(
                    MessageType.APP, to=target.peer_id, frm=me, term=99, index=1, log_term=1
                )
                payload = encode_batch([evil])

                async def attempt(frames: list[bytes]) -> None:
                    stream = await host.new_stream(pid, [proto])
                    try:
                        await stream.write(b"".join(encode_frame(f) for f in frames))
                        with trio.move_on_after(5):
                            await stream.read(1)  # until the daemon resets the stream
                    except Exception:
                        pass

                # 1. no key: the plaintext header 0x00 then a plaintext batch.
                await attempt([b"\x00", payload])
                # 2. sealed under a key the cluster does not hold.
                wrong = make_envelope(KeyRing(load_key_file(other)))
                s = wrong.sealer(NS, "raft", local_peer=me, remote_peer=target.peer_id)
                await attempt([s.header, s.seal(payload)])
                # 3. the right key (a captured stream), with one bit flipped...
                right = make_envelope(KeyRing(load_key_file(k)))
                s = right.sealer(NS, "raft", local_peer=me, remote_peer=target.peer_id)
                sealed = s.seal(payload)
                flipped = bytearray(sealed)
                flipped[-1] ^= 0x01
                await attempt([s.header, bytes(flipped)])
                # 4. ...and replayed: the same sealed frame twice on one stream.
                s = right.sealer(NS, "raft", local_peer=me, remote_peer=target.peer_id)
                f1 = s.seal(encode_batch([]))
                await attempt([s.header, f1, f1])
            assert auth_failures(target.daemon) >= before + 4
            # The forged term-99 append never reached the core.
            assert target.group().node is not None
            assert target.group().node.raft.term < 99  # type: ignore[union-attr]
            # And the cluster still serves.
            await put(ld.group(), b"after", b"attack")


async def test_psk_mismatch_cannot_connect(tmp_path: Path) -> None:
    net = key_file(tmp_path / "pnet")
    other = key_file(tmp_path / "pnet2")

    def psk(i: int) -> dict[str, Any]:
        return {"psk_file": [net, net, other][i]}

    async with cluster(tmp_path, overrides=psk) as (c, _):
        with trio.fail_after(30):
            ld = await c.leader()
            assert ld in c.nodes[:2]
            await put(ld.group(), b"x", b"y")
            outsider = c.nodes[2]
            assert outsider.daemon is not None
            t = outsider.daemon.transports[NS]
            assert t.stats.received == 0
            assert outsider.group().applied_index() <= 1


async def test_rotation_under_load_loses_no_write(tmp_path: Path) -> None:
    k1 = key_file(tmp_path / "k1")
    k2 = key_file(tmp_path / "k2")
    acked: list[bytes] = []
    progress = Progress()
    async with cluster(tmp_path, overrides=lambda i: {"key_file": k1}) as (c, _):
        with trio.fail_after(90):
            await c.leader()
            stop = trio.Event()

            async def writer() -> None:
                i = 0
                while not stop.is_set():
                    ld = await c.leader()
                    key = b"r%06d" % i
                    try:
                        await put(ld.group(), key, b"v")
                    except (NotLeader, LeadershipLost):
                        continue
                    acked.append(key)
                    progress.bump()
                    i += 1

            def reload_all(**fields: Path | None) -> None:
                for n in c.nodes:
                    d = n.daemon
                    assert d is not None
                    for name, value in fields.items():
                        setattr(d.cfg, name, value)
                    assert d.reload()

            async def wait_writes(n: int) -> None:
                target = len(acked) + n
                while len(acked) < target:
                    await progress.wait()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                await wait_writes(50)
                reload_all(next_key_file=k2)  # step 1: accept both
                await wait_writes(50)
                reload_all(key_file=k2, next_key_file=None, previous_key_file=k1)  # step 2
                await wait_writes(50)
                reload_all(previous_key_file=None)  # step 3: retire k1
                await wait_writes(50)
                stop.set()
            ld = await c.leader()
            for n in c.nodes:
                await n.group().wait_applied(ld.group().applied_index())
                for key in acked:
                    assert n.group().sm.get(key) is not None, key
