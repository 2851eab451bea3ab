"""Timeline probes, loaded into a raftd daemon through ``PYTHONPATH`` by
``scripts/timeline`` (never by the daemon itself).

With ``RAFTD_TIMELINE_DIR`` set, each probe wraps one function of the daemon and appends
``(time.perf_counter(), event)`` to a list when it is called (and, for the log write in
the writer thread, when it returns). ``SIGUSR1`` clears the list and starts recording;
``SIGUSR2`` stops and writes ``<dir>/<pid>.trace``: a header line naming the probes that
could not be installed, then one ``seconds event`` line per record. ``perf_counter`` is
``CLOCK_MONOTONIC``, shared by every process on the machine, so the traces of the three
daemons can be merged.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

_records: list[tuple[float, str]] = []
_on = False


def _message_types(args: tuple[Any, ...]) -> str:
    msgs = args[1] if len(args) > 1 else ()
    names = sorted({m.type.name for m in msgs})
    return f" ({','.join(names)})" if names else " (nothing)"


Detail = Callable[[tuple[Any, ...]], str] | None

#: (module, qualified name, event, records the return too, what the call adds to the event)
PROBES: tuple[tuple[str, str, str, bool, Detail], ...] = (
    ("raftd.api.server", "_Connection._dispatch", "request", False, None),
    ("raftd.api.server", "_Connection.send_held", "answer", False, None),
    ("raftd.runtime.group", "Group._take_inputs", "loop pass", False, None),
    ("raftd.runtime.group", "Group._send", "send", False, _message_types),
    ("raftd.runtime.group", "Group._apply", "apply", False, None),
    ("raftd.transport.libp2p", "Libp2pTransport._deliver_frame", "frame received", False, None),
    ("raftd.storage.leveldb", "LevelDBStorage.save_submit", "log write handed over", False, None),
    ("raftd.storage.leveldb", "LevelDBStorage._execute", "log write", True, None),
    ("raftd.storage.leveldb", "LevelDBStorage._commit", "log write seen", False, None),
)


def _wrap(module: str, qualname: str, event: str, with_return: bool, detail: Detail) -> None:
    owner_name, _, attr = qualname.rpartition(".")
    owner: Any = importlib.import_module(module)
    for part in owner_name.split(".") if owner_name else ():
        owner = getattr(owner, part)
    original: Callable[..., Any] = getattr(owner, attr)
    clock = time.perf_counter
    records = _records

    def probe(*args: Any, **kwargs: Any) -> Any:
        if not _on:
            return original(*args, **kwargs)
        records.append((clock(), event + (detail(args) if detail else "")))
        result = original(*args, **kwargs)
        if with_return:
            records.append((clock(), event + " ended"))
        return result

    setattr(owner, attr, probe)


def _start(signum: int, frame: FrameType | None) -> None:
    global _on
    _records.clear()
    _on = True


def _stop(signum: int, frame: FrameType | None) -> None:
    global _on
    _on = False
    path = os.path.join(os.environ["RAFTD_TIMELINE_DIR"], f"{os.getpid()}.trace")
    with open(path + ".tmp", "w") as f:
        f.write("missing: " + ",".join(_missing) + "\n")
        for t, event in list(_records):
            f.write(f"{t:.7f} {event}\n")
    os.replace(path + ".tmp", path)


_missing: list[str] = []
if os.environ.get("RAFTD_TIMELINE_DIR"):
    for _probe in PROBES:
        try:
            _wrap(*_probe)
        except (ImportError, AttributeError):
            _missing.append(f"{_probe[0]}.{_probe[1]}")
    signal.signal(signal.SIGUSR1, _start)
    signal.signal(signal.SIGUSR2, _stop)
