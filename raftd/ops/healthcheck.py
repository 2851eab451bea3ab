"""``python -m raftd.ops.healthcheck``: probe the local daemon's ops endpoint.

For scripts and probes that have Python at hand. Standard library only; imports nothing
else from raftd. The container image's health check is ``daemon/healthcheck.sh``, the
same probe in bash, so that a check every few seconds starts no Python interpreter.

The address comes from ``--addr``, else ``RAFTD_METRICS`` (``HOST:PORT``, as the daemon
reads it; a wildcard host is probed on loopback), else ``127.0.0.1:9420``. The probe
GETs ``/healthz`` (``--ready``: ``/readyz``) and exits 0 on ``200``, 1 otherwise, with
one line on stderr saying why (Docker shows it in ``docker inspect``).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_ADDR = "127.0.0.1:9420"


def probe_url(addr: str, path: str) -> str:
    """The URL to probe for a daemon listening on ``addr`` (``HOST:PORT``)."""
    host, _, port = addr.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"http://{host}:{port}{path}"


def check(url: str, timeout: float) -> tuple[bool, str]:
    """(healthy, one-line reason)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status = int(resp.status)
            body = resp.read(4096)
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}: {exc.read(512).decode(errors='replace').strip()}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"
    if status != 200:
        return False, f"{url}: HTTP {status}"
    return True, f"{url}: {body[:200].decode(errors='replace').strip()}"


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    ap = argparse.ArgumentParser(prog="python -m raftd.ops.healthcheck", description=__doc__)
    ap.add_argument("--addr", help="HOST:PORT of the ops listener (default: $RAFTD_METRICS)")
    ap.add_argument("--ready", action="store_true", help="probe /readyz instead of /healthz")
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    ap.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    args = ap.parse_args(argv)
    addr = args.addr or env.get("RAFTD_METRICS") or DEFAULT_ADDR
    ok, why = check(probe_url(addr, "/readyz" if args.ready else "/healthz"), args.timeout)
    if not ok or not args.quiet:
        print(why, file=sys.stderr if not ok else sys.stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
