"""The libp2p host raftd runs on: Noise only, Yamux, one connection per peer, and a
persistent ed25519 identity.

Choices, each measured on py-libp2p 0.8.1 (see docs/libp2p.md):

- Security is Noise only. The library's default list also accepts plaintext, TLS and
  SECIO; a Noise-only host refuses plaintext dialers.
- Muxer is Yamux (Mplex deadlocked on pipelined echo).
- ``ConnectionConfig(max_connections_per_peer=1)``: ``connect()`` drops from ~250 ms to
  6-22 ms.
- ``RetryConfig(max_retries=0)``: the transport owns reconnection (backoff with jitter,
  every dial bounded), so the swarm must not retry behind its back.
- The identity lives in ``<data-dir>/identity.key`` (mode 0600), so the peer id, which
  is also the Raft node id, survives restarts.
- Optional private network: a 32-byte pre-shared key as 64 hex characters. A mismatched
  key fails slowly (~20 s or never), so every dial must be bounded by the caller.

Logging (docs/libp2p.md, pitfall 11): parts of libp2p log through the *root* logger with
module-level ``logging.warning(...)``, which installs a stderr handler on first use and
turns later ``basicConfig()`` calls into no-ops. :func:`configure_logging` configures root with
``force=True`` and quiets libp2p; :func:`quiet_libp2p_logging` does only the latter.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import libp2p
import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import load_identity, save_identity
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from raftd.transport import fastlock, tcpread, yamuxrecv, yamuxsend, yamuxwin

__all__ = [
    "IDENTITY_FILE",
    "HostError",
    "Libp2pLogFilter",
    "configure_logging",
    "create_host",
    "listen_addrs_of",
    "load_or_create_identity",
    "open_host",
    "peer_id_of",
    "quiet_libp2p_logging",
    "refuse_streams",
    "validate_psk",
]

IDENTITY_FILE = "identity.key"

_PSK_RE = re.compile(r"[0-9a-fA-F]{64}")
_LIBP2P_DIR = os.path.dirname(os.path.abspath(libp2p.__file__)) + os.sep


class HostError(Exception):
    """Host configuration is invalid (bad PSK, unreadable identity)."""


# --- identity ------------------------------------------------------------------------


def load_or_create_identity(data_dir: str | os.PathLike[str]) -> KeyPair:
    """Load ``<data_dir>/identity.key``, creating a fresh ed25519 identity if absent.

    The directory is created (mode 0700) if needed. A new key is written to a temporary
    file, fsynced, then renamed into place, so a crash never leaves a truncated key. An
    existing key file with looser permissions is tightened to 0600. Raises
    :class:`HostError` if the file exists but cannot be parsed: never silently replace
    an identity, since the peer id is the node's Raft id.
    """
    d = Path(data_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = d / IDENTITY_FILE
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
        try:
            return load_identity(path)
        except (ValueError, OSError) as exc:
            raise HostError(f"cannot load identity from {path}: {exc}") from exc
    kp = create_new_key_pair()
    tmp = d / (IDENTITY_FILE + ".tmp")
    save_identity(kp, tmp)  # writes with mode 0600
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename durable
    finally:
        os.close(dir_fd)
    return kp


def peer_id_of(key_pair: KeyPair) -> str:
    """The base58 peer id (the Raft node id) of an identity."""
    return str(ID.from_pubkey(key_pair.public_key).to_base58())


def validate_psk(psk: str) -> str:
    """Return ``psk`` if it is 64 hex characters (32 bytes), else raise HostError.

    libp2p itself only checks the length at the first dial, and a wrong key then fails
    slowly; checking up front gives a clear error at startup.
    """
    if not _PSK_RE.fullmatch(psk):
        raise HostError("private network key must be exactly 64 hex characters (32 bytes)")
    return psk.lower()


# --- host ----------------------------------------------------------------------------


def create_host(
    key_pair: KeyPair,
    *,
    psk: str | None = None,
    enable_mdns: bool = False,
    auto_connect: bool = False,
) -> Any:
    """A libp2p host (``IHost``, untyped) configured as the module docstring says.

    The host is not listening yet: run it with ``async with host.run([maddr]):`` or
    :func:`open_host`.

    ``auto_connect=False`` (the default) disables the swarm's AutoConnector. Left on, it
    dials every peer in the peerstore every 10 s (it aims at 100+ connections, a public
    DHT node's needs), outside our backoff and bounds, and its in-flight dials make ours
    wait. Raft connections are the transport's business.
    """
    kwargs: dict[str, Any] = {}
    if psk is not None:
        kwargs["psk"] = validate_psk(psk)
    # py-libp2p's Yamux by default answers every read with a WINDOW_UPDATE frame (its
    # PY_YAMUX_RELEASE_ON_READ=1): one more frame, send and wake-up on both sides for
    # each Raft batch. Off, it releases the window as go-yamux does, once half of it is
    # consumed. The library reads the variable at every read; an operator's own setting
    # wins.
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")
    # Even so, the library grants credit after almost every small read: see yamuxwin.
    # Reads and writes skip a scheduler round per free lock and per syscall: tcpread,
    # yamuxsend, fastlock; the usual frames skip the library's per-frame logging and
    # timeout: yamuxrecv.
    yamuxwin.install()
    tcpread.install()
    yamuxsend.install()
    yamuxrecv.install()
    fastlock.install()
    host: Any = new_host(  # Any: libp2p's interfaces lack the attributes set below
        key_pair=key_pair,
        sec_opt={NOISE_ID: NoiseTransport(key_pair, noise_privkey=x25519_key_pair().private_key)},
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1),
        enable_mDNS=enable_mdns,
        **kwargs,
    )
    network = host.get_network()
    network.retry_config = RetryConfig(max_retries=0)
    if not auto_connect:
        connector = getattr(network, "auto_connector", None)
        if connector is not None:
            # Its start() only sets _started; while that stays False, both the periodic
            # task and the on-disconnect trigger return at once.
            async def _disabled() -> None:
                return None

            connector.start = _disabled
    return host


@asynccontextmanager
async def open_host(
    key_pair: KeyPair,
    listen_addrs: Sequence[str] = ("/ip4/127.0.0.1/tcp/0",),
    *,
    psk: str | None = None,
    enable_mdns: bool = False,
    auto_connect: bool = False,
    close_timeout: float = 5.0,
) -> AsyncIterator[Any]:
    """Create a host (:func:`create_host`), listen on ``listen_addrs`` and yield it;
    stop it on exit."""
    host = create_host(key_pair, psk=psk, enable_mdns=enable_mdns, auto_connect=auto_connect)
    async with host.run([multiaddr.Multiaddr(a) for a in listen_addrs]):
        try:
            yield host
        finally:
            # host.run()'s own teardown closes connections and listeners in an already
            # cancelled context, so it stops at the first await and leaks the listening
            # socket, which has SO_REUSEPORT: a host restarted on the same port in the
            # same process then shares incoming connections with the zombie. Close
            # explicitly, shielded and bounded.
            with trio.move_on_after(close_timeout) as scope:
                scope.shield = True
                try:
                    await host.close()
                except Exception as exc:
                    logging.getLogger("raftd.transport").debug("host close: %r", exc)


def refuse_streams(host: Any, protocol: str) -> None:
    """From now on, reset every inbound stream of ``protocol`` on ``host``, for a
    component that stops serving it while the host runs on.

    The handler is replaced, never removed: py-libp2p 0.8.1's multiselect checks that a
    protocol has a handler, writes its answer, then looks the handler up again; a removal
    in between raises ``KeyError`` inside the host's connection task, which takes the
    whole host (and the daemon's exit status) down. One entry per protocol stays in the
    host's table, so the table is bounded by the protocols ever served."""
    host.set_stream_handler(TProtocol(protocol), _refuse_stream)


async def _refuse_stream(stream: Any) -> None:
    # Runs in libp2p's task: nothing may escape it.
    try:
        await stream.reset()
    except Exception:
        logging.getLogger("raftd.transport").debug("reset of a refused stream failed")


def listen_addrs_of(host: Any) -> list[str]:
    """The host's listen addresses without the ``/p2p/<id>`` suffix, as strings."""
    return [str(a) for a in host.get_transport_addrs()]


# --- logging -------------------------------------------------------------------------


class Libp2pLogFilter(logging.Filter):
    """A handler filter for records that come from inside the libp2p package.

    - Records libp2p sends to the *root* logger (module-level ``logging.warning()``) are
      dropped below ``root_level``: they are mostly noise about normal stream ends.
    - Every libp2p call site is rate-limited to one record per ``interval`` seconds:
      libp2p logs each failed dial at ERROR (multi-line, some with tracebacks), which a
      peer that is down for an hour would otherwise repeat every backoff period.
    """

    def __init__(self, root_level: int = logging.ERROR, interval: float = 30.0) -> None:
        super().__init__()
        self.root_level = root_level
        self.interval = interval
        self.suppressed = 0
        self._last: dict[tuple[str, int], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(_LIBP2P_DIR):
            return True
        if record.name == "root" and record.levelno < self.root_level:
            return False
        key = (record.pathname, record.lineno)
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed += 1
            return False
        if len(self._last) > 4096:
            self._last.clear()  # bound memory; worst case a few extra lines
        self._last[key] = now
        return True


def quiet_libp2p_logging(
    level: int = logging.WARNING,
    *,
    root_level: int = logging.ERROR,
    interval: float = 30.0,
) -> None:
    """Route libp2p's logging through the root handlers, quietly. Idempotent.

    libp2p's import-time ``setup_logging()`` sets the ``libp2p`` logger to WARNING with
    ``propagate=False`` and no handler, so its warnings and errors bypass the
    application's handlers and reach stderr through ``logging.lastResort``, unformatted.
    This sets the ``libp2p`` logger (and children that pinned a lower level themselves,
    like ``libp2p.network.auto_connector`` at INFO) to ``level``, lets records propagate,
    and installs a :class:`Libp2pLogFilter` on every root handler. Call it after
    configuring root handlers (:func:`configure_logging` does).
    """
    lg = logging.getLogger("libp2p")
    lg.setLevel(level)
    lg.propagate = True
    for name, child in list(logging.root.manager.loggerDict.items()):
        if (
            name.startswith("libp2p.")
            and isinstance(child, logging.Logger)
            and child.level != logging.NOTSET
            and child.level < level
        ):
            child.setLevel(level)
    logging.getLogger("multiaddr").setLevel(max(level, logging.WARNING))
    for handler in logging.getLogger().handlers:
        for f in list(handler.filters):
            if isinstance(f, Libp2pLogFilter):
                handler.removeFilter(f)
        handler.addFilter(Libp2pLogFilter(root_level, interval))


def configure_logging(
    level: int = logging.INFO,
    *,
    libp2p_level: int = logging.WARNING,
    stream: TextIO | None = None,
    fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s",
) -> None:
    """Configure root logging (``force=True``, replacing any handler a libp2p
    ``logging.warning()`` already installed, pitfall 11) and quiet libp2p. Call once at
    startup, before starting hosts."""
    logging.basicConfig(level=level, format=fmt, stream=stream, force=True)
    quiet_libp2p_logging(libp2p_level, root_level=max(libp2p_level, logging.ERROR))
