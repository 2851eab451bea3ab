"""The etcdctl-style CLI, as subprocesses against real daemons: output formats, exit
codes (0 ok, 1 failed, 2 usage, 3 unavailable, 4 indeterminate) and ``raftd dev``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd.cli import parse_txn
from raftd.testing.cluster import LocalCluster, wait_until


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


def raftd(
    *args: str,
    node_socket: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    if node_socket is not None:
        full_env["RAFTD_SOCKET"] = str(node_socket)
    return subprocess.run(
        [sys.executable, "-m", "raftd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
    )


@pytest.mark.slow
def test_kv_commands_and_exit_codes(cluster: LocalCluster) -> None:
    lead = cluster.wait_leader()
    sock = next(n for n in cluster.nodes if n is not lead).socket  # a follower
    r = raftd("put", "cli/a", "hello", node_socket=sock)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    r = raftd("get", "cli/a", node_socket=sock)
    assert (r.returncode, r.stdout) == (0, "hello\n")
    r = raftd("get", "cli/a", "--stale", "-o", "json", node_socket=sock)
    assert json.loads(r.stdout)["value"] == "hello" and json.loads(r.stdout)["version"] == 1
    r = raftd("get", "cli/missing", node_socket=sock)
    assert r.returncode == 1 and "not found" in r.stderr
    # --socket wins over the environment
    r = raftd("get", "cli/a", "--socket", str(sock), node_socket=Path("/nonexistent"))
    assert r.returncode == 0
    r = raftd("cas", "cli/a", "hello", "world", node_socket=sock)
    assert r.returncode == 0
    r = raftd("cas", "cli/a", "hello", "again", node_socket=sock)
    assert r.returncode == 1 and "world" in r.stderr
    r = raftd("cas", "--rev", "cli/new", "0", "n1", node_socket=sock)
    assert r.returncode == 0
    rev = json.loads(raftd("get", "cli/new", "-o", "json", node_socket=sock).stdout)["mod_revision"]
    assert raftd("cas", "--rev", "cli/new", str(rev), "n2", node_socket=sock).returncode == 0
    assert raftd("cas", "--rev", "cli/new", str(rev), "n3", node_socket=sock).returncode == 1
    r = raftd("keys", "cli/", node_socket=sock)
    assert r.stdout.split() == ["cli/a", "cli/new"]
    r = raftd("keys", "cli/", "--values", "-o", "json", node_socket=sock)
    assert [kv["value"] for kv in json.loads(r.stdout)["kvs"]] == ["world", "n2"]
    r = raftd("del", "cli/new", node_socket=sock)
    assert (r.returncode, r.stdout.strip()) == (0, "1")
    assert raftd("del", "cli/new", node_socket=sock).returncode == 1
    # Usage and unavailability.
    assert raftd("put", "only-key", node_socket=sock).returncode == 2
    assert raftd("put", "", "v", node_socket=sock).returncode == 2
    assert raftd("get", "k", "-n", "/raft/nope", node_socket=sock).returncode == 2
    r = raftd("get", "k", node_socket=Path("/nonexistent/raftd.sock"))
    assert r.returncode == 3 and "cannot connect" in r.stderr


@pytest.mark.slow
def test_txn_both_syntaxes(cluster: LocalCluster) -> None:
    sock = cluster.nodes[0].socket
    raftd("put", "t/k", "v1", node_socket=sock)
    simple = 'value("t/k") = "v1"\nversion("t/k") > 0\n\nput t/k v2\nget t/k\n\nget t/k\n'
    r = raftd("txn", node_socket=sock, stdin=simple)
    assert r.returncode == 0 and r.stdout.splitlines() == ["SUCCESS", "OK", "t/k\tv2"]
    doc = {
        "compare": [{"key": "t/k", "target": "value", "op": "=", "value": "v1"}],
        "success": [{"put": {"key": "t/k", "value": "never"}}],
        "failure": [{"get": {"key": "t/k"}}],
    }
    r = raftd("txn", "-o", "json", node_socket=sock, stdin=json.dumps(doc))
    out = json.loads(r.stdout)
    assert r.returncode == 1 and not out["succeeded"]
    assert out["responses"][0]["kvs"][0]["value"] == "v2"
    r = raftd("txn", node_socket=sock, stdin="nonsense(\n")
    assert r.returncode == 2 and "bad transaction" in r.stderr


def test_parse_txn_errors() -> None:
    c, s, f = parse_txn('mod("a") < 5\n\ndel a b\n')
    assert len(c) == 1 and len(s) == 1 and f == []
    with pytest.raises(ValueError):
        parse_txn("put a\n")
    with pytest.raises(ValueError):
        parse_txn('value("a") = "x"\n\nfrobnicate a\n')


@pytest.mark.slow
def test_watch_lease_lock_status_members(cluster: LocalCluster) -> None:
    sock = cluster.nodes[1].socket
    first = json.loads(raftd("put", "w/a", "1", "-o", "json", node_socket=sock).stdout)["revision"]
    raftd("put", "w/b", "2", node_socket=sock)
    raftd("del", "w/a", node_socket=sock)
    r = raftd("watch", "w/", "--rev", str(first), "--count", "3", node_socket=sock)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0] == f"PUT {first} w/a 1" and lines[2] == f"DELETE {first + 2} w/a"
    r = raftd("watch", "w/", "--rev", str(first), "--count", "1", "-o", "json", node_socket=sock)
    assert json.loads(r.stdout)["kv"]["key"] == "w/a"
    # leases
    lid = raftd("lease", "grant", "60", node_socket=sock).stdout.strip()
    assert lid.isdigit()
    assert raftd("put", "--lease", lid, "w/leased", "x", node_socket=sock).returncode == 0
    r = raftd("lease", "keepalive", "--once", lid, "-o", "json", node_socket=sock)
    assert json.loads(r.stdout)["ttl"] == 60
    r = raftd("lease", "ttl", "--keys", lid, node_socket=sock)
    assert "w/leased" in r.stdout
    assert lid in raftd("lease", "list", node_socket=sock).stdout
    r = raftd("lease", "revoke", lid, node_socket=sock)
    assert "1 keys deleted" in r.stdout
    assert raftd("lease", "keepalive", "--once", lid, node_socket=sock).returncode == 1
    # lock around a command: its exit status comes through
    r = raftd(
        "lock",
        "--socket",
        str(sock),
        "clilock",
        "--",
        sys.executable,
        "-c",
        "import sys; print('inside'); sys.exit(7)",
    )
    assert r.returncode == 7 and "inside" in r.stdout
    # status / members
    r = raftd("status", "-o", "json", node_socket=sock)
    (st,) = json.loads(r.stdout)
    assert set(st) >= {"id", "namespace", "role", "term", "leader", "commit", "applied", "members"}
    assert len(st["members"]) == 3 and all(m["addrs"] and m["voter"] for m in st["members"])
    r = raftd("members", node_socket=sock)
    assert r.returncode == 0 and r.stdout.count("voter") == 3 and "*" in r.stdout
    r = raftd("member", "add-learner", "bogus", node_socket=sock)
    assert r.returncode == 2
    r = raftd("transfer", node_socket=sock)
    assert r.returncode == 0 and "leader is now" in r.stdout


@pytest.mark.slow
def test_dev_starts_a_cluster_and_cleans_up(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftd", "dev", "--nodes", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(lines)
        assert "raftd put --socket" in text, text
        sock = text.split("raftd put --socket ")[1].split()[0]
        r = raftd("put", "--socket", sock, "hello", "world")
        assert r.returncode == 0, r.stderr
        base = Path(sock).parent.parent
        assert base.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        wait_until(lambda: not base.exists(), 10, what="cleanup")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
