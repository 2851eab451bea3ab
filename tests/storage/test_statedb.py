"""The state machines' database beside the log's: formats, damage, and the migration of
a data dir of format 1 (one database), written here by the previous release's own code."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import plyvel
import pytest

from raftd.core.storage import StorageError
from raftd.core.types import Entry, HardState
from raftd.kv import commands as C
from raftd.kv.machine import KVStateMachine
from raftd.storage import codec, statedb
from raftd.storage.base import CorruptionError, StorageWriteError
from raftd.storage.leveldb import LevelDB
from raftd.wire.pb import kv_pb2 as pb

from .helpers import export_release, state_of

ROOT = Path(__file__).resolve().parents[2]
#: The last commit whose data dirs are of format 1.
PREVIOUS = "1d2b317"
NAMESPACES = ("/raft/a", "/raft/b")

_WRITE = """
import pickle, sys
from raftd.core.types import Entry, HardState
from raftd.kv.machine import KVStateMachine
from raftd.storage.leveldb import LevelDB
d, cmds = sys.argv[1], pickle.load(open(sys.argv[2], "rb"))
db = LevelDB(d)
for ns, datas in cmds.items():
    st, sm = db.group(ns), KVStateMachine.leveldb(db, ns)
    es = [Entry(1, i + 1, data=c) for i, c in enumerate(datas)]
    st.save(HardState(1, "a", len(es)), es, None)
    sm.apply_many([(e.index, e.data) for e in es])
db.close()
"""

_OPEN = """
import sys
from raftd.storage.leveldb import LevelDB
LevelDB(sys.argv[1]).close()
"""


def commands(ns: str) -> list[bytes]:
    """Puts (some with sessions), overwrites, deletes, a lease and a key attached to it:
    every kind of record the state machine keeps."""
    out = [C.encode(pb.Command(lease_grant=pb.LeaseGrantRequest(ttl=60, id=7)))]
    out.append(C.encode(pb.Command(put=pb.PutRequest(key=b"leased", value=b"x", lease=7))))
    for i in range(600):
        out.append(
            C.put(b"%s/k%04d" % (ns.encode(), i % 450), b"v%d" % i, client_id=b"c1", seq=i + 1)
        )
    out.extend(C.delete(b"%s/k%04d" % (ns.encode(), i)) for i in range(0, 450, 7))
    return out


def run_previous(code: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(code))
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the previous release's code, a data dir of format 1 it wrote)."""
    base = tmp_path_factory.mktemp("previous")
    code = export_release(PREVIOUS, base / "code")
    cmds = base / "cmds.pickle"
    cmds.write_bytes(pickle.dumps({ns: commands(ns) for ns in NAMESPACES}))
    p = run_previous(code, _WRITE, str(base / "v1"), str(cmds))
    assert p.returncode == 0, p.stderr[-2000:]
    return code, base / "v1"


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Each namespace's state after the same commands, applied by this code."""
    sms = {}
    for ns in NAMESPACES:
        sm = KVStateMachine.memory()
        sm.apply_many([(i + 1, c) for i, c in enumerate(commands(ns))])
        sms[ns] = state_of(sm)
    return sms


def v1_copy(previous: tuple[Path, Path], tmp_path: Path) -> Path:
    d = tmp_path / "node"
    shutil.copytree(previous[1], d)
    return d


def log_format(d: Path) -> int | None:
    db = plyvel.DB(str(d / "db"))
    try:
        return statedb.read_format(db, d / "db")
    finally:
        db.close()


def data_records_in_log(d: Path) -> int:
    db = plyvel.DB(str(d / "db"))
    try:
        return sum(
            1
            for k in db.iterator(include_value=False)
            if k[:1] == codec.GROUP and k[5:6] == codec.KIND_DATA
        )
    finally:
        db.close()


def check_migrated(d: Path, expected: dict[str, bytes]) -> None:
    """The data dir is of format 2, with every namespace's state and log as written."""
    with LevelDB(d) as db:
        for ns in NAMESPACES:
            sm = KVStateMachine.leveldb(db, ns)
            assert state_of(sm) == expected[ns], ns
            assert sm.applied_index() == len(commands(ns))
            st = db.group(ns)
            assert st.last_index() == len(commands(ns))
            assert st.entries(1, 3, None)[0].data == commands(ns)[0]
    assert log_format(d) == codec.FORMAT_VERSION
    assert data_records_in_log(d) == 0


def test_the_previous_release_wrote_state_records_into_the_log_database(
    previous: tuple[Path, Path],
) -> None:
    """The fixture is what this test file claims: format 1, the state in ``db``."""
    assert log_format(previous[1]) == 1
    assert not (previous[1] / "state").exists()
    assert data_records_in_log(previous[1]) > 2 * 380


def test_a_format_1_data_dir_is_migrated_with_every_record(
    previous: tuple[Path, Path], expected: dict[str, bytes], tmp_path: Path
) -> None:
    d = v1_copy(previous, tmp_path)
    check_migrated(d, expected)
    check_migrated(d, expected)  # and opens again as it is


def fail_at(point: str, nth: int) -> Callable[[str], None]:
    seen = 0

    def hook(p: str) -> None:
        nonlocal seen
        if p == point:
            seen += 1
            if seen == nth:
                raise OSError(f"injected at {point} #{nth}")

    return hook


@pytest.mark.parametrize(
    ("point", "nth"),
    [
        ("write:migrate-copy", 2),  # part of the records copied
        ("write:flush", 1),  # all copied, not yet durable
        ("write:format", 1),  # durable, the state database not yet marked
        ("write:migrate-delete", 2),  # marked, part of the log's records deleted
    ],
)
def test_a_migration_cut_short_completes_at_the_next_open(
    previous: tuple[Path, Path],
    expected: dict[str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    nth: int,
) -> None:
    monkeypatch.setattr(statedb, "_CHUNK", 100)
    d = v1_copy(previous, tmp_path)
    with pytest.raises(StorageWriteError, match="injected"):
        LevelDB(d, fault_hook=fail_at(point, nth))
    assert log_format(d) == 1
    check_migrated(d, expected)


def test_a_migration_clears_a_state_database_it_did_not_finish(
    previous: tuple[Path, Path], expected: dict[str, bytes], tmp_path: Path
) -> None:
    """A state database without a format record is not trusted: whatever it holds goes."""
    d = v1_copy(previous, tmp_path)
    stray = plyvel.DB(str(d / "state"), create_if_missing=True)
    k = codec.group_prefix(1) + codec.KIND_DATA + b"kstray"
    stray.put(k, codec.seal(k, b"\x00" * 24 + b"x"))
    stray.close()
    check_migrated(d, expected)


def test_the_previous_release_refuses_a_migrated_data_dir(
    previous: tuple[Path, Path], expected: dict[str, bytes], tmp_path: Path
) -> None:
    """Going back is refused by name (README: upgrades), not served with a lost state."""
    d = v1_copy(previous, tmp_path)
    check_migrated(d, expected)
    p = run_previous(previous[0], _OPEN, str(d))
    assert p.returncode != 0
    assert "unsupported storage format 2" in p.stderr


def new_dir(tmp_path: Path) -> Path:
    d = tmp_path / "n1"
    with LevelDB(d) as db:
        sm = KVStateMachine.leveldb(db, "/raft/a")
        sm.apply_many([(1, C.put(b"k", b"v"))])
    return d


def test_a_missing_state_database_is_named(tmp_path: Path) -> None:
    d = new_dir(tmp_path)
    shutil.rmtree(d / "state")
    with pytest.raises(CorruptionError, match=r"state machines' database .* is missing"):
        LevelDB(d)


def test_an_emptied_state_database_is_named(tmp_path: Path) -> None:
    d = new_dir(tmp_path)
    shutil.rmtree(d / "state")
    plyvel.DB(str(d / "state"), create_if_missing=True).close()
    with pytest.raises(CorruptionError, match="has no format record"):
        LevelDB(d)


def test_a_state_database_without_its_log_is_named(tmp_path: Path) -> None:
    """The log's database gone, the state's kept: starting over on that state would
    skip entries as already applied."""
    d = new_dir(tmp_path)
    shutil.rmtree(d / "db")
    with pytest.raises(CorruptionError, match=r"holds data but the log's database .* is new"):
        LevelDB(d)


def test_a_new_data_dir_cut_short_between_its_two_format_records_opens(tmp_path: Path) -> None:
    d = tmp_path / "n1"
    with pytest.raises(StorageWriteError, match="injected"):
        LevelDB(d, fault_hook=fail_at("write:format", 2))  # the state's landed, not the log's
    assert log_format(d) is None
    with LevelDB(d) as db:
        sm = KVStateMachine.leveldb(db, "/raft/a")
        sm.apply_many([(1, C.put(b"k", b"v"))])
    assert log_format(d) == codec.FORMAT_VERSION


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    d = new_dir(tmp_path)
    db = plyvel.DB(str(d / "db"))
    db.put(*statedb.format_record(99))
    db.close()
    with pytest.raises(StorageError, match="unsupported storage format 99"):
        LevelDB(d)


def test_state_writes_land_in_the_state_database(tmp_path: Path) -> None:
    """The point of the split: the log's database holds no state machine record."""
    ns = "/raft/a"
    with LevelDB(tmp_path / "n1") as db:
        st, sm = db.group(ns), KVStateMachine.leveldb(db, ns)
        es = [Entry(1, i + 1, data=c) for i, c in enumerate(commands(ns))]
        st.save(HardState(1, "a", len(es)), es, None)
        sm.apply_many([(e.index, e.data) for e in es])
        in_state = sum(1 for _ in db.state.raw.iterator(prefix=codec.group_prefix(1)))
    assert data_records_in_log(tmp_path / "n1") == 0
    assert in_state > 380  # 385 keys live
