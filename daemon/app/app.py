"""Example application for the compose files: periodic writes and reads through the
local raftd's API socket, with the Python client (``raftd.client``).

It talks only to its own node's daemon (the socket in the shared ``nodeN-sock``
volume); the daemon forwards writes to the leader. Every ``APP_INTERVAL`` seconds it
writes ``apps/<APP_NAME>/counter`` = n, reads it back (a linearizable read), and logs
one JSON line. While the cluster is unavailable (no leader yet, a restart), requests
fail and it retries; a write whose outcome is unknown (``indeterminate``) is logged as
such (the client's de-duplication makes its retry safe).

Environment: ``RAFTD_SOCKET``, ``RAFTD_NAMESPACE`` (read by the client), ``APP_NAME``
(default ``app``), ``APP_INTERVAL`` seconds (default 1), ``APP_ITERATIONS`` (stop after
this many successful rounds; 0 = run until SIGTERM). Exit status 0 on SIGTERM or after
``APP_ITERATIONS``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

from raftd.client import Client, RaftdError


def log(level: str, msg: str, **fields: Any) -> None:
    rec = {"ts": time.time(), "level": level, "logger": "app", "msg": msg, **fields}
    print(json.dumps(rec), flush=True)


def main() -> int:
    name = os.environ.get("APP_NAME", "app")
    interval = float(os.environ.get("APP_INTERVAL", "1.0"))
    iterations = int(os.environ.get("APP_ITERATIONS", "0"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    key = f"apps/{name}/counter"
    done = 0
    with Client(timeout=5.0) as client:
        log("info", "starting", socket=client.address, namespace=client.namespace, key=key)
        kv = None
        while not stop.is_set():
            try:  # resume the counter where an earlier run left it
                kv = client.get(key)
                break
            except RaftdError as exc:
                log("warning", "waiting for raftd", error=str(exc))
                stop.wait(interval)
        n = int(kv.value) if kv is not None else 0
        while not stop.is_set():
            try:
                put = client.put(key, str(n + 1))
                got = client.get(key)
            except RaftdError as exc:
                log(
                    "warning",
                    "request failed; will retry",
                    error=str(exc),
                    indeterminate=exc.indeterminate,
                )
            else:
                n += 1
                value = got.value.decode() if got is not None else None
                if value != str(n):
                    log("error", "read did not see our write", key=key, wrote=n, read=value)
                    return 1
                done += 1
                log("info", "wrote and read back", key=key, value=n, revision=put.revision)
                if iterations and done >= iterations:
                    break
            stop.wait(interval)
    log("info", "stopped", rounds=done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
