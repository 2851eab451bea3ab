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
it is a terminal, and nothing there when it is not (see :mod:`raftd.cli.progress`).

Exit codes: 0 success; 1 the operation failed (e.g. a CAS mismatch, key not found); 2 bad
usage or configuration; 3 the daemon is unreachable or unavailable (no quorum, timeout);
4 the outcome is unknown (the write may or may not have been applied).
"""

from raftd.cli import backup, dev, kv, lease, member, ops, run, txn
from raftd.cli.base import main
from raftd.cli.txn import parse_txn

__all__ = ["main", "parse_txn"]

# The command modules register their commands on ``main`` when imported.
_COMMANDS = (backup, dev, kv, lease, member, ops, run, txn)
