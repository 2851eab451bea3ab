"""Process-level entry point for ``raftd run``: logging, trio, exit status."""

from __future__ import annotations

import logging
import os

import trio

from raftd.app import collector
from raftd.app.config import DaemonConfig
from raftd.app.logs import configure_logging
from raftd.app.shutdown import ShutdownGuard, shutdown_bound_s


def run_daemon(cfg: DaemonConfig) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean shutdown, 1 on a fatal error, and
    :data:`~raftd.app.shutdown.EXIT_SHUTDOWN_BOUND` (from another thread, through
    ``os._exit``) when the shutdown outlasts its bound."""
    configure_logging(cfg.log_format, cfg.log_level)
    from raftd.app.daemon import Daemon, DaemonError

    log = logging.getLogger("raftd")
    collector.tune()
    daemon = Daemon(cfg, started_ago=process_age)
    daemon.on_started = collector.freeze_startup_objects
    guard = ShutdownGuard(shutdown_bound_s(cfg.timing.election_s), lambda: daemon.phase)
    daemon.on_shutdown_requested = guard.arm
    try:
        trio.run(daemon.run)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        # Start-up errors may arrive wrapped in an ExceptionGroup from a nursery.
        errors = _leaves(exc)
        known = [e for e in errors if isinstance(e, DaemonError)]
        if known:
            for e in known:
                log.error("%s", e)
            return 1
        if all(isinstance(e, KeyboardInterrupt) for e in errors):
            return 0
        log.exception("fatal error")
        return 1
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaves(e))
        return out
    return [exc]


def process_age() -> float:
    """Seconds since this process started, from ``/proc`` (0.0 where it cannot tell)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            # Field 22 (starttime, clock ticks after boot); the name before ")" may
            # contain spaces.
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
