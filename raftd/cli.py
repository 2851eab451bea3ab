"""The ``raftd`` command line.

``raftd run`` starts the daemon. The other commands talk to a running daemon through its
local API socket (see ``raftd.api``).

Exit codes: 0 success; 1 the operation failed (e.g. a CAS mismatch, key not found); 2 bad
usage or configuration; 3 the daemon is unreachable or unavailable (no quorum, timeout);
4 the outcome is unknown (the write may or may not have been applied).
"""

from __future__ import annotations

import os
import sys
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
@click.option("--psk-file", "psk_file", type=click.Path(path_type=Path))
@click.option("--metrics", help="host:port for /metrics, /healthz, /readyz.")
@click.option("--log-format", "log_format", type=click.Choice(["text", "json"]))
@click.option("--log-level", "log_level")
@click.option("--leave-on-shutdown", "leave_on_shutdown", is_flag=True, default=None)
@click.pass_context
def run(ctx: click.Context, /, config_file: Path | None, discovery: str | None, **_: Any) -> None:
    """Run the daemon in the foreground."""
    from raftd.app.config import ConfigError, load_config

    names = [n for n in ctx.params if n not in ("config_file", "discovery")]
    flags = _given(ctx, names)
    if discovery is not None:
        flags["discovery"] = [] if discovery == "none" else discovery.split(",")
    env_cfg = os.environ.get("RAFTD_CONFIG")
    cfg_file = config_file or (Path(env_cfg) if env_cfg else None)
    try:
        cfg = load_config(flags, os.environ, cfg_file)
    except ConfigError as exc:
        click.echo(f"raftd: configuration error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    from raftd.app.runner import run_daemon

    sys.exit(run_daemon(cfg))
