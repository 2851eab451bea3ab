"""A Docker engine for scripts/docker-test: found, or installed and started, and stopped.

:func:`engine` yields a usable :class:`Docker` and, when it had to start ``dockerd``
itself, stops it on exit. An engine already running is used as it is and left running.

An engine started here leaves host networking alone: ``--iptables=false`` (no NAT, no
FORWARD policy), ``--ip-forward=false`` and ``--bridge=none`` (no ``docker0``). The
compose networks are ``internal`` (no route out), which is all these flags allow and all
the tests need. The bridge netfilter and forwarding sysctls found before the start are
written back after the stop whatever the engine did to them, so tests that build their
own bridges in network namespaces (tests/netns) see the host as they would without
Docker.

When Docker cannot be had (not root and no engine, no apt-get, the engine does not
start), :class:`DockerUnavailable` says why; the caller decides whether that is a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

APT_PACKAGES = ("docker.io", "docker-compose", "debootstrap")
# Debian's client first: it builds with BuildKit (RUN --mount, --secret) without a buildx
# plugin; a newer client earlier on PATH may lack the plugin.
CLIENTS = ("/usr/bin/docker", "docker")
HOST_SYSCTLS = (
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
    "/proc/sys/net/bridge/bridge-nf-call-arptables",
    "/proc/sys/net/ipv4/ip_forward",
)
DOCKERD_FLAGS = (
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--bridge=none",
)
START_DEADLINE = 60.0
STOP_DEADLINE = 30.0


class DockerUnavailable(RuntimeError):
    """Docker cannot be installed or started on this machine (the message says why)."""


def log(msg: str) -> None:
    print(f"docker-test: {msg}", flush=True)


@dataclass(frozen=True)
class Docker:
    """The client commands of a running engine."""

    docker: str  # client binary
    compose: tuple[str, ...]  # docker-compose (1.x) or `docker compose` (v2)

    def run(
        self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS``; raises :class:`subprocess.CalledProcessError` (with the
        output) when ``check`` and the exit status is not 0."""
        cp = subprocess.run(
            [self.docker, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and cp.returncode != 0:
            raise subprocess.CalledProcessError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp


def _client() -> str | None:
    for c in CLIENTS:
        path = c if c.startswith("/") else shutil.which(c)
        if path and os.access(path, os.X_OK):
            return path
    return None


def _compose(client: str) -> tuple[str, ...] | None:
    legacy = shutil.which("docker-compose")
    if legacy:
        return (legacy,)
    cp = subprocess.run([client, "compose", "version"], capture_output=True, text=True, check=False)
    return (client, "compose") if cp.returncode == 0 else None


def _engine_answers(client: str) -> bool:
    try:
        cp = subprocess.run(
            [client, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return cp.returncode == 0 and bool(cp.stdout.strip())


def install_packages() -> None:
    """apt-get install whatever of :data:`APT_PACKAGES` is missing (root only)."""
    missing = [
        pkg
        for pkg, cmd in zip(APT_PACKAGES, ("dockerd", "docker-compose", "debootstrap"), strict=True)
        if shutil.which(cmd) is None and not Path("/usr/sbin", cmd).exists()
    ]
    if not Path("/usr/bin/docker").exists() and "docker.io" not in missing:
        missing.insert(0, "docker.io")
    if not missing:
        return
    if os.geteuid() != 0:
        raise DockerUnavailable(f"{' '.join(missing)} missing and not root to apt-get install")
    if shutil.which("apt-get") is None:
        raise DockerUnavailable(f"{' '.join(missing)} missing and no apt-get to install them")
    log(f"apt-get install {' '.join(missing)}")
    t0 = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        cp = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if cp.returncode != 0:
            tail = (cp.stdout + cp.stderr).strip().splitlines()[-5:]
            raise DockerUnavailable(f"{' '.join(argv)} failed: {' | '.join(tail)}")
    log(f"apt-get install: {time.monotonic() - t0:.0f}s")


def _read_sysctls() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in HOST_SYSCTLS:
        try:
            out[p] = Path(p).read_text().strip()
        except OSError:
            continue
    return out


def _restore_sysctls(saved: dict[str, str]) -> None:
    for p, value in saved.items():
        try:
            if Path(p).read_text().strip() != value:
                log(f"restoring {p} = {value}")
                Path(p).write_text(value + "\n")
        except OSError as exc:
            log(f"could not restore {p} = {value}: {exc}")


def _forward_policy() -> str | None:
    if shutil.which("iptables") is None:
        return None
    cp = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False)
    for line in cp.stdout.splitlines():
        if line.startswith("-P FORWARD "):
            return line.split()[2]
    return None


@contextmanager
def _dockerd(client: str, log_path: Path) -> Iterator[None]:
    """Start dockerd with :data:`DOCKERD_FLAGS`; stop it and restore the host after."""
    saved = _read_sysctls()
    policy = _forward_policy()
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    log(f"starting {dockerd} {' '.join(DOCKERD_FLAGS)} (log: {log_path})")
    with log_path.open("ab") as out:
        proc = subprocess.Popen(
            [dockerd, *DOCKERD_FLAGS],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while not _engine_answers(client):
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise DockerUnavailable(
                    f"dockerd exited with status {proc.returncode}: {' | '.join(tail)}"
                )
            if time.monotonic() > deadline:
                raise DockerUnavailable(f"dockerd did not answer within {START_DEADLINE:.0f}s")
            time.sleep(0.5)
        yield
    finally:
        if proc.poll() is None:
            log(f"stopping dockerd (pid {proc.pid})")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                log(f"dockerd still running after {STOP_DEADLINE:.0f}s: SIGKILL")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        _restore_sysctls(saved)
        if policy is not None and _forward_policy() != policy:
            log(f"restoring iptables FORWARD policy {policy}")
            subprocess.run(["iptables", "-P", "FORWARD", policy], check=False)


@contextmanager
def engine(log_path: Path) -> Iterator[Docker]:
    """A running engine (see the module docstring); raises :class:`DockerUnavailable`."""
    client = _client()
    if client is not None and _engine_answers(client):
        compose = _compose(client)
        if compose is None:
            install_packages()
            compose = _compose(client)
        if compose is None:
            raise DockerUnavailable("no docker-compose and no `docker compose` plugin")
        log(f"using the running engine ({client})")
        yield Docker(client, compose)
        return
    install_packages()
    client = _client()
    if client is None:
        raise DockerUnavailable("no docker client after installing docker.io")
    compose = _compose(client)
    if compose is None:
        raise DockerUnavailable("no docker-compose after installing it")
    if os.geteuid() != 0:
        raise DockerUnavailable(
            f"no engine answers and not root to start dockerd (euid {os.geteuid()})"
        )
    with _dockerd(client, log_path):
        yield Docker(client, compose)
