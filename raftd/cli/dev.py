"""``raftd dev``: a local N-node cluster of real daemons in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from raftd.cli import base


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


@base.main.command("dev")
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
    code = base.EXIT_OK
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
                code = base.EXIT_UNAVAILABLE
                break
    except TimeoutError as exc:
        click.echo(f"raftd dev: {exc}", err=True)
        code = base.EXIT_UNAVAILABLE
    finally:
        click.echo("stopping ...")
        cluster.close()
    sys.exit(code)
