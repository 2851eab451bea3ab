"""``raftd recover --force-new-cluster``: quorum-loss recovery on one survivor (offline).

When a majority of voters is gone for good, no write can commit again. This rewrites the
membership of each group on ONE surviving node to that node alone, keeping its data, so
it can lead again. The others then join it as new members.

What it does to each namespace's data, with the daemon stopped:

1. Every entry in the survivor's log is applied to the state machine, including entries
   past its known commit index. Membership-change entries are skipped. Such an entry may
   have been committed (and acknowledged) by the lost majority without this node
   learning of it: keeping it loses nothing that was acknowledged, but it may surface a
   write whose client saw an error or a timeout (an indeterminate outcome).
2. A snapshot is taken at the last index, with the membership set to this node alone as
   the only voter. The log behind it is compacted.
3. The hard state keeps its term, so the next election moves to a newer term than any
   the old cluster used.

Use it only when the lost nodes will never come back with their data: a returning old
member would believe in the old membership. Wipe their data dirs before letting them
rejoin. Run it on the most up-to-date survivor (the highest last log index): it keeps
exactly what that node holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from raftd.core import ConfState, EntryType, HardState
from raftd.kv.machine import KVStateMachine
from raftd.storage.leveldb import LevelDB
from raftd.storage.snapshots import recover as recover_install
from raftd.transport.host import load_or_create_identity, peer_id_of

log = logging.getLogger("raftd.recover")


class RecoverError(Exception):
    """Recovery cannot proceed; the message says why."""


@dataclass(frozen=True, slots=True)
class RecoverReport:
    namespace: str
    peer_id: str
    applied: int
    kept_past_commit: int
    removed_members: tuple[str, ...]


def force_new_cluster(data_dir: Path, namespaces: list[str] | None = None) -> list[RecoverReport]:
    """Rewrite each group (all, or ``namespaces``) in ``data_dir`` to a one-voter
    cluster of this node. The daemon must not be running (LevelDB's lock enforces it)."""
    if not (data_dir / "identity.key").exists():
        raise RecoverError(f"{data_dir} has no identity.key: not a raftd data dir")
    me = peer_id_of(load_or_create_identity(data_dir))
    try:
        db = LevelDB(data_dir)
    except Exception as exc:
        raise RecoverError(f"cannot open the database (is the daemon running?): {exc}") from exc
    reports: list[RecoverReport] = []
    try:
        known = db.namespaces()
        targets = namespaces or known
        for ns in targets:
            if ns not in known:
                raise RecoverError(f"namespace {ns} has no data in {data_dir}")
            reports.append(_recover_group(db, ns, me))
    finally:
        db.close()
    return reports


def _recover_group(db: LevelDB, ns: str, me: str) -> RecoverReport:
    storage = db.group(ns)
    sm = KVStateMachine.leveldb(db, ns)
    recover_install(storage, sm)
    hs, cs = storage.initial_state()
    last = storage.last_index()
    start = max(sm.applied_index(), storage.first_index() - 1) + 1
    if start <= last:
        batch: list[tuple[int, bytes]] = []
        for e in storage.entries(start, last + 1):
            batch.append((e.index, b"" if e.type == EntryType.CONF_CHANGE else e.data))
            if len(batch) >= 1024:
                sm.apply_many(batch)
                batch = []
        if batch:
            sm.apply_many(batch)
    new_conf = ConfState(voters=(me,))
    applied = sm.applied_index()
    view = sm.snapshot_view()
    try:
        if applied > storage.snapshot_metadata().index:
            storage.create_snapshot_streaming(applied, new_conf, view.write)
    finally:
        view.close()
    storage.set_conf_state(new_conf)
    if storage.first_index() <= applied:
        storage.compact(applied)
    storage.save(HardState(term=hs.term, vote="", commit=applied), (), None)
    removed = tuple(m for m in cs.members() if m != me)
    log.info(
        "%s: forced a new one-voter cluster of %s at index %d (removed %s)",
        ns,
        me,
        applied,
        ", ".join(removed) or "nobody",
    )
    return RecoverReport(ns, me, applied, max(0, last - hs.commit), removed)
