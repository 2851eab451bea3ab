"""The ``raftd`` command line.

``raftd run`` starts the daemon. The other commands talk to a running daemon through its
local API socket (see ``raftd/api/PROTOCOL.md``), etcdctl-style::

    raftd put KEY VALUE            raftd get KEY [--stale]        raftd del KEY [--prefix]
    raftd keys [PREFIX]            raftd cas KEY EXPECTED NEW [--rev]
    raftd txn < FILE               raftd watch PREFIX [--rev N]
    raftd lease grant|keepalive|revoke|ttl|list
    raftd lock NAME [-- CMD...]    raftd status    raftd members
    raftd member add|add-learner|promote|remove    raftd transfer [PEER]    raftd leave
    raftd catch-up [--within N]    raftd snapshot save|restore
    raftd dev [--nodes N]          (a local N-node cluster in the foreground)

Common options (after the command): ``--socket`` (env ``RAFTD_SOCKET``; a unix socket path
or ``tcp://host:port``), ``--namespace`` (env ``RAFTD_NAMESPACE``), ``-o table|json``,
``--timeout`` seconds (for ``catch-up``: how long to wait in all).

Long operations (snapshot save and restore, catch-up) draw a progress bar on stderr when
it is a terminal, and nothing there when it is not (see :mod:`raftd.cli_progress`).

Exit codes: 0 success; 1 the operation failed (e.g. a CAS mismatch, key not found); 2 bad
usage or configuration; 3 the daemon is unreachable or unavailable (no quorum, timeout);
4 the outcome is unknown (the write may or may not have been applied).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INDETERMINATE = 4


@click.group()
@click.version_option(package_name="raftd")
def main() -> None:
    """raftd: a libp2p-native Raft consensus daemon."""


def _given(ctx: click.Context, names: list[str]) -> dict[str, Any]:
    """Options the user actually gave on the command line (not defaults)."""
    out: dict[str, Any] = {}
    for name in names:
        src = ctx.get_parameter_source(name)
        if src == click.core.ParameterSource.COMMANDLINE:
            value = ctx.params[name]
            if isinstance(value, tuple):
                value = list(value)
            out[name] = value
    return out


@main.command()
@click.option("--data-dir", "data_dir", type=click.Path(path_type=Path), help="Data directory.")
@click.option("--namespace", "namespaces", multiple=True, help="Raft group, e.g. /raft/cron.")
@click.option("--listen", "listen", multiple=True, help="libp2p listen multiaddr.")
@click.option("--preset", type=click.Choice(["local", "regional", "global"]), help="Timing.")
@click.option("--peer", "peers", multiple=True, help="Static peer multiaddr with /p2p/<id>.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML file.")
@click.option("--socket", type=click.Path(path_type=Path), help="API socket path.")
@click.option("--discovery", help="Comma list of mdns,dht,pubsub,pex; 'none' disables.")
@click.option("--bootstrap", "bootstrap", multiple=True, help="Bootstrap multiaddr.")
@click.option("--expect", type=int, help="Wait for N founders before bootstrapping.")
@click.option("--voter-cap", "voter_cap", type=int, help="Maximum voters (odd).")
@click.option("--key-file", "key_file", type=click.Path(path_type=Path))
@click.option("--next-key-file", "next_key_file", type=click.Path(path_type=Path))
@click.option("--previous-key-file", "previous_key_file", type=click.Path(path_type=Path))
@click.option("--psk-file", "psk_file", type=click.Path(path_type=Path))
@click.option("--metrics", help="host:port for /metrics, /healthz, /readyz.")
@click.option("--log-format", "log_format", type=click.Choice(["text", "json"]))
@click.option("--log-level", "log_level")
@click.option("--leave-on-shutdown", "leave_on_shutdown", is_flag=True, default=None)
@click.option("--etcd-listen", "etcd_listen", help="HOST:PORT of the etcd v3 API (off).")
@click.option("--etcd-namespace", "etcd_namespace", help="Namespace the etcd API serves.")
@click.option(
    "--etcd-cert-file",
    "etcd_cert_file",
    type=click.Path(path_type=Path),
    help="TLS certificate (PEM) of the etcd API.",
)
@click.option(
    "--etcd-key-file",
    "etcd_key_file",
    type=click.Path(path_type=Path),
    help="TLS key (PEM) of the etcd API.",
)
@click.option(
    "--etcd-trusted-ca-file",
    "etcd_trusted_ca_file",
    type=click.Path(path_type=Path),
    help="Require etcd client certificates signed by this CA.",
)
@click.pass_context
def run(ctx: click.Context, /, config_file: Path | None, discovery: str | None, **_: Any) -> None:
    """Run the daemon in the foreground."""
    from raftd.app.config import ConfigError, load_config

    names = [n for n in ctx.params if n not in ("config_file", "discovery")]
    flags = _given(ctx, names)
    if discovery is not None:
        flags["discovery"] = [] if discovery == "none" else discovery.split(",")
    cfg_file = config_file or (
        Path(os.environ["RAFTD_CONFIG"]) if os.environ.get("RAFTD_CONFIG") else None
    )
    try:
        cfg = load_config(flags, os.environ, cfg_file)
    except ConfigError as exc:
        click.echo(f"raftd: configuration error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    from raftd.app.runner import run_daemon

    sys.exit(run_daemon(cfg))


# ---------------------------------------------------------------------------------------
# Client commands: they talk to a running daemon over its API socket. They import only
# the light client (protobuf, no libp2p), so each invocation starts in ~0.2 s.
# ---------------------------------------------------------------------------------------


class _Ctx:
    """Options shared by the client commands."""

    def __init__(
        self, socket: str | None, namespace: str | None, output: str, timeout: float | None
    ):
        self.socket = socket
        self.namespace = namespace
        self.output = output
        self.timeout = timeout
        self.namespace_given = namespace is not None

    def client(self) -> Any:
        from raftd.client import Client

        return Client(self.socket, namespace=self.namespace, timeout=self.timeout)

    @property
    def json(self) -> bool:
        return self.output == "json"


def _client_options(
    fn: Any = None, *, timeout_help: str = "Request deadline in seconds."
) -> Callable[..., Any]:
    """``--socket``, ``--namespace``, ``-o``, ``--timeout`` on a client command; the
    command receives a :class:`_Ctx` as ``opts``. Use bare (``@_client_options``) or
    with a command-specific ``--timeout`` help (``@_client_options(timeout_help=...)``)."""
    import functools

    if fn is None:
        return functools.partial(_client_options, timeout_help=timeout_help)

    @click.option(
        "--socket",
        "socket_",
        envvar="RAFTD_SOCKET",
        metavar="PATH|tcp://HOST:PORT",
        help="Daemon API socket (env RAFTD_SOCKET).",
    )
    @click.option(
        "--namespace", "-n", envvar="RAFTD_NAMESPACE", help="Raft group (env RAFTD_NAMESPACE)."
    )
    @click.option(
        "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
    )
    @click.option("--timeout", type=float, help=timeout_help)
    @functools.wraps(fn)
    def wrapper(
        socket_: str | None,
        namespace: str | None,
        output: str,
        timeout: float | None,
        **kw: Any,
    ) -> Any:
        opts = _Ctx(socket_, namespace, output, timeout)
        return _run_client(fn, opts, kw)

    return wrapper


def _exit_code(exc: BaseException) -> int:
    from raftd.client import (
        Compacted,
        FailedPrecondition,
        InvalidArgument,
        NotFound,
        RaftdError,
        TooLarge,
        Unauthenticated,
        UnknownNamespace,
    )

    if isinstance(exc, RaftdError):
        if exc.indeterminate:
            return EXIT_INDETERMINATE
        if isinstance(exc, NotFound | FailedPrecondition | Compacted):
            return EXIT_FAILED
        if isinstance(exc, InvalidArgument | UnknownNamespace | Unauthenticated | TooLarge):
            return EXIT_USAGE
        return EXIT_UNAVAILABLE
    return EXIT_UNAVAILABLE


def _run_client(fn: Any, opts: _Ctx, kw: dict[str, Any]) -> None:
    from raftd.client import RaftdError

    try:
        code = fn(opts, **kw)
    except RaftdError as exc:
        click.echo(f"raftd: {exc}", err=True)
        sys.exit(_exit_code(exc))
    except (ValueError, TypeError) as exc:
        click.echo(f"raftd: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or EXIT_OK)


def _b(s: str) -> bytes:
    return s.encode("utf-8", errors="surrogateescape")


def _t(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


def _emit(opts: _Ctx, obj: Any, text: str | None = None) -> None:
    import json

    if opts.json:
        click.echo(json.dumps(obj))
    elif text is not None:
        click.echo(text)


@main.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--lease", type=int, default=0, help="Attach the key to this lease id.")
@_client_options
def put_cmd(opts: _Ctx, key: str, value: str, lease: int) -> int:
    """Set KEY to VALUE."""
    with opts.client() as c:
        r = c.put(_b(key), _b(value), lease=lease)
    _emit(opts, {"revision": r.revision}, "OK")
    return EXIT_OK


@main.command("get")
@click.argument("key")
@click.option("--stale", is_flag=True, help="Read the local state, without a round trip.")
@click.option("--rev-min", "min_revision", type=int, default=0, help="Wait for this revision.")
@_client_options
def get_cmd(opts: _Ctx, key: str, stale: bool, min_revision: int) -> int:
    """Print the value of KEY (exit 1 if it does not exist)."""
    with opts.client() as c:
        kv = c.get(_b(key), stale=stale, min_revision=min_revision)
    if kv is None:
        click.echo(f"raftd: key {key!r} not found", err=True)
        return EXIT_FAILED
    if opts.json:
        _emit(opts, kv.as_dict())
    else:
        sys.stdout.buffer.write(kv.value + b"\n")
    return EXIT_OK


@main.command("del")
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@_client_options
def del_cmd(opts: _Ctx, key: str, prefix: bool) -> int:
    """Delete KEY (or a prefix); prints the number deleted (exit 1 if none)."""
    with opts.client() as c:
        r = c.delete_prefix(_b(key)) if prefix else c.delete(_b(key))
    _emit(opts, {"deleted": r.deleted, "revision": r.revision}, str(r.deleted))
    return EXIT_OK if r.deleted else EXIT_FAILED


@main.command("keys")
@click.argument("prefix", default="")
@click.option("--limit", type=int, default=0, help="At most this many keys.")
@click.option("--values", is_flag=True, help="Print values too (table: KEY<TAB>VALUE).")
@click.option("--stale", is_flag=True, help="Read the local state, without a round trip.")
@_client_options
def keys_cmd(opts: _Ctx, prefix: str, limit: int, values: bool, stale: bool) -> int:
    """List keys starting with PREFIX (all keys without one)."""
    with opts.client() as c:
        r = c.get_prefix(
            _b(prefix), limit=limit, keys_only=not values and not opts.json, stale=stale
        )
    if opts.json:
        _emit(opts, {"revision": r.revision, "more": r.more, "kvs": [kv.as_dict() for kv in r.kvs]})
    else:
        for kv in r.kvs:
            click.echo(f"{_t(kv.key)}\t{_t(kv.value)}" if values else _t(kv.key))
    return EXIT_OK


@main.command("cas")
@click.argument("key")
@click.argument("expected")
@click.argument("new")
@click.option(
    "--rev", "by_rev", is_flag=True, help="EXPECTED is a mod revision (0: the key must not exist)."
)
@_client_options
def cas_cmd(opts: _Ctx, key: str, expected: str, new: str, by_rev: bool) -> int:
    """Set KEY to NEW if its value is EXPECTED (exit 1 and print the current value if not)."""
    with opts.client() as c:
        if by_rev:
            rev = int(expected)
            if rev == 0:
                r = c.cas(_b(key), _b(new), absent=True)
            else:
                r = c.cas(_b(key), _b(new), mod_revision=rev)
        else:
            r = c.cas(_b(key), _b(new), value=_b(expected))
    cur = r.current.as_dict() if r.current else None
    if opts.json:
        _emit(opts, {"succeeded": r.succeeded, "revision": r.revision, "current": cur})
    elif r.succeeded:
        click.echo("OK")
    else:
        have = (
            f"value {_t(r.current.value)!r} (mod revision {r.current.mod_revision})"
            if r.current
            else "no such key"
        )
        click.echo(f"FAILED: current {have}", err=True)
    return EXIT_OK if r.succeeded else EXIT_FAILED


def parse_txn(text: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Parse ``raftd txn`` input: JSON, or the simple syntax (see ``raftd txn --help``).
    Raises ValueError with the offending line."""
    import json
    import re
    import shlex

    from raftd.client import compare, op_delete, op_delete_range, op_get, op_put

    def op_of(words: list[str], where: str) -> Any:
        if not words:
            raise ValueError(f"{where}: empty operation")
        verb, args = words[0].lower(), words[1:]
        if verb == "put" and len(args) == 2:
            return op_put(_b(args[0]), _b(args[1]))
        if verb == "get" and len(args) in (1, 2):
            return op_get(_b(args[0]), _b(args[1]) if len(args) == 2 else b"")
        if verb in ("del", "delete") and len(args) == 1:
            return op_delete(_b(args[0]))
        if verb in ("del", "delete") and len(args) == 2:
            return op_delete_range(_b(args[0]), _b(args[1]))
        raise ValueError(f"{where}: expected put KEY VALUE | get KEY [END] | del KEY [END]")

    stripped = text.strip()
    if stripped.startswith("{"):
        doc = json.loads(stripped)
        cmps = []
        for i, c in enumerate(doc.get("compare", [])):
            target = c.get("target", "value")
            operand = c.get("value") if target == "value" else int(c.get("value", 0))
            if target == "value" and not isinstance(operand, str):
                raise ValueError(f"compare {i}: value must be a string")
            cmps.append(compare(_b(c["key"]), target, c.get("op", "="), operand))

        def ops(items: list[dict[str, Any]], name: str) -> list[Any]:
            out = []
            for i, item in enumerate(items):
                ((verb, a),) = item.items()
                words = [verb, a["key"]]
                if verb == "put":
                    words.append(a.get("value", ""))
                elif a.get("range_end"):
                    words.append(a["range_end"])
                out.append(op_of(words, f"{name} {i}"))
            return out

        return cmps, ops(doc.get("success", []), "success"), ops(doc.get("failure", []), "failure")

    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            if sections[-1]:
                sections.append([])
            continue
        if not line.lstrip().startswith("#"):
            sections[-1].append(line)
    if sections and not sections[-1]:
        sections.pop()
    if len(sections) > 3:
        raise ValueError("txn: at most three blank-line separated sections")
    while len(sections) < 3:
        sections.append([])
    cre = re.compile(
        r'\s*(value|version|create|mod)\(\s*("(?:[^"\\]|\\.)*"|\S+?)\s*\)\s*(=|==|!=|>|<)\s*(.+?)\s*$'
    )
    cmps = []
    for line in sections[0]:
        m = cre.fullmatch(line)
        if m is None:
            raise ValueError(f'compare {line!r}: expected TARGET("KEY") OP OPERAND')
        target, key, op, operand = m.groups()
        key = shlex.split(key)[0]
        value: str | int = shlex.split(operand)[0] if target == "value" else int(operand)
        cmps.append(compare(_b(key), target, op, _b(value) if isinstance(value, str) else value))
    succ = [op_of(shlex.split(ln), f"success {ln!r}") for ln in sections[1]]
    fail = [op_of(shlex.split(ln), f"failure {ln!r}") for ln in sections[2]]
    return cmps, succ, fail


@main.command("txn")
@click.option(
    "--file", "-f", "path", type=click.File("r"), default="-", help="Input (default stdin)."
)
@_client_options
def txn_cmd(opts: _Ctx, path: Any) -> int:
    """Run a transaction read from stdin; exit 0 if the compares held, 1 if not.

    \b
    Simple syntax: three sections separated by blank lines: compares, then the
    operations run if all hold, then the ones run otherwise:
        value("k") = "v1"
        mod("counter") < 10
        <blank line>
        put k v2
        del old
        <blank line>
        get k
    Compare targets: value, version, create, mod (ints); operators = != > <.
    Operations: put KEY VALUE | get KEY [RANGE_END] | del KEY [RANGE_END].

    \b
    JSON: {"compare": [{"key": "k", "target": "value", "op": "=", "value": "v1"}],
           "success": [{"put": {"key": "k", "value": "v2"}}],
           "failure": [{"get": {"key": "k"}}]}
    """
    try:
        cmps, succ, fail = parse_txn(path.read())
    except (ValueError, KeyError, TypeError) as exc:
        click.echo(f"raftd: bad transaction: {exc}", err=True)
        return EXIT_USAGE
    with opts.client() as c:
        r = c.txn(cmps, succ, fail)
    if opts.json:
        out: list[Any] = []
        for x in r.responses:
            if hasattr(x, "kvs"):
                out.append({"kvs": [kv.as_dict() for kv in x.kvs]})
            elif hasattr(x, "deleted"):
                out.append({"deleted": x.deleted})
            else:
                out.append({"put": True})
        _emit(opts, {"succeeded": r.succeeded, "revision": r.revision, "responses": out})
    else:
        click.echo("SUCCESS" if r.succeeded else "FAILURE")
        for x in r.responses:
            if hasattr(x, "kvs"):
                for kv in x.kvs:
                    click.echo(f"{_t(kv.key)}\t{_t(kv.value)}")
            elif hasattr(x, "deleted"):
                click.echo(f"deleted {x.deleted}")
            else:
                click.echo("OK")
    return EXIT_OK if r.succeeded else EXIT_FAILED


@main.command("watch")
@click.argument("prefix")
@click.option("--rev", "rev", type=int, default=0, help="Start at this revision (resume).")
@click.option("--key", "exact", is_flag=True, help="Watch exactly PREFIX, not a prefix.")
@click.option("--prev-kv", is_flag=True, help="Include the previous value.")
@click.option("--count", type=int, default=0, help="Exit after this many events.")
@_client_options
def watch_cmd(opts: _Ctx, prefix: str, rev: int, exact: bool, prev_kv: bool, count: int) -> int:
    """Print changes of keys starting with PREFIX until interrupted.

    Table output: ``PUT <rev> <key> <value>`` / ``DELETE <rev> <key>``, one per line.
    """
    import json

    seen = 0
    with opts.client() as c:
        w = c.watch(_b(prefix), prefix=not exact, start_revision=rev, prev_kv=prev_kv)
        try:
            for ev in w:
                if opts.json:
                    d = {"type": ev.type.upper(), "revision": ev.revision, "kv": ev.kv.as_dict()}
                    if ev.prev is not None:
                        d["prev_kv"] = ev.prev.as_dict()
                    click.echo(json.dumps(d))
                elif ev.type == "put":
                    click.echo(f"PUT {ev.revision} {_t(ev.kv.key)} {_t(ev.kv.value)}")
                else:
                    click.echo(f"DELETE {ev.revision} {_t(ev.kv.key)}")
                sys.stdout.flush()
                seen += 1
                if count and seen >= count:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            w.cancel()
    return EXIT_OK


@main.group("lease")
def lease_group() -> None:
    """Leases: keys attached to a lease are deleted when it expires or is revoked."""


@lease_group.command("grant")
@click.argument("ttl", type=int)
@_client_options
def lease_grant_cmd(opts: _Ctx, ttl: int) -> int:
    """Grant a lease of TTL seconds; prints its id (decimal)."""
    with opts.client() as c:
        lease = c.lease_grant(ttl)
    _emit(opts, {"id": lease.id, "ttl": lease.ttl}, str(lease.id))
    return EXIT_OK


@lease_group.command("keepalive")
@click.argument("lease_id", type=int)
@click.option("--once", is_flag=True, help="Refresh once and exit.")
@_client_options
def lease_keepalive_cmd(opts: _Ctx, lease_id: int, once: bool) -> int:
    """Keep LEASE_ID alive until interrupted (exit 1 when it is gone)."""
    import time

    from raftd.client import NotFound, RaftdError

    with opts.client() as c:
        while True:
            try:
                ttl = c.lease_keepalive(lease_id)
            except NotFound:
                click.echo(f"raftd: lease {lease_id} expired or revoked", err=True)
                return EXIT_FAILED
            except RaftdError as exc:
                if once:
                    raise
                click.echo(f"raftd: keepalive failed ({exc}); retrying", err=True)
                ttl = 3
            else:
                _emit(opts, {"id": lease_id, "ttl": ttl}, f"lease {lease_id} ttl {ttl}")
                if once:
                    return EXIT_OK
            try:
                time.sleep(max(0.2, ttl / 3))
            except KeyboardInterrupt:
                return EXIT_OK


@lease_group.command("revoke")
@click.argument("lease_id", type=int)
@_client_options
def lease_revoke_cmd(opts: _Ctx, lease_id: int) -> int:
    """Revoke LEASE_ID, deleting its keys; prints how many."""
    with opts.client() as c:
        n = c.lease_revoke(lease_id)
    _emit(opts, {"deleted": n}, f"revoked; {n} keys deleted")
    return EXIT_OK


@lease_group.command("ttl")
@click.argument("lease_id", type=int)
@click.option("--keys", is_flag=True, help="List the attached keys.")
@_client_options
def lease_ttl_cmd(opts: _Ctx, lease_id: int, keys: bool) -> int:
    """Show the seconds left on LEASE_ID (by the leader's clock)."""
    with opts.client() as c:
        t = c.lease_ttl(lease_id, keys=keys)
    _emit(
        opts,
        {"id": t.id, "ttl": t.ttl, "granted_ttl": t.granted_ttl, "keys": [_t(k) for k in t.keys]},
        f"lease {t.id}: {t.ttl}s left of {t.granted_ttl}s"
        + "".join(f"\n  {_t(k)}" for k in t.keys),
    )
    return EXIT_OK


@lease_group.command("list")
@_client_options
def lease_list_cmd(opts: _Ctx) -> int:
    """List leases (id, granted TTL, number of keys)."""
    with opts.client() as c:
        ls = c.leases()
    _emit(
        opts,
        [{"id": x.id, "granted_ttl": x.granted_ttl, "keys": x.keys} for x in ls],
        "\n".join(f"{x.id}\tttl={x.granted_ttl}\tkeys={x.keys}" for x in ls) or "(no leases)",
    )
    return EXIT_OK


@main.command("lock", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--ttl", type=int, default=10, show_default=True, help="Session lease TTL (s).")
@click.option("--wait", "wait_s", type=float, help="Give up after this many seconds (exit 1).")
@_client_options
def lock_cmd(
    opts: _Ctx, name: str, command: tuple[str, ...], ttl: int, wait_s: float | None
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
        lock = Lock(c, _b(name), ttl=ttl)
        if not lock.acquire(timeout=wait_s):
            click.echo(f"raftd: lock {name!r} not acquired within {wait_s}s", err=True)
            lock.release()
            return EXIT_FAILED
        try:
            if opts.json:
                _emit(opts, {"key": _t(lock.key), "revision": lock.revision})
            else:
                click.echo(_t(lock.key))
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
                        return EXIT_FAILED
            except KeyboardInterrupt:
                pass
            return EXIT_OK
        finally:
            lock.release()


def _members_table(members: list[Any], leader: str = "") -> str:
    lines = []
    for m in members:
        mark = "*" if m.id == leader else " "
        lines.append(f"{mark} {m.id}  {'voter' if m.voter else 'learner'}  {' '.join(m.addrs)}")
    return "\n".join(lines)


@main.command("status")
@_client_options
def status_cmd(opts: _Ctx) -> int:
    """This daemon's view of each namespace (one namespace with --namespace)."""
    with opts.client() as c:
        sts = c.status(all_namespaces=not opts.namespace_given)
    if opts.json:
        _emit(opts, [s.as_dict() for s in sts])
        return EXIT_OK
    for s in sts:
        click.echo(
            f"{s.namespace}: {s.role}  term={s.term}  leader={s.leader or '-'}  "
            f"commit={s.commit}  applied={s.applied}  revision={s.revision}\n"
            f"  id {s.id}"
        )
        click.echo(_members_table(s.members, s.leader))
    return EXIT_OK


@main.command("members")
@_client_options
def members_cmd(opts: _Ctx) -> int:
    """List the members of the namespace (* marks the leader)."""
    with opts.client() as c:
        st = c.status()[0]
    if opts.json:
        _emit(opts, {"leader": st.leader, "members": [m.as_dict() for m in st.members]})
    else:
        click.echo(_members_table(st.members, st.leader))
    return EXIT_OK


@main.group("member")
def member_group() -> None:
    """Change membership (one server at a time, through the leader)."""


def _member_change(opts: _Ctx, op: str, peer_id: str, addrs: tuple[str, ...]) -> int:
    with opts.client() as c:
        fn = getattr(c, op)
        members = fn(peer_id, addrs) if op in ("add_voter", "add_learner") else fn(peer_id)
    if opts.json:
        _emit(opts, [m.as_dict() for m in members])
    else:
        click.echo(_members_table(members))
    return EXIT_OK


@member_group.command("add")
@click.argument("peer_id")
@click.argument("addrs", nargs=-1)
@_client_options
def member_add_cmd(opts: _Ctx, peer_id: str, addrs: tuple[str, ...]) -> int:
    """Add PEER_ID as a voter (reachable at ADDRS multiaddrs)."""
    return _member_change(opts, "add_voter", peer_id, addrs)


@member_group.command("add-learner")
@click.argument("peer_id")
@click.argument("addrs", nargs=-1)
@_client_options
def member_add_learner_cmd(opts: _Ctx, peer_id: str, addrs: tuple[str, ...]) -> int:
    """Add PEER_ID as a learner (non-voting; promote it once caught up)."""
    return _member_change(opts, "add_learner", peer_id, addrs)


@member_group.command("promote")
@click.argument("peer_id")
@_client_options
def member_promote_cmd(opts: _Ctx, peer_id: str) -> int:
    """Promote the learner PEER_ID to voter."""
    return _member_change(opts, "promote", peer_id, ())


@member_group.command("remove")
@click.argument("peer_id")
@_client_options
def member_remove_cmd(opts: _Ctx, peer_id: str) -> int:
    """Remove PEER_ID from the group."""
    return _member_change(opts, "remove", peer_id, ())


@main.command("transfer")
@click.argument("peer_id", default="")
@_client_options
def transfer_cmd(opts: _Ctx, peer_id: str) -> int:
    """Move leadership to PEER_ID (default: the most caught-up other voter)."""
    with opts.client() as c:
        leader = c.transfer_leader(peer_id)
    _emit(opts, {"leader": leader}, f"leader is now {leader}")
    return EXIT_OK


@main.command("leave")
@_client_options
def leave_cmd(opts: _Ctx) -> int:
    """Leave this namespace's cluster gracefully: if this daemon leads, hand leadership
    to the most caught-up voter first, then have the leader remove it. The daemon keeps
    running outside the cluster (it asks to rejoin when restarted): stop it afterwards
    to decommission it, or run it with --leave-on-shutdown."""
    import time

    from raftd.client import FailedPrecondition, Unavailable

    with opts.client() as c:
        st = c.status()[0]
        me = st.id
        if me not in {m.id for m in st.members}:
            _emit(opts, {"left": False, "member": False}, f"{me} is not a member")
            return EXIT_OK
        for attempt in range(5):
            try:
                if c.status()[0].role == "leader":
                    c.transfer_leader("")
                members = c.remove(me)
                break
            except (FailedPrecondition, Unavailable):
                if attempt == 4:
                    raise
                time.sleep(0.5)
    _emit(opts, {"left": True, "members": [m.as_dict() for m in members]}, f"{me} left")
    return EXIT_OK


#: ``raftd catch-up``: how long to wait in all without ``--timeout``.
CATCH_UP_TIMEOUT_S = 300.0
#: ... and how often to ask (each ask is one ReadIndex round trip to the leader).
CATCH_UP_POLL_S = 0.1
#: ... and the deadline of one ask (a leader that does not answer: ask again).
CATCH_UP_ASK_S = 5.0


@main.command("catch-up")
@click.option(
    "--within",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Done when at most N entries behind the leader's commit index.",
)
@_client_options(timeout_help=f"Give up after this many seconds (default {CATCH_UP_TIMEOUT_S:g}).")
def catch_up_cmd(opts: _Ctx, within: int) -> int:
    """Wait until this daemon has caught up with the leader: its applied index is at
    most --within entries behind the leader's commit index. With --within 0 (the
    default), every write acknowledged before the last check is applied here.

    Draws a progress bar on stderr when it is a terminal (entries applied since the
    first answer, out of those this daemon was behind); prints one line (JSON with
    -o json) when done. Exit 3 if not
    caught up within --timeout, or the daemon or leader cannot be reached by then (it
    keeps asking until then, so it may be started while the daemon is restarting).

    For rolling restarts and upgrades: restart one node, run `raftd catch-up` against
    it, then move on to the next node.
    """
    import time

    from raftd.cli_progress import ProgressBar
    from raftd.client import DeadlineExceeded, GroupStatus, RaftdError, Unavailable

    limit = opts.timeout if opts.timeout is not None else CATCH_UP_TIMEOUT_S
    start = time.monotonic()
    deadline = start + limit
    last: GroupStatus | None = None
    last_err: RaftdError | None = None
    base: int | None = None  # applied index at the first answer: the bar counts from it
    caught_up = False
    with opts.client() as c, ProgressBar("catch-up", show_pos=True) as bar:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                st = c.status(leader_commit=True, timeout=min(left, CATCH_UP_ASK_S))[0]
            except (Unavailable, DeadlineExceeded) as exc:
                # Restarting, no leader yet, or the leader did not answer: ask again.
                last_err = exc
                time.sleep(min(CATCH_UP_POLL_S, max(0.0, deadline - time.monotonic())))
                continue
            if st.leader_commit == 0:  # never 0 when honoured: the daemon ignored the flag
                click.echo(
                    "raftd: this daemon does not report the leader's commit index "
                    "(it predates `raftd catch-up`)",
                    err=True,
                )
                return EXIT_FAILED
            last, last_err = st, None
            if base is None:
                base = min(st.applied, st.leader_commit)
            bar.update(st.applied - base, st.leader_commit - base)
            if st.applied + within >= st.leader_commit:
                caught_up = True
                break
            time.sleep(min(CATCH_UP_POLL_S, max(0.0, deadline - time.monotonic())))
    elapsed = time.monotonic() - start
    ns = last.namespace if last is not None else (opts.namespace or "the namespace")
    report: dict[str, Any] = {"caught_up": caught_up, "namespace": ns, "seconds": elapsed}
    if last is not None:
        behind = max(0, last.leader_commit - last.applied)
        report.update(applied=last.applied, leader_commit=last.leader_commit, behind=behind)
    if caught_up:
        assert last is not None
        _emit(
            opts,
            report,
            f"caught up: {ns} applied {last.applied}, leader commit {last.leader_commit} "
            f"({report['behind']} behind) in {elapsed:.1f}s",
        )
        return EXIT_OK
    if opts.json:
        _emit(opts, report)
    waited = (
        f"waited for this daemon's applied index of {ns} to come within {within} "
        f"entries of the leader's commit index"
    )
    if last is not None:
        seen = (
            f"last seen: applied {last.applied}, leader commit {last.leader_commit} "
            f"({report['behind']} behind)"
        )
    else:
        seen = "the leader's commit index was never obtained"
    if last_err is not None:
        seen += f"; last error: {last_err}"
    click.echo(f"raftd: not caught up within {limit:g}s: {waited}; {seen}", err=True)
    return EXIT_UNAVAILABLE


@main.group("snapshot")
def snapshot_group() -> None:
    """Backups: save a consistent snapshot, restore it into a new cluster."""


@snapshot_group.command("save")
@click.argument("file", type=click.Path(path_type=Path))
@_client_options
def snapshot_save_cmd(opts: _Ctx, file: Path) -> int:
    """Write a consistent backup of the namespace to FILE (with a SHA-256 checksum)."""
    from raftd.cli_progress import ProgressBar

    part = file.with_name(file.name + ".part")
    with opts.client() as c, open(part, "wb") as out:
        with ProgressBar("snapshot save") as bar:
            index, size = c.snapshot_save(out, progress=bar.update)
        out.flush()
        os.fsync(out.fileno())
    part.replace(file)
    _emit(
        opts,
        {"file": str(file), "index": index, "size": size},
        f"saved {file}: {size} bytes at index {index}",
    )
    return EXIT_OK


@snapshot_group.command("restore")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--data-dir", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--namespace", default=None, help="Target namespace (default: the backup's).")
@click.option("--peer", "peers", multiple=True, help="Peer ids of the other members.")
def snapshot_restore_cmd(
    file: Path, data_dir: Path, namespace: str | None, peers: tuple[str, ...]
) -> None:
    """Seed a NEW cluster from a backup: run on every member's empty data dir with the
    same --peer list, then start them with that --peer list (offline; no daemon).
    Shows a progress bar while reading the file, when stderr is a terminal."""
    from raftd.app.backup import BackupError, restore_backup
    from raftd.cli_progress import ProgressBar

    try:
        with ProgressBar("snapshot restore") as bar:
            info, me = restore_backup(
                file,
                data_dir,
                namespace,
                [p.rsplit("/p2p/", 1)[-1] for p in peers],
                progress=bar.update,
            )
    except BackupError as exc:
        click.echo(f"raftd: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"restored {info.namespace} at index {info.index} into {data_dir} (peer id {me})")


@main.command("recover")
@click.option("--force-new-cluster", "force", is_flag=True, required=True)
@click.option("--data-dir", "data_dir", type=click.Path(path_type=Path), required=True)
@click.option("--namespace", "namespaces", multiple=True)
def recover_cmd(force: bool, data_dir: Path, namespaces: tuple[str, ...]) -> None:
    """Quorum-loss recovery (offline): make this survivor a one-voter cluster that keeps
    its data. Only when a majority is gone for good; see README, Operations."""
    from raftd.app.recover import RecoverError, force_new_cluster

    if not force:
        raise click.UsageError("recover needs --force-new-cluster")
    try:
        reports = force_new_cluster(data_dir, list(namespaces) or None)
    except RecoverError as exc:
        click.echo(f"raftd: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    for r in reports:
        click.echo(
            f"{r.namespace}: now a one-voter cluster of {r.peer_id} at index {r.applied}; "
            f"removed {len(r.removed_members)} member(s)"
        )


@main.command("reload")
@click.option("--data-dir", "data_dir", type=click.Path(path_type=Path), required=True)
def reload_cmd(data_dir: Path) -> None:
    """Make the daemon re-read its key files (as SIGHUP does)."""
    import signal as _signal

    try:
        pid = int((data_dir / "raftd.pid").read_text().strip())
        os.kill(pid, _signal.SIGHUP)
    except (OSError, ValueError) as exc:
        click.echo(f"raftd: cannot signal the daemon of {data_dir}: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    click.echo(f"sent SIGHUP to {pid}")


def _dev_demo(cluster: Any, leader: Any) -> None:
    """Show a write through a follower (forwarded to the leader) and a linearizable read
    through another node."""
    others = [n for n in cluster.nodes if n is not leader] or [leader]
    writer, reader = others[0], others[-1]
    try:
        with writer.client() as c:
            c.put("hello", "world")
        with reader.client() as c:
            kv = c.get("hello")
        value = kv.value.decode() if kv is not None else None
        click.echo(f"\ndemo: put hello=world via {writer.name} (forwarded to the leader)")
        click.echo(f"demo: linearizable get hello via {reader.name} -> {value!r}")
    except Exception as exc:  # the cluster still runs; the demo is a courtesy
        click.echo(f"demo failed: {exc}", err=True)


@main.command("dev")
@click.option("--nodes", type=int, default=3, show_default=True, help="Cluster size.")
@click.option("--dir", "base_dir", type=click.Path(path_type=Path), help="Keep data here.")
@click.option(
    "--preset",
    type=click.Choice(["local", "regional", "global"]),
    default="local",
    show_default=True,
)
@click.option(
    "--namespace", "namespaces", multiple=True, help="Namespaces (default /raft/default)."
)
def dev_cmd(base_dir: Path | None, nodes: int, preset: str, namespaces: tuple[str, ...]) -> None:
    """Run a local N-node cluster in the foreground (Ctrl-C stops and cleans up)."""
    import signal
    import threading

    from raftd.testing.cluster import LocalCluster

    if nodes < 1:
        raise click.BadParameter("--nodes must be >= 1")
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster = LocalCluster(
        nodes,
        base_dir=base_dir,
        preset=preset,
        namespaces=list(namespaces) or ["/raft/default"],
        keep=base_dir is not None,
        etcd=True,
    )
    code = EXIT_OK
    try:
        click.echo(f"starting {nodes} nodes in {cluster.base_dir} ...")
        cluster.start(wait_leader=False)
        leader = cluster.wait_leader(timeout=60)
        for n in cluster.nodes:
            role = "leader" if n is leader else "follower"
            click.echo(f"  {n.name} ({role})  socket {n.socket}  peer {n.addr}  log {n.log_path}")
            click.echo(f"      etcd endpoint {n.etcd_endpoint}")
        first = cluster.nodes[0].socket
        _dev_demo(cluster, leader)
        click.echo("\ntry:")
        click.echo(f"  raftd put --socket {first} hello world")
        click.echo(f"  raftd get --socket {first} hello")
        click.echo(f"  export RAFTD_SOCKET={first}; raftd status")
        endpoints = ",".join(cluster.etcd_endpoints())
        click.echo(f"  ETCDCTL_API=3 etcdctl --endpoints {endpoints} member list")
        click.echo("\nCtrl-C stops the cluster and removes its data.")
        sys.stdout.flush()
        while not stop.wait(0.5):
            dead = [n for n in cluster.nodes if not n.alive]
            if dead:
                click.echo(f"raftd dev: {dead[0].name} exited:\n{dead[0].log_tail()}", err=True)
                code = EXIT_UNAVAILABLE
                break
    except TimeoutError as exc:
        click.echo(f"raftd dev: {exc}", err=True)
        code = EXIT_UNAVAILABLE
    finally:
        click.echo("stopping ...")
        cluster.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
