"""What every harness that runs real daemons shares: the ``raftd run`` command line, a
free port, and waiting on a condition with a deadline.

:class:`raftd.testing.cluster.LocalCluster` (and so ``raftd dev``) uses these, as do the
harnesses of the repository (``harness/``: chaos, fleets in network namespaces, benchmarks).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["daemon_argv", "free_port", "wait_until"]

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    fn: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
    explain: Callable[[], str] | None = None,
) -> T:
    """Poll ``fn`` until it returns something truthy (returned); TimeoutError after
    ``timeout`` seconds, naming ``what``, with ``explain()`` appended when given.
    Exceptions from ``fn`` count as "not yet" (the last one is chained)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            extra = f"\n{explain()}" if explain is not None else ""
            raise TimeoutError(f"{what} not reached within {timeout:.1f}s{extra}") from last
        time.sleep(interval)


def daemon_argv(
    data_dir: Path | str,
    *,
    listen: str,
    python: str = sys.executable,
    socket: Path | str | None = None,
    preset: str | None = None,
    namespaces: Sequence[str] = (),
    etcd_listen: str | None = None,
    discovery: str | None = None,
    peers: Sequence[str] = (),
    key_file: Path | str | None = None,
    config: Path | str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of one daemon: ``python -m raftd run --data-dir D --listen L``,
    then each option that is given, then ``extra`` as is. ``discovery`` is the flag's
    value (``"none"`` turns discovery off); ``peers`` are multiaddrs with ``/p2p/<id>``."""
    argv = [python, "-m", "raftd", "run", "--data-dir", str(data_dir), "--listen", listen]
    if socket is not None:
        argv += ["--socket", str(socket)]
    if preset is not None:
        argv += ["--preset", preset]
    for ns in namespaces:
        argv += ["--namespace", ns]
    if etcd_listen is not None:
        argv += ["--etcd-listen", etcd_listen]
    if discovery is not None:
        argv += ["--discovery", discovery]
    for peer in peers:
        argv += ["--peer", peer]
    if key_file is not None:
        argv += ["--key-file", str(key_file)]
    if config is not None:
        argv += ["--config", str(config)]
    return argv + list(extra)
