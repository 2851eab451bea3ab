"""Structured logging: ``key=value`` text or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage().replace('"', "'")
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f'logger={record.name} msg="{msg}"'
        )
        if record.exc_info:
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """Configure the root logger (force: libp2p may have installed a handler already)
    and quiet libp2p's own chatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # libp2p's import-time setup_logging() sets propagate=False on its
    # logger, so its errors reached stderr through logging.lastResort, unformatted (not
    # JSON, multi-line). Importing the host module imports libp2p first; then route its
    # records through our handler, rate-limited per call site (tests/ops checks the lines).
    from raftd.transport.host import quiet_libp2p_logging

    quiet_libp2p_logging(logging.ERROR, root_level=logging.ERROR)
    for noisy in ("libp2p", "multiaddr", "zeroconf", "async_service"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
