"""Fencing and wiping one group's state in a running daemon (dissolving a duplicate
cluster).

.. warning:: This module reaches into :class:`raftd.runtime.group.Group` internals
   (``_stopping``, ``_fail_all``, the input queues) and the storage key layout, because
   the group has no public "fence" or "reset" yet. Everything that does so is here,
   behind three functions, so that the group's owner can replace them with
   ``Group.fence()`` / ``Group.reset(storage)`` and ``LevelDB.drop_group(ns)``.

Crash safety: :func:`wipe_group` writes (and fsyncs) a marker file first and removes it
last; a daemon that finds the marker at start finishes the wipe before running the
group (:func:`finish_pending_wipe`). Every step is idempotent.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

from raftd.core import NONE, ConfState, StateType
from raftd.kv.machine import KVStateMachine
from raftd.runtime.group import Group, GroupUnavailable
from raftd.storage import codec
from raftd.storage.leveldb import LevelDB
from raftd.storage.snapshots import namespace_slug

__all__ = ["fence_group", "finish_pending_wipe", "wipe_group", "wipe_marker"]

log = logging.getLogger("raftd.formation")


def fence_group(group: Group, reason: str) -> None:
    """Stop ``group`` from acknowledging anything from now on: every pending proposal,
    read and queued request fails with :class:`GroupUnavailable` (for clients: the
    outcome is unknown), and new ones are refused. Called synchronously while the
    group applies the dissolve marker, so no entry after it is ever acknowledged."""
    group._stopping = True
    group._fail_all(GroupUnavailable(f"{group.namespace}: {reason}"))


def wipe_marker(data_dir: Path, namespace: str) -> Path:
    return data_dir / "formation" / f"wipe-{namespace_slug(namespace)}"


def _empty_image() -> bytes:
    buf = io.BytesIO()
    KVStateMachine.memory().snapshot_data(buf)
    return buf.getvalue()


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def wipe_group(group: Group, db: LevelDB, data_dir: Path) -> None:
    """Erase ``group``'s log, hard state, membership, snapshots and state machine, and
    reset the (stopped) group object in place so it can run again as a fresh node.

    The group's task must have ended. Runs on the trio thread: it is only used for
    groups without user writes, whose state is tiny.
    """
    ns = group.namespace
    marker = wipe_marker(data_dir, ns)
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "w") as f:
        f.write(ns + "\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(marker.parent)
    _erase(group, db)
    marker.unlink(missing_ok=True)
    log.info("%s: group state wiped", ns)


def _erase(group: Group, db: LevelDB) -> None:
    ns = group.namespace
    old = group.storage
    prefix = old.prefix
    data = prefix + codec.KIND_DATA
    keys = [
        k for k in db.raw.iterator(prefix=prefix, include_value=False) if not k.startswith(data)
    ]
    # One atomic batch: log, hard state, membership and metadata go together, so the
    # storage reads as empty (never half-wiped) from here on.
    db.write("formation-wipe", keys, [])
    old.close()
    group.sm.restore(io.BytesIO(_empty_image()), index=0)
    snap_dir = db.snapshot_dir(ns)
    if snap_dir.is_dir():
        for p in snap_dir.iterdir():
            if p.is_file():
                p.unlink(missing_ok=True)
    _reset(group, db.group(ns))


def _reset(group: Group, storage: object) -> None:
    group.storage = storage  # type: ignore[assignment]
    group.node = None
    group.conf = ConfState()
    group.failed = None
    group._inbox.clear()
    group._reports.clear()
    group._transfers.clear()
    group._proposals.clear()
    group._ticks = 0
    group._snapshot_senders.clear()
    group._stopping = False
    if group.leader != NONE or group.role != StateType.FOLLOWER:
        group._on_soft_state(NONE, StateType.FOLLOWER)  # tells the leader listeners


def finish_pending_wipe(group: Group, db: LevelDB, data_dir: Path) -> bool:
    """At start, before the group runs: finish a wipe a crash interrupted. True if
    there was one."""
    marker = wipe_marker(data_dir, group.namespace)
    if not marker.exists():
        return False
    log.warning("%s: finishing an interrupted wipe", group.namespace)
    _erase(group, db)
    marker.unlink(missing_ok=True)
    return True
