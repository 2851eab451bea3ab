"""Key-value commands: ``put``, ``get``, ``del``, ``keys``, ``cas``, ``watch``."""

from __future__ import annotations

import sys

import click

from raftd.cli import base


@base.main.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--lease", type=int, default=0, help="Attach the key to this lease id.")
@base.client_options
def put_cmd(opts: base.Ctx, key: str, value: str, lease: int) -> int:
    """Set KEY to VALUE."""
    with opts.client() as c:
        r = c.put(base.to_bytes(key), base.to_bytes(value), lease=lease)
    base.emit(opts, {"revision": r.revision}, "OK")
    return base.EXIT_OK


@base.main.command("get")
@click.argument("key")
@click.option("--stale", is_flag=True, help="Read the local state, without a round trip.")
@click.option("--rev-min", "min_revision", type=int, default=0, help="Wait for this revision.")
@base.client_options
def get_cmd(opts: base.Ctx, key: str, stale: bool, min_revision: int) -> int:
    """Print the value of KEY (exit 1 if it does not exist)."""
    with opts.client() as c:
        kv = c.get(base.to_bytes(key), stale=stale, min_revision=min_revision)
    if kv is None:
        click.echo(f"raftd: key {key!r} not found", err=True)
        return base.EXIT_FAILED
    if opts.json:
        base.emit(opts, kv.as_dict())
    else:
        sys.stdout.buffer.write(kv.value + b"\n")
    return base.EXIT_OK


@base.main.command("del")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@base.client_options
def del_cmd(opts: base.Ctx, key: str, prefix: bool) -> int:
    """Delete KEY (or a prefix); prints the number deleted (exit 1 if none)."""
    with opts.client() as c:
        r = c.delete_prefix(base.to_bytes(key)) if prefix else c.delete(base.to_bytes(key))
    base.emit(opts, {"deleted": r.deleted, "revision": r.revision}, str(r.deleted))
    return base.EXIT_OK if r.deleted else base.EXIT_FAILED


@base.main.command("keys")
@click.argument("prefix", default="")
@click.option("--limit", type=int, default=0, help="At most this many keys.")
@click.option("--values", is_flag=True, help="Print values too (table: KEY<TAB>VALUE).")
@click.option("--stale", is_flag=True, help="Read the local state, without a round trip.")
@base.client_options
def keys_cmd(opts: base.Ctx, prefix: str, limit: int, values: bool, stale: bool) -> int:
    """List keys starting with PREFIX (all keys without one)."""
    with opts.client() as c:
        r = c.get_prefix(
            base.to_bytes(prefix), limit=limit, keys_only=not values and not opts.json, stale=stale
        )
    if opts.json:
        base.emit(
            opts, {"revision": r.revision, "more": r.more, "kvs": [kv.as_dict() for kv in r.kvs]}
        )
    else:
        for kv in r.kvs:
            click.echo(
                f"{base.to_text(kv.key)}\t{base.to_text(kv.value)}"
                if values
                else base.to_text(kv.key)
            )
    return base.EXIT_OK


@base.main.command("cas")
@click.argument("key")
@click.argument("expected")
@click.argument("new")
@click.option(
    "--rev", "by_rev", is_flag=True, help="EXPECTED is a mod revision (0: the key must not exist)."
)
@base.client_options
def cas_cmd(opts: base.Ctx, key: str, expected: str, new: str, by_rev: bool) -> int:
    """Set KEY to NEW if its value is EXPECTED (exit 1 and print the current value if not)."""
    with opts.client() as c:
        if by_rev:
            rev = int(expected)
            if rev == 0:
                r = c.cas(base.to_bytes(key), base.to_bytes(new), absent=True)
            else:
                r = c.cas(base.to_bytes(key), base.to_bytes(new), mod_revision=rev)
        else:
            r = c.cas(base.to_bytes(key), base.to_bytes(new), value=base.to_bytes(expected))
    cur = r.current.as_dict() if r.current else None
    if opts.json:
        base.emit(opts, {"succeeded": r.succeeded, "revision": r.revision, "current": cur})
    elif r.succeeded:
        click.echo("OK")
    else:
        have = (
            f"value {base.to_text(r.current.value)!r} (mod revision {r.current.mod_revision})"
            if r.current
            else "no such key"
        )
        click.echo(f"FAILED: current {have}", err=True)
    return base.EXIT_OK if r.succeeded else base.EXIT_FAILED


@base.main.command("watch")
@click.argument("prefix")
@click.option("--rev", "rev", type=int, default=0, help="Start at this revision (resume).")
@click.option("--key", "exact", is_flag=True, help="Watch exactly PREFIX, not a prefix.")
@click.option("--prev-kv", is_flag=True, help="Include the previous value.")
@click.option("--count", type=int, default=0, help="Exit after this many events.")
@base.client_options
def watch_cmd(opts: base.Ctx, prefix: str, rev: int, exact: bool, prev_kv: bool, count: int) -> int:
    """Print changes of keys starting with PREFIX until interrupted.

    Table output: ``PUT <rev> <key> <value>`` / ``DELETE <rev> <key>``, one per line.
    """
    import json

    seen = 0
    with opts.client() as c:
        w = c.watch(base.to_bytes(prefix), prefix=not exact, start_revision=rev, prev_kv=prev_kv)
        try:
            for ev in w:
                if opts.json:
                    d = {"type": ev.type.upper(), "revision": ev.revision, "kv": ev.kv.as_dict()}
                    if ev.prev is not None:
                        d["prev_kv"] = ev.prev.as_dict()
                    click.echo(json.dumps(d))
                elif ev.type == "put":
                    click.echo(
                        f"PUT {ev.revision} {base.to_text(ev.kv.key)} {base.to_text(ev.kv.value)}"
                    )
                else:
                    click.echo(f"DELETE {ev.revision} {base.to_text(ev.kv.key)}")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            w.cancel()
    return base.EXIT_OK
