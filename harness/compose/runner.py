"""``docker compose`` without Docker: the services of a compose file as processes in
network namespaces (:class:`harness.netns.Topology`), one namespace per networked
service on one bridge (the compose network), named volumes as directories.

Each service runs exactly the image's entrypoint and environment combined with the
service's (see :class:`harness.compose.specs.Container`), under ``env -i`` so nothing of
the test process leaks in; a ``network_mode: none`` service gets an empty network
namespace of its own (``unshare --net``). Verbs follow compose: :meth:`ComposeRunner.up`,
:meth:`~ComposeRunner.stop`, :meth:`~ComposeRunner.restart`, :meth:`~ComposeRunner.down`
(volumes kept); :meth:`~ComposeRunner.healthy` runs the service's healthcheck command in
its namespace.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TypeVar

from harness.compose.specs import Compose, Container, Stage, healthcheck_argv
from harness.netns import Host, Topology
from raftd.testing.launch import wait_until

T = TypeVar("T")

# The image's Python environment: where `raftd` and `python` are found.
VENV_BIN = str(Path(sys.executable).parent)
CONTAINER_PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _duration(text: str | None, default: float) -> float:
    if not text:
        return default
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


class ComposeRunner:
    """Run ``compose``'s services from ``image`` (the Dockerfile's final stage) in
    ``topology`` (one host per networked service, labelled with the service name)."""

    def __init__(self, compose: Compose, image: Stage, topology: Topology, workdir: Path):
        self.compose = compose
        self.topology = topology
        self.workdir = workdir
        self.containers = {
            name: Container(image, svc, compose.path.parent, workdir / "volumes", CONTAINER_PATH)
            for name, svc in compose.services.items()
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.exit_codes: dict[str, list[int]] = {}
        (workdir / "logs").mkdir(parents=True, exist_ok=True)

    # -- helpers --------------------------------------------------------------------------
    def host(self, name: str) -> Host:
        return self.topology[name]

    def networked(self, name: str) -> bool:
        return bool(self.containers[name].service.networks)

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def log_lines(self, name: str) -> list[str]:
        try:
            return self.log_path(name).read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def log_tail(self, name: str, n: int = 40) -> str:
        return f"--- {name} (last {n} lines)\n" + "\n".join(self.log_lines(name)[-n:])

    def volume(self, name: str) -> Path:
        return self.workdir / "volumes" / name

    def running(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    # -- compose verbs ----------------------------------------------------------------------
    def start(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        """Start one service (``docker compose start``); its output goes to its log."""
        if self.running(name):
            raise RuntimeError(f"{name} is already running")
        c = self.containers[name]
        c.prepare()
        argv = c.with_env(c.argv, extra_env)
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - handed to the child
        try:
            log.write(f"--- start {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            if self.networked(name):
                proc = self.host(name).popen(argv, stdout=log, stderr=log, cwd=c.cwd)
            else:  # network_mode: none: an empty network namespace of its own
                proc = subprocess.Popen(
                    ["unshare", "--net", *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=c.cwd,
                    start_new_session=True,
                )
        finally:
            log.close()
        self.procs[name] = proc

    def up(self, names: list[str] | None = None) -> None:
        """Start the services (default: every networked one) all at once."""
        for name in names or [s.name for s in self.compose.nodes]:
            self.start(name)

    def _signal(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{name} is not running")
        sig = getattr(signal, str(self.containers[name].service.raw.get("stop_signal", "SIGTERM")))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def _reap(self, name: str) -> int:
        proc = self.procs[name]
        grace = _duration(self.containers[name].service.raw.get("stop_grace_period"), 10.0)
        try:
            rc = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait(timeout=10)
        self.exit_codes.setdefault(name, []).append(rc)
        return rc

    def stop(self, name: str) -> int:
        """``docker compose stop``: the service's stop signal, then SIGKILL after its
        stop grace period. Returns the exit status (negative: killed by a signal)."""
        self._signal(name)
        return self._reap(name)

    def restart(self, name: str) -> int:
        """``docker compose restart``: stop, then start again on the same volumes."""
        rc = self.stop(name)
        self.start(name)
        return rc

    def down(self) -> dict[str, int]:
        """``docker compose down`` (volumes kept): signal every running service at once,
        then reap each. Returns each exit status."""
        names = [n for n in self.procs if self.running(n)]
        for n in names:
            self._signal(n)
        return {n: self._reap(n) for n in names}

    # -- probes ---------------------------------------------------------------------------
    def exec(
        self, name: str, argv: list[str], timeout: float = 20.0
    ) -> subprocess.CompletedProcess[str]:
        """``docker compose exec``: ``argv`` in the service's namespace and environment."""
        c = self.containers[name]
        return self.host(name).run(c.exec_argv(argv), check=False, timeout=timeout)

    def healthy(self, name: str) -> bool:
        """Run the service's healthcheck command once (exit 0 = healthy)."""
        test = self.containers[name].service.healthcheck
        assert test, f"{name} has no healthcheck"
        if not self.running(name):
            raise AssertionError(
                f"{name} exited: {self.procs[name].returncode}\n{self.log_tail(name)}"
            )
        return self.exec(name, healthcheck_argv(test), timeout=10).returncode == 0

    def wait_healthy(self, names: list[str], timeout: float) -> None:
        for n in names:
            wait_until(
                functools.partial(self.healthy, n),
                timeout,
                interval=0.1,
                what=f"{n} healthy",
                explain=functools.partial(self.log_tail, n),
            )

    def http_get(self, name: str, path: str, port: int = 9420) -> tuple[int, bytes]:
        """GET ``path`` from the service's ops port, from inside its namespace."""
        s = self.host(name).connect("127.0.0.1", port, timeout=5.0)
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
            buf = b""
            while chunk := s.recv(65536):
                buf += chunk
        finally:
            s.close()
        head, _, body = buf.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    def readyz(self, name: str) -> tuple[int, dict[str, object]]:
        status, body = self.http_get(name, "/readyz")
        parsed = json.loads(body)
        assert isinstance(parsed, dict)
        return status, parsed
