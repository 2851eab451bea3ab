"""Backups and quorum-loss recovery: ``snapshot save|restore`` and ``recover`` (offline)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from raftd.cli import base


@base.main.group("snapshot")
def snapshot_group() -> None:
    """Backups: save a consistent snapshot, restore it into a new cluster."""


@snapshot_group.command("save")
@click.argument("file", type=click.Path(path_type=Path))
@base.client_options
def snapshot_save_cmd(opts: base.Ctx, file: Path) -> int:
    """Write a consistent backup of the namespace to FILE (with a SHA-256 checksum)."""
    from raftd.cli.progress import ProgressBar

    part = file.with_name(file.name + ".part")
    with opts.client() as c, open(part, "wb") as out:
        with ProgressBar("snapshot save") as bar:
            index, size = c.snapshot_save(out, progress=bar.update)
        out.flush()
        os.fsync(out.fileno())
    part.replace(file)
    base.emit(
        opts,
        {"file": str(file), "index": index, "size": size},
        f"saved {file}: {size} bytes at index {index}",
    )
    return base.EXIT_OK


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
    from raftd.cli.progress import ProgressBar

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
        sys.exit(base.EXIT_FAILED)
    click.echo(f"restored {info.namespace} at index {info.index} into {data_dir} (peer id {me})")


@base.main.command("recover")
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
        sys.exit(base.EXIT_FAILED)
    for r in reports:
        click.echo(
            f"{r.namespace}: now a one-voter cluster of {r.peer_id} at index {r.applied}; "
            f"removed {len(r.removed_members)} member(s)"
        )
