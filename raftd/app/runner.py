"""Process-level entry point for ``raftd run``: logging, trio, exit status."""

from __future__ import annotations

import logging
import sys

import trio

from raftd.app.config import DaemonConfig
from raftd.app.logs import configure_logging


def run_daemon(cfg: DaemonConfig) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean shutdown, 1 on a fatal error."""
    configure_logging(cfg.log_format, cfg.log_level)
    from raftd.app.daemon import Daemon, DaemonError

    log = logging.getLogger("raftd")
    try:
        trio.run(Daemon(cfg).run)
    except DaemonError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception:
        log.exception("fatal error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(0)
