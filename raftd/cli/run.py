"""``raftd run``: the daemon in the foreground, configured from flags, environment and a
TOML file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from raftd.cli import base


@base.main.command()
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
    flags = base.given(ctx, names)
    if discovery is not None:
        flags["discovery"] = [] if discovery == "none" else discovery.split(",")
    cfg_file = config_file or (
        Path(os.environ["RAFTD_CONFIG"]) if os.environ.get("RAFTD_CONFIG") else None
    )
    try:
        cfg = load_config(flags, os.environ, cfg_file)
    except ConfigError as exc:
        click.echo(f"raftd: configuration error: {exc}", err=True)
        sys.exit(base.EXIT_USAGE)
    from raftd.app.runner import run_daemon

    sys.exit(run_daemon(cfg))
