"""Membership through the API: a new daemon added as a learner (from a follower, so the
change is forwarded), writes and linearizable reads through the learner (forwarded /
ReadIndex), promotion, removal; and the TCP listener with an API token."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from raftd.client import Client, Unauthenticated
from raftd.testing.cluster import LocalCluster, free_port, wait_until
from raftd.wire.framing import FrameDecoder, encode_frame
from raftd.wire.pb import api_pb2 as apb
from raftd.wire.pb import kv_pb2 as kpb

pytestmark = pytest.mark.slow


def _cli(*args: str, sock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftd", *args, "--socket", str(sock)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_learner_joins_forwards_and_is_promoted(cluster: LocalCluster) -> None:
    lead = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n is not lead)
    with follower.client() as c:
        c.put("m/before", "1")
        joiner = cluster.add_node()
        members = c.add_learner(joiner.peer_id, [joiner.listen_addr])
        assert any(m.id == joiner.peer_id and not m.voter for m in members)

        def caught_up() -> bool:
            # The leader may change meanwhile on a loaded host: the learner must follow
            # whichever node leads now, as the follower sees it.
            st = joiner.status()
            now = follower.status().leader
            return st.role == "learner" and bool(now) and st.leader == now and st.applied > 0

        def explain() -> str:
            return "\n".join(
                [repr(cluster.statuses()), joiner.log_tail(20)]
                + [n.log_tail(15) for n in cluster.nodes if n is not joiner]
            )

        wait_until(caught_up, 30, what="learner caught up", explain=explain)
        with joiner.client() as lc:
            got = lc.get("m/before")  # linearizable read on a learner (ReadIndex)
            assert got is not None and got.value == b"1"
            r = lc.put("m/via-learner", "2")  # forwarded to the leader
            kv = c.get("m/via-learner")
            assert kv is not None and kv.mod_revision == r.revision
            st = lc.status()[0]
            assert {m.id for m in st.members} >= {lead.peer_id, joiner.peer_id}
        # Promote and remove with the CLI, from the learner itself (forwarded).
        p = _cli("member", "promote", joiner.peer_id, "-o", "json", sock=joiner.socket)
        assert p.returncode == 0, p.stderr
        assert any(m["id"] == joiner.peer_id and m["voter"] for m in json.loads(p.stdout))
        wait_until(lambda: joiner.status().role == "follower", 20, what="promoted")
        p = _cli("member", "remove", joiner.peer_id, "-o", "json", sock=follower.socket)
        assert p.returncode == 0, p.stderr
        members_after = json.loads(p.stdout)
        assert all(m["id"] != joiner.peer_id for m in members_after)
        assert len([m for m in members_after if m["voter"]]) == 3
        c.put("m/after", "3")
    joiner.terminate()


def _write_token(tmp: Path) -> Path:
    p = tmp / "token"
    p.write_text("s3cret-token\n")
    p.chmod(0o600)
    return p


def test_tcp_listener_requires_the_token(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "RAFTD_API_TCP": f"127.0.0.1:{port}",
        "RAFTD_API_TOKEN_FILE": str(_write_token(tmp_path)),
    }
    with LocalCluster(1, env=env) as one:
        addr = f"tcp://127.0.0.1:{port}"
        with Client(addr, token="s3cret-token") as c:
            c.put("tcp/k", "v")
            kv = c.get("tcp/k")
            assert kv is not None and kv.value == b"v"
        with Client(addr, token="wrong") as c, pytest.raises(Unauthenticated):
            c.get("tcp/k")
        # Without auth every request is refused.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            req = apb.Request(id=4, consistency=apb.STALE, range=kpb.RangeRequest(key=b"x"))
            s.sendall(encode_frame(req.SerializeToString()))
            dec = FrameDecoder(1 << 20)
            frames: list[bytes] = []
            while not frames:
                data = s.recv(4096)
                assert data
                frames = dec.feed(data)
            resp = apb.Response.FromString(frames[0])
            assert resp.id == 4 and resp.error.code == apb.Error.UNAUTHENTICATED
        # The unix socket needs no token, and is private to the daemon's user.
        node = one.nodes[0]
        assert (node.socket.stat().st_mode & 0o777) == 0o600
        with node.client() as c:
            assert c.get("tcp/k") is not None


def test_tcp_listener_off_loopback_needs_a_token(tmp_path: Path) -> None:
    cluster = LocalCluster(1, env={"RAFTD_API_TCP": f"0.0.0.0:{free_port()}"})
    try:
        node = cluster.nodes[0]
        node.start(wait=False)
        assert node.proc is not None
        assert node.proc.wait(30) != 0
        assert "needs an API token" in node.log_path.read_text()
    finally:
        cluster.close()


def test_removing_the_leader_moves_leadership_first(tmp_path: Path) -> None:
    """Regression (chaos campaign): ``member remove <leader>`` used to retry until its
    deadline and answer UNAVAILABLE, because the core refuses a leader's own removal and
    the service took the refusal ("... transfer leadership first") for a transfer in
    progress. Now the leader hands over to the most caught-up voter and the request goes
    on to the new leader, like etcd's ``member remove``."""
    with LocalCluster(3) as three:
        lead = three.wait_leader()
        follower = next(n for n in three.nodes if n is not lead)
        with follower.client() as c:
            c.put("r/before", "1")
            p = _cli("member", "remove", lead.peer_id, "-o", "json", sock=follower.socket)
            assert p.returncode == 0, p.stderr
            members = json.loads(p.stdout)
            assert lead.peer_id not in {m["id"] for m in members}
            assert len([m for m in members if m["voter"]]) == 2
            st = c.status()[0]
            assert st.leader not in ("", lead.peer_id)
            c.put("r/after", "2")
            got = c.get("r/before")
            assert got is not None and got.value == b"1"


def test_removing_the_last_voter_is_refused_at_once(tmp_path: Path) -> None:
    """A refusal that no retry can cure is FAILED_PRECONDITION, named, not a timeout."""
    with LocalCluster(1) as one:
        node = one.wait_leader()
        p = _cli("member", "remove", node.peer_id, sock=node.socket)
        assert p.returncode != 0
        assert "no voters" in p.stderr or "itself" in p.stderr, p.stderr
        assert "deadline" not in p.stderr.lower(), p.stderr


def test_concurrent_membership_changes_are_retried_not_internal(tmp_path: Path) -> None:
    """Regression (chaos campaign, seed 7021): a membership change refused because
    another one was in progress came back as INTERNAL ("ApiError: ..."): the service
    raised FAILED_PRECONDITION from inside an except clause. A refusal that a moment
    cures (another change in progress, a transfer, a brand-new leader) is now retried
    until the deadline, so concurrent changes all succeed."""
    import threading

    from raftd.testing.cluster import make_identity

    ids = [make_identity(tmp_path / f"id{i}") for i in range(6)]
    with LocalCluster(1) as one:
        node = one.wait_leader()
        errors: list[BaseException] = []

        def add(pid: str) -> None:
            try:
                with node.client() as c:
                    c.add_learner(pid, [f"/ip4/127.0.0.1/tcp/9/p2p/{pid}"])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=add, args=(pid,)) for pid in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        with node.client() as c:
            learners = {m.id for m in c.members() if not m.voter}
        assert learners == set(ids)
