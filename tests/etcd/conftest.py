"""Fixtures for the etcd v3 API tests: real ``raftd run`` processes serving
``--etcd-listen``, driven by the real ``etcdctl`` (Debian's etcd-client, 3.4).

Without etcdctl (or without PyPI to install the Python etcd client into a virtualenv of
its own) the tests that need it skip, saying so; under ``RAFTD_REQUIRE_ETCD_CLIENTS=1``
(CI) they fail instead.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from raftd.testing.cluster import LocalCluster

REQUIRE_ENV = "RAFTD_REQUIRE_ETCD_CLIENTS"
#: The PyPI etcd client tested, and what it needs (it predates protobuf 4 and tenacity 7).
ETCD3_PINS = ("etcd3==0.12.0", "protobuf<4", "tenacity<7")


def _unavailable(msg: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{msg}; {REQUIRE_ENV}=1 requires it")
    pytest.skip(msg)


def etcd3_python() -> str:
    """A Python with the PyPI ``etcd3`` client, in a virtualenv of its own (built once
    under ~/.cache/raftd), or skip (fail under RAFTD_REQUIRE_ETCD_CLIENTS=1)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raftd"
    venv = base / (
        "etcd3-venv-" + "-".join(p.replace("=", "").replace("<", "lt") for p in ETCD3_PINS)
    )
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if not marker.exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
            p = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", *ETCD3_PINS],
                capture_output=True,
                text=True,
                timeout=300,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            _unavailable(f"cannot build the etcd3 virtualenv: {exc}")
        if p.returncode != 0:
            _unavailable(f"pip install {' '.join(ETCD3_PINS)} failed: {p.stderr[-500:]}")
        marker.write_text("ok\n")
    return str(python)


def etcdctl_path() -> str:
    """The etcdctl binary, or skip (fail under RAFTD_REQUIRE_ETCDCTL=1)."""
    path = shutil.which("etcdctl")
    if path is None:
        _unavailable("etcdctl not found: apt-get install etcd-client (for the etcd API tests)")
        raise AssertionError("unreachable")
    return path


class Etcdctl:
    """Runs ``etcdctl`` (API v3) against some endpoints."""

    def __init__(self, binary: str, endpoints: Sequence[str], extra: Sequence[str] = ()) -> None:
        self.binary = binary
        self.endpoints = list(endpoints)
        self.extra = list(extra)

    def argv(self, *args: str) -> list[str]:
        return [
            self.binary,
            "--endpoints",
            ",".join(self.endpoints),
            "--dial-timeout=5s",
            "--command-timeout=15s",
            *self.extra,
            *args,
        ]

    @staticmethod
    def env() -> dict[str, str]:
        return dict(os.environ, ETCDCTL_API="3")

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and p.returncode != 0:
            raise AssertionError(
                f"etcdctl {' '.join(args)} exited {p.returncode}\n"
                f"stdout: {p.stdout}\nstderr: {p.stderr}"
            )
        return p

    def out(self, *args: str, input: str | None = None) -> str:
        return self.run(*args, input=input).stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.out(*args, "-w", "json"))

    def fails(self, *args: str) -> str:
        """Run a command that must fail; return its stderr."""
        p = self.run(*args, check=False)
        assert p.returncode != 0, f"etcdctl {' '.join(args)} succeeded: {p.stdout}"
        return p.stderr

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            start_new_session=True,  # its own process group: stop() ends its children too
        )


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


@pytest.fixture(scope="module")
def etcd_cluster() -> Iterator[LocalCluster]:
    """A 3-node cluster with an etcd endpoint on every node, shared by a module's tests."""
    etcdctl_path()
    with LocalCluster(3, etcd=True) as c:
        yield c
