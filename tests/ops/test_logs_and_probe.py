"""A real ``raftd run`` process: structured log lines parse, the probes (``python -m
raftd.ops.healthcheck`` and the image's bash ``daemon/healthcheck.sh``) track the
daemon, and SIGTERM exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftd.ops import healthcheck
from raftd.testing.launch import daemon_argv, free_port

LEVELS = {"debug", "info", "warning", "error", "critical"}
TEXT_LINE = re.compile(
    r'^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(\w+) logger=(\S+) msg="([^"]*)"'
    r'( exc=".*")?$'
)


def _wait(what: str, fn: object, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    assert callable(fn)
    deadline = time.monotonic() + timeout
    while not fn():
        assert proc.poll() is None, f"daemon exited with {proc.returncode} before {what}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


def _run_daemon(tmp_path: Path, log_format: str) -> tuple[list[str], str]:
    """Start, wait ready (via the probe), SIGTERM, expect exit 0; return stderr lines
    and the metrics address."""
    addr = f"127.0.0.1:{free_port()}"
    err = tmp_path / "stderr.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAFTD_METRICS=addr)
    argv = daemon_argv(
        tmp_path / "data",
        listen="/ip4/127.0.0.1/tcp/0",
        socket=tmp_path / "api.sock",
        namespaces=["/raft/logs"],
        discovery="none",
        extra=["--log-format", log_format],
    )
    with open(err, "wb") as f:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        probe = ["--addr", addr, "-q"]
        _wait("ready", lambda: healthcheck.main([*probe, "--ready"]) == 0, 30, proc)
        # The same probe as the container runs it: a module, configured by RAFTD_METRICS.
        cp = subprocess.run(
            [sys.executable, "-m", "raftd.ops.healthcheck"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.strip().endswith("/healthz: ok")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert healthcheck.main(probe) == 1  # gone: the probe says so
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err.read_text().splitlines(), addr


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_log_lines_parse_and_probe_tracks_daemon(tmp_path: Path, log_format: str) -> None:
    lines, addr = _run_daemon(tmp_path, log_format)
    assert lines, "the daemon logged nothing"
    records: list[tuple[str, str, str]] = []
    for line in lines:
        if log_format == "json":
            obj = json.loads(line)
            assert isinstance(obj, dict), line
            assert {"ts", "level", "logger", "msg"} <= obj.keys(), line
            assert isinstance(obj["ts"], float) and obj["ts"] > 1.6e9, line
            records.append((obj["level"], obj["logger"], obj["msg"]))
        else:
            m = TEXT_LINE.match(line)
            assert m is not None, f"not key=value: {line!r}"
            records.append((m.group(1), m.group(2), m.group(3)))
    for level, logger, _ in records:
        assert level in LEVELS and logger, (level, logger)  # libp2p's records too
    msgs = [msg for _, _, msg in records]
    assert any(f"ops endpoints on http://{addr}" in m for m in msgs), msgs
    assert any("received SIGTERM" in m for m in msgs), msgs
    assert msgs[-1] == "stopped", msgs


def test_probe_url() -> None:
    assert healthcheck.probe_url("0.0.0.0:9420", "/healthz") == "http://127.0.0.1:9420/healthz"
    assert healthcheck.probe_url(":9420", "/readyz") == "http://127.0.0.1:9420/readyz"
    assert healthcheck.probe_url("[::]:1", "/x") == "http://[::1]:1/x"
    assert healthcheck.probe_url("10.0.0.5:9", "/x") == "http://10.0.0.5:9/x"


HEALTHCHECK_SH = Path(__file__).resolve().parents[2] / "daemon" / "healthcheck.sh"


def _bash_probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(HEALTHCHECK_SH), *args], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.slow
def test_bash_probe_tracks_daemon(tmp_path: Path) -> None:
    """The image's HEALTHCHECK script (bash, no Python): healthy while the daemon serves,
    ready once it leads, unhealthy with a reason while its process is stopped (a wedged
    daemon whose kernel still accepts connections) and once it is gone."""
    port = free_port()
    env = dict(os.environ, RAFTD_METRICS=f"0.0.0.0:{port}", RAFTD_HEALTHCHECK_TIMEOUT="1")
    argv = daemon_argv(
        tmp_path / "data",
        listen="/ip4/127.0.0.1/tcp/0",
        socket=tmp_path / "api.sock",
        namespaces=["/raft/probe"],
        discovery="none",
        extra=["--metrics", f"127.0.0.1:{port}"],
    )
    with open(tmp_path / "stderr.log", "wb") as f:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f)
    try:
        _wait("ready", lambda: _bash_probe(env, "--ready").returncode == 0, 30, proc)
        cp = _bash_probe(env)
        assert (cp.returncode, cp.stdout, cp.stderr) == (0, "", "")
        assert _bash_probe(env, "--bogus").returncode == 2

        proc.send_signal(signal.SIGSTOP)
        try:
            cp = _bash_probe(env)
        finally:
            proc.send_signal(signal.SIGCONT)
        assert cp.returncode == 1
        assert cp.stderr.strip() == f"http://0.0.0.0:{port}/healthz: no answer within 1s"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        cp = _bash_probe(env)
        assert cp.returncode == 1
        assert f"cannot connect to 127.0.0.1:{port}" in cp.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
