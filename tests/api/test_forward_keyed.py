"""Leader forwarding with the shared-key envelope: in-process daemons (real libp2p and
LevelDB) with ``key_file``; writes sent to a follower's API socket reach the leader in
Raft PROP messages over the sealed Raft transport, an admin operation over a sealed
``/raftd/1<ns>/cmd`` stream; a non-member's stream is refused; a stream from a node with
another key is refused."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from raftd.client import open_client
from raftd.runtime.forward import EnvelopeSecurity, Forwarder, ForwardError
from raftd.security.envelope import make_envelope
from raftd.security.keys import KeyRing, load_key_file
from raftd.testing.inproc import NS, cluster
from raftd.transport.host import load_or_create_identity, open_host
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb


def _key(path: Path) -> Path:
    path.write_text(os.urandom(32).hex() + "\n")
    path.chmod(0o600)
    return path


async def test_forwarding_over_sealed_cmd_streams(tmp_path: Path) -> None:
    k = _key(tmp_path / "k")
    async with cluster(tmp_path, overrides=lambda i: {"key_file": k}) as (c, _):
        with trio.fail_after(60):
            leader = await c.leader()
            follower = c.other(leader)
            assert follower.daemon is not None
            rt = follower.daemon.api
            assert rt is not None
            assert isinstance(rt.security, EnvelopeSecurity)
            assert rt.security.envelope.encrypted
            sock = follower.socket
            async with open_client(sock, namespace=NS) as cl:
                r = await cl.put("sealed", "yes")
                kv = await cl.get("sealed")
                assert kv is not None and kv.mod_revision == r.revision
                lease = await cl.lease_grant(30)  # a write
                assert await cl.lease_keepalive(lease.id) == 30  # a leader operation
            # The two writes went through Raft itself, the admin operation by command.
            assert follower.group().stats.proposals_forwarded >= 2
            assert rt.forwarders[NS].stats["calls"] >= 1
            assert leader.daemon is not None
            assert leader.daemon.api is not None
            assert leader.daemon.api.handlers[NS].stats["requests"] >= 1

            # A host that is not a member (and holds another key) is refused.
            other = _key(tmp_path / "other")
            ring = KeyRing(load_key_file(other))
            kp = load_or_create_identity(tmp_path / "outsider")
            async with open_host(kp, ["/ip4/127.0.0.1/tcp/0"]) as host, trio.open_nursery() as n:
                fwd = Forwarder(
                    host,
                    NS,
                    local_peer=str(host.get_id()),
                    peer_addrs=lambda pid: [f"/ip4/127.0.0.1/tcp/{leader.port}"],
                    security=EnvelopeSecurity(make_envelope(ring)),
                )
                await n.start(fwd.run)
                req = apb.Request(put=kpb.PutRequest(key=b"intruder", value=b"x"))
                try:
                    with trio.fail_after(10):
                        await fwd.call(leader.peer_id, req)
                    raise AssertionError("a non-member's forward was served")
                except ForwardError:
                    pass
                n.cancel_scope.cancel()
            assert leader.group().sm.get(b"intruder") is None
            assert leader.daemon.api.handlers[NS].stats["refused"] >= 1
