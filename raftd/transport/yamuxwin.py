"""Yamux receive-window credit as go-yamux grants it: once half the window is consumed.

py-libp2p 0.8.1's ``YamuxStream`` grants credit after a read through
``_auto_tune_and_send_window_update``. Even with ``PY_YAMUX_RELEASE_ON_READ=0`` its
"partial slack" branch grants whatever was consumed whenever the consumed amount is
positive and below the threshold, i.e. after almost every small read: measured on an idle
3-node cluster, one ``WINDOW_UPDATE`` frame per two heartbeats in each direction (Noise
encrypt, ``sendto``, a read and a decrypt on the other side, and a wake-up of both loops),
a third of all frames on the wire.

:func:`install` replaces that method with go-yamux's ``sendWindowUpdate`` rule: the
credit owed is ``target - (recv_window + buffered)``; it is granted, in one frame, only
once it reaches half the target window (the library's own threshold, so its
``PY_YAMUX_BATCH_THRESHOLD_DIV`` still applies), together with the library's window
auto-tuning. A sender never waits for credit that is owed: it runs out of window only
after sending the whole window, and once the reader consumed half of it, the update goes
out. The wire format is unchanged, and peers running the library's rule interoperate
(credit is the peer's to grant, in any amount).

The body runs without an ``await`` before the frame is written, so the stream's
``window_lock`` (held by the library only around code without an ``await`` either) is not
taken: taking it costs a scheduler round per read.

Like :mod:`raftd.transport.tcpread`, this patches the library's class once, at host
creation; upstream, it belongs in ``YamuxStream`` itself. An operator who sets
``PY_YAMUX_RELEASE_ON_READ=1`` explicitly keeps the library's behaviour.
"""

from __future__ import annotations

import os
from typing import Any

from libp2p.stream_muxer.yamux import yamux as _yamux
from libp2p.stream_muxer.yamux.yamux import YamuxStream

__all__ = ["grow_threshold", "install", "installed"]

#: The library's ``PY_YAMUX_*`` threshold settings, read from the environment once (the
#: library reads them on every call: a dozen calls per frame received).
_settings = {"divisor": 2, "hysteresis": True}


def _read_settings() -> None:
    _settings["divisor"] = _yamux._yamux_batch_threshold_divisor()
    _settings["hysteresis"] = not _yamux._yamux_disable_hysteresis()


def grow_threshold(stream: Any) -> int:
    """``YamuxStream._grow_threshold()`` with the settings read at :func:`install`: the
    credit below which no window update is sent."""
    if not _settings["hysteresis"]:
        return 0
    target: int = stream.target_recv_window
    return target // _settings["divisor"]


async def _grant_window(self: Any, *, bytes_read: int = 0) -> None:
    del bytes_read  # the credit owed follows from the window and the buffer alone
    buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
    delta = self.target_recv_window - (self.recv_window + buffered)
    if delta <= 0 or delta < grow_threshold(self):
        return
    self.recv_window += delta
    self._pending_recv_release = 0
    delta += self._apply_autotune_epoch(buffered)
    await self.send_window_update(delta, skip_lock=True)


_ORIGINAL = YamuxStream._auto_tune_and_send_window_update


def install() -> None:
    """Make every ``YamuxStream`` grant credit by the go-yamux rule (see the module
    docstring), unless ``PY_YAMUX_RELEASE_ON_READ`` is set to a true value. Idempotent."""
    _read_settings()
    if os.environ.get("PY_YAMUX_RELEASE_ON_READ", "0").upper() in ("1", "TRUE", "YES"):
        YamuxStream._auto_tune_and_send_window_update = _ORIGINAL  # type: ignore[method-assign]
        return
    YamuxStream._auto_tune_and_send_window_update = _grant_window  # type: ignore[method-assign]


def installed() -> bool:
    """Whether the go-yamux rule is in effect."""
    return YamuxStream._auto_tune_and_send_window_update is _grant_window
