"""Operating a running daemon: ``catch-up`` (rolling restarts) and ``reload`` (key files)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from raftd.cli import base

#: ``raftd catch-up``: how long to wait in all without ``--timeout``.
CATCH_UP_TIMEOUT_S = 300.0
#: ... and how often to ask (each ask is one ReadIndex round trip to the leader).
CATCH_UP_POLL_S = 0.1
#: ... and the deadline of one ask (a leader that does not answer: ask again).
CATCH_UP_ASK_S = 5.0


@base.main.command("catch-up")
@click.option(
    "--within",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Done when at most N entries behind the leader's commit index.",
)
@base.client_options(
    timeout_help=f"Give up after this many seconds (default {CATCH_UP_TIMEOUT_S:g})."
)
def catch_up_cmd(opts: base.Ctx, within: int) -> int:
    """Wait until this daemon has caught up with the leader: its applied index is at
    most --within entries behind the leader's commit index. With --within 0 (the
    default), every write acknowledged before the last check is applied here.

    Draws a progress bar on stderr when it is a terminal (entries applied since the
    first answer, out of those this daemon was behind); prints one line (JSON with
    -o json) when done. Exit 3 if not
    caught up within --timeout, or the daemon or leader cannot be reached by then (it
    keeps asking until then, so it may be started while the daemon is restarting).

    For rolling restarts and upgrades: restart one node, run `raftd catch-up` against
    it, then move on to the next node.
    """
    import time

    from raftd.cli.progress import ProgressBar
    from raftd.client import DeadlineExceeded, GroupStatus, RaftdError, Unavailable

    limit = opts.timeout if opts.timeout is not None else CATCH_UP_TIMEOUT_S
    start = time.monotonic()
    deadline = start + limit
    last: GroupStatus | None = None
    last_err: RaftdError | None = None
    first_applied: int | None = None  # applied index at the first answer: the bar counts from it
    caught_up = False
    with opts.client() as c, ProgressBar("catch-up", show_pos=True) as bar:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                st = c.status(leader_commit=True, timeout=min(left, CATCH_UP_ASK_S))[0]
            except (Unavailable, DeadlineExceeded) as exc:
                # Restarting, no leader yet, or the leader did not answer: ask again.
                last_err = exc
                time.sleep(min(CATCH_UP_POLL_S, max(0.0, deadline - time.monotonic())))
                continue
            if st.leader_commit == 0:  # never 0 when honoured: the daemon ignored the flag
                click.echo(
                    "raftd: this daemon does not report the leader's commit index "
                    "(it predates `raftd catch-up`)",
                    err=True,
                )
                return base.EXIT_FAILED
            last, last_err = st, None
            if first_applied is None:
                first_applied = min(st.applied, st.leader_commit)
            bar.update(st.applied - first_applied, st.leader_commit - first_applied)
            if st.applied + within >= st.leader_commit:
                caught_up = True
                break
            time.sleep(min(CATCH_UP_POLL_S, max(0.0, deadline - time.monotonic())))
    elapsed = time.monotonic() - start
    ns = last.namespace if last is not None else (opts.namespace or "the namespace")
    report: dict[str, Any] = {"caught_up": caught_up, "namespace": ns, "seconds": elapsed}
    if last is not None:
        behind = max(0, last.leader_commit - last.applied)
        report.update(applied=last.applied, leader_commit=last.leader_commit, behind=behind)
    if caught_up:
        assert last is not None
        base.emit(
            opts,
            report,
            f"caught up: {ns} applied {last.applied}, leader commit {last.leader_commit} "
            f"({report['behind']} behind) in {elapsed:.1f}s",
        )
        return base.EXIT_OK
    if opts.json:
        base.emit(opts, report)
    waited = (
        f"waited for this daemon's applied index of {ns} to come within {within} "
        f"entries of the leader's commit index"
    )
    if last is not None:
        seen = (
            f"last seen: applied {last.applied}, leader commit {last.leader_commit} "
            f"({report['behind']} behind)"
        )
    else:
        seen = "the leader's commit index was never obtained"
    if last_err is not None:
        seen += f"; last error: {last_err}"
    click.echo(f"raftd: not caught up within {limit:g}s: {waited}; {seen}", err=True)
    return base.EXIT_UNAVAILABLE


@base.main.command("reload")
@click.option("--data-dir", "data_dir", type=click.Path(path_type=Path), required=True)
def reload_cmd(data_dir: Path) -> None:
    """Make the daemon re-read its key files (as SIGHUP does)."""
    import signal as _signal

    try:
        pid = int((data_dir / "raftd.pid").read_text().strip())
        os.kill(pid, _signal.SIGHUP)
    except (OSError, ValueError) as exc:
        click.echo(f"raftd: cannot signal the daemon of {data_dir}: {exc}", err=True)
        sys.exit(base.EXIT_UNAVAILABLE)
    click.echo(f"sent SIGHUP to {pid}")
