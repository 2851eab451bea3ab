"""Leases (``raftd lease ...``) and the lock built on them (``raftd lock``)."""

from __future__ import annotations

import sys

import click

from raftd.cli import base


@base.main.group("lease")
def lease_group() -> None:
    """Leases: keys attached to a lease are deleted when it expires or is revoked."""


@lease_group.command("grant")
@click.argument("ttl", type=int)
@base.client_options
def lease_grant_cmd(opts: base.Ctx, ttl: int) -> int:
    """Grant a lease of TTL seconds; prints its id (decimal)."""
    with opts.client() as c:
        lease = c.lease_grant(ttl)
    base.emit(opts, {"id": lease.id, "ttl": lease.ttl}, str(lease.id))
    return base.EXIT_OK


@lease_group.command("keepalive")
@click.argument("lease_id", type=int)
@click.option("--once", is_flag=True, help="Refresh once and exit.")
@base.client_options
def lease_keepalive_cmd(opts: base.Ctx, lease_id: int, once: bool) -> int:
    """Keep LEASE_ID alive until interrupted (exit 1 when it is gone)."""
    import time

    from raftd.client import NotFound, RaftdError

    with opts.client() as c:
        while True:
            try:
                ttl = c.lease_keepalive(lease_id)
            except NotFound:
                click.echo(f"raftd: lease {lease_id} expired or revoked", err=True)
                return base.EXIT_FAILED
            except RaftdError as exc:
                if once:
                    raise
                click.echo(f"raftd: keepalive failed ({exc}); retrying", err=True)
                ttl = 3
            else:
                base.emit(opts, {"id": lease_id, "ttl": ttl}, f"lease {lease_id} ttl {ttl}")
                if once:
                    return base.EXIT_OK
            try:
                time.sleep(max(0.2, ttl / 3))
            except KeyboardInterrupt:
                return base.EXIT_OK


@lease_group.command("revoke")
@click.argument("lease_id", type=int)
@base.client_options
def lease_revoke_cmd(opts: base.Ctx, lease_id: int) -> int:
    """Revoke LEASE_ID, deleting its keys; prints how many."""
    with opts.client() as c:
        n = c.lease_revoke(lease_id)
    base.emit(opts, {"deleted": n}, f"revoked; {n} keys deleted")
    return base.EXIT_OK


@lease_group.command("ttl")
@click.argument("lease_id", type=int)
@click.option("--keys", is_flag=True, help="List the attached keys.")
@base.client_options
def lease_ttl_cmd(opts: base.Ctx, lease_id: int, keys: bool) -> int:
    """Show the seconds left on LEASE_ID (by the leader's clock)."""
    with opts.client() as c:
        t = c.lease_ttl(lease_id, keys=keys)
    base.emit(
        opts,
        {
            "id": t.id,
            "ttl": t.ttl,
            "granted_ttl": t.granted_ttl,
            "keys": [base.to_text(k) for k in t.keys],
        },
        f"lease {t.id}: {t.ttl}s left of {t.granted_ttl}s"
        + "".join(f"\n  {base.to_text(k)}" for k in t.keys),
    )
    return base.EXIT_OK


@lease_group.command("list")
@base.client_options
def lease_list_cmd(opts: base.Ctx) -> int:
    """List leases (id, granted TTL, number of keys)."""
    with opts.client() as c:
        ls = c.leases()
    base.emit(
        opts,
        [{"id": x.id, "granted_ttl": x.granted_ttl, "keys": x.keys} for x in ls],
        "\n".join(f"{x.id}\tttl={x.granted_ttl}\tkeys={x.keys}" for x in ls) or "(no leases)",
    )
    return base.EXIT_OK


@base.main.command("lock", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--ttl", type=int, default=10, show_default=True, help="Session lease TTL (s).")
@click.option("--wait", "wait_s", type=float, help="Give up after this many seconds (exit 1).")
@base.client_options
def lock_cmd(
    opts: base.Ctx, name: str, command: tuple[str, ...], ttl: int, wait_s: float | None
) -> int:
    """Acquire the lock NAME; run COMMAND while holding it (after --), or hold it until
    interrupted. Exit status: COMMAND's, or 1 if the lock was not acquired in time.

    The lock lives on a lease kept alive by this process: if the process dies, the lock
    is released after the lease's TTL.
    """
    import signal
    import subprocess
    import threading

    from raftd.client.concurrency import Lock

    with opts.client() as c:
        lock = Lock(c, base.to_bytes(name), ttl=ttl)
        if not lock.acquire(timeout=wait_s):
            click.echo(f"raftd: lock {name!r} not acquired within {wait_s}s", err=True)
            lock.release()
            return base.EXIT_FAILED
        try:
            if opts.json:
                base.emit(opts, {"key": base.to_text(lock.key), "revision": lock.revision})
            else:
                click.echo(base.to_text(lock.key))
            sys.stdout.flush()
            if command:
                proc = subprocess.Popen(list(command))
                try:
                    return proc.wait()
                except KeyboardInterrupt:
                    proc.send_signal(signal.SIGINT)
                    return proc.wait()
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                while not stop.wait(0.5):
                    if lock.session is not None and lock.session.lost.is_set():
                        click.echo(f"raftd: lost the lock {name!r} (lease expired)", err=True)
                        return base.EXIT_FAILED
            except KeyboardInterrupt:
                pass
            return base.EXIT_OK
        finally:
            lock.release()
