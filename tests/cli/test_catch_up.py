"""``raftd catch-up`` against real daemon processes (raftd.testing.cluster).

A follower is stopped, 300 keys are written, and the follower is restarted while the
two other nodes are frozen (SIGSTOP). It then cannot learn anything, nor how far behind
it is, so ``raftd catch-up`` (started against it) must keep waiting; a version that
trusted the node's own commit index would return at once. Once they are resumed,
``catch-up`` exits 0 and the follower's stale read of the last key returns its value at
once. Piped, it prints one line and no progress bar. Also: ``-o json``, and the timeout
(exit 3, saying what it waited for).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from raftd.testing.cluster import LocalCluster

pytestmark = pytest.mark.slow

KEYS = 300


def raftd(*args: str) -> list[str]:
    return [sys.executable, "-m", "raftd", *args]


def test_catch_up_waits_until_the_restarted_follower_has_every_write() -> None:
    with LocalCluster(3) as cluster:
        leader = cluster.wait_leader()
        follower, other = (n for n in cluster.nodes if n is not leader)
        assert follower.terminate() == 0
        with leader.client() as c:
            for i in range(KEYS):
                c.put(f"cu/{i:03d}", f"value-{i}")
        last_key, last_value = f"cu/{KEYS - 1:03d}".encode(), f"value-{KEYS - 1}".encode()

        for n in (leader, other):
            n.stop_signal(signal.SIGSTOP)
        frozen = True
        proc = None
        try:
            follower.start()  # its API socket answers; it cannot reach anyone
            proc = subprocess.Popen(
                raftd("catch-up", "--socket", str(follower.socket), "--timeout", "120"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                env=dict(os.environ, COLUMNS="80"),
            )
            # Nothing can tell the follower how far behind it is: catch-up must not end.
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
            with follower.client() as c:
                assert c.get(last_key, stale=True) is None  # it really is behind
            for n in (leader, other):
                n.stop_signal(signal.SIGCONT)
            frozen = False
            out, err = proc.communicate(timeout=120)
        finally:
            if frozen:
                for n in (leader, other):
                    n.stop_signal(signal.SIGCONT)
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, (out, err, follower.log_tail())
        assert err == ""  # piped: no progress bar
        lines = out.splitlines()
        assert len(lines) == 1 and lines[0].startswith("caught up: /raft/default applied"), out

        # Caught up means caught up now: no waiting before this stale read.
        with follower.client() as c:
            kv = c.get(last_key, stale=True)
            assert kv is not None and kv.value == last_value
            assert len(c.get_prefix("cu/", stale=True).kvs) == KEYS

        # -o json: one object; --within accepts a lag.
        r = subprocess.run(
            raftd("catch-up", "--socket", str(follower.socket), "-o", "json", "--within", "5"),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert r.returncode == 0 and r.stderr == "", r.stderr
        report = json.loads(r.stdout)
        assert report["caught_up"] is True and report["namespace"] == "/raft/default"
        assert report["behind"] <= 5 and report["leader_commit"] > KEYS
        assert report["applied"] + 5 >= report["leader_commit"]

        # No quorum: it gives up at its timeout, saying what it waited for.
        for n in (leader, other):
            n.stop_signal(signal.SIGSTOP)
        try:
            r = subprocess.run(
                raftd("catch-up", "--socket", str(follower.socket), "--timeout", "2"),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            for n in (leader, other):
                n.stop_signal(signal.SIGCONT)
        assert r.returncode == 3, (r.stdout, r.stderr)
        assert r.stdout == ""
        assert "not caught up within 2s" in r.stderr
        assert "leader's commit index" in r.stderr


def test_catch_up_without_a_daemon_times_out(tmp_path: Path) -> None:
    r = subprocess.run(
        raftd("catch-up", "--socket", f"{tmp_path}/none.sock", "--timeout", "1", "-o", "json"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 3, r.stderr
    assert json.loads(r.stdout)["caught_up"] is False
    assert "never obtained" in r.stderr and "cannot connect" in r.stderr
