"""The ``raftd`` command line (grows with the daemon and the API)."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="raftd")
def main() -> None:
    """raftd: a libp2p-native Raft consensus daemon."""
