"""Host construction: persistent identity, private network key, logging helpers."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.host.exceptions import StreamFailure
from libp2p.peer.peerinfo import info_from_p2p_addr

from raftd.transport.base import Transport
from raftd.transport.host import (
    IDENTITY_FILE,
    HostError,
    Libp2pLogFilter,
    load_or_create_identity,
    open_host,
    peer_id_of,
    refuse_streams,
    validate_psk,
)
from raftd.transport.libp2p import Libp2pTransport, Libp2pTransportConfig, parse_peer_id

from .helpers import NS, Recorder, app

PSK_A = "ab" * 32
PSK_B = "cd" * 32


def _is_a_transport(t: Libp2pTransport) -> Transport:
    return t  # mypy checks Libp2pTransport against the Transport protocol


def test_identity_is_persistent_and_private(tmp_path: Path) -> None:
    d = tmp_path / "data"
    kp1 = load_or_create_identity(d)
    path = d / IDENTITY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kp2 = load_or_create_identity(d)
    assert peer_id_of(kp1) == peer_id_of(kp2)
    assert peer_id_of(kp1) == str(parse_peer_id(peer_id_of(kp1)))
    assert not (d / (IDENTITY_FILE + ".tmp")).exists()
    os.chmod(path, 0o644)
    load_or_create_identity(d)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # tightened


def test_corrupt_identity_is_an_error_not_a_new_identity(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_bytes(b"garbage")
    with pytest.raises(HostError, match="cannot load identity"):
        load_or_create_identity(tmp_path)
    assert (tmp_path / IDENTITY_FILE).read_bytes() == b"garbage"


def test_psk_validation() -> None:
    assert validate_psk("AB" * 32) == "ab" * 32
    for bad in ("", "ab" * 31, "zz" * 32, "ab" * 33):
        with pytest.raises(HostError):
            validate_psk(bad)


async def _exchange(tmp_path: Path, psk_a: str | None, psk_b: str | None) -> Recorder:
    """a sends to b; returns a's recorder after b got it or a reported b unreachable."""
    ka = load_or_create_identity(tmp_path / "a")
    kb = load_or_create_identity(tmp_path / "b")
    ra, rb = Recorder(), Recorder()
    cfg = Libp2pTransportConfig(dial_timeout=1.5)
    async with open_host(ka, psk=psk_a) as ha, open_host(kb, psk=psk_b) as hb:
        ta = Libp2pTransport(
            ha, NS, on_message=ra.on_message, on_unreachable=ra.on_unreachable, config=cfg
        )
        tb = Libp2pTransport(hb, NS, on_message=rb.on_message, config=cfg)
        async with trio.open_nursery() as n:
            await n.start(ta.run)
            await n.start(tb.run)
            ta.add_peer_addrs(tb.local_id, [str(a) for a in hb.get_transport_addrs()])
            ta.send(tb.local_id, app(ta.local_id, tb.local_id, 1))
            # Whichever comes first: delivery, or the bounded dial failing.
            async with trio.open_nursery() as race:

                async def delivered() -> None:
                    await rb.wait_for(lambda: bool(rb.messages))
                    race.cancel_scope.cancel()

                async def failed() -> None:
                    await ra.wait_for(lambda: bool(ra.unreachable))
                    race.cancel_scope.cancel()

                race.start_soon(delivered)
                race.start_soon(failed)
            ra.messages = rb.messages  # report what b got through a's recorder
            n.cancel_scope.cancel()
    return ra


async def test_same_psk_connects(tmp_path: Path) -> None:
    with trio.fail_after(15):
        rec = await _exchange(tmp_path, PSK_A, PSK_A)
    assert len(rec.messages) == 1 and not rec.unreachable


async def test_mismatched_psk_fails_within_the_dial_bound(tmp_path: Path) -> None:
    with trio.fail_after(15):
        t0 = trio.current_time()
        rec = await _exchange(tmp_path, PSK_A, PSK_B)
    assert rec.unreachable and not rec.messages
    assert trio.current_time() - t0 < 6


async def test_psk_on_one_side_only_fails(tmp_path: Path) -> None:
    with trio.fail_after(15):
        rec = await _exchange(tmp_path, PSK_A, None)
    assert rec.unreachable and not rec.messages


RETIRED = TProtocol("/raftd-test/retired/1")
ECHO = TProtocol("/raftd-test/echo/1")


class _RetireWhileNegotiating(dict[Any, Any]):
    """A host's handler table that stops serving ``RETIRED`` exactly when a negotiation
    has checked that the protocol is served and is about to answer: the window in which
    a component's shutdown can land."""

    def __init__(self, table: dict[Any, Any], host: Any) -> None:
        super().__init__(table)
        self.host = host
        self.retired = False

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        if key == RETIRED and found and not self.retired:
            self.retired = True
            refuse_streams(self.host, RETIRED)
        return found


async def _answer(stream: Any) -> bytes | None:
    """What ``stream`` answers a request with; None for a reset or a closed stream."""
    try:
        await stream.write(b"x")
        return await stream.read(100) or None
    except Exception:
        return None


async def test_a_refused_protocol_resets_streams_and_the_host_serves_on(tmp_path: Path) -> None:
    """A component that stops serving its protocol while a stream of it is being
    negotiated: the stream is reset, and the host (which a handler missing at that point
    would take down) serves its other protocols."""

    async def handler(stream: Any) -> None:
        data = await stream.read(100)
        await stream.write(data)
        await stream.close()

    ka = load_or_create_identity(tmp_path / "a")
    kb = load_or_create_identity(tmp_path / "b")
    with trio.fail_after(20):
        async with open_host(ka) as ha, open_host(kb) as hb:
            hb.set_stream_handler(RETIRED, handler)
            hb.set_stream_handler(ECHO, handler)
            table = _RetireWhileNegotiating(hb.multiselect.handlers, hb)
            hb.multiselect.handlers = table
            await ha.connect(info_from_p2p_addr(hb.get_addrs()[0]))
            # Refused: the reset may come before or after the opener has read the answer.
            try:
                retired = await ha.new_stream(hb.get_id(), [RETIRED])
            except StreamFailure:
                answer = None
            else:
                answer = await _answer(retired)
            assert table.retired
            assert answer is None
            assert RETIRED in table  # replaced, never removed
            echo = await ha.new_stream(hb.get_id(), [ECHO])
            assert await _answer(echo) == b"x"


def test_libp2p_log_filter() -> None:
    f = Libp2pLogFilter(root_level=logging.ERROR, interval=60)
    lib = os.path.dirname(logging.__file__)  # stand-in path outside libp2p
    import libp2p

    inside = os.path.join(os.path.dirname(libp2p.__file__), "network", "swarm.py")

    def rec(name: str, level: int, path: str, line: int = 1) -> logging.LogRecord:
        return logging.LogRecord(name, level, path, line, "m", None, None)

    assert f.filter(rec("raftd", logging.INFO, os.path.join(lib, "x.py")))
    assert not f.filter(rec("root", logging.WARNING, inside))  # module-level warning
    assert f.filter(rec("libp2p.network.swarm", logging.ERROR, inside, 10))
    assert not f.filter(rec("libp2p.network.swarm", logging.ERROR, inside, 10))  # repeat
    assert f.filter(rec("libp2p.network.swarm", logging.ERROR, inside, 11))
    assert f.suppressed == 1


def test_configure_logging_routes_libp2p_through_root() -> None:
    # In a child process: basicConfig(force=True) would close pytest's own handlers.
    code = """
import io, logging
from raftd.transport.host import configure_logging
buf = io.StringIO()
configure_logging(logging.INFO, stream=buf)
logging.getLogger("libp2p.network.auto_connector").info("chatty")
logging.getLogger("libp2p.transport.tcp").error("dial failed")
logging.getLogger("raftd.transport").info("ours")
print(buf.getvalue())
"""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(root)),
        check=True,
    )
    assert "chatty" not in out.stdout
    assert "ERROR libp2p.transport.tcp: dial failed" in out.stdout
    assert "INFO raftd.transport: ours" in out.stdout
    assert out.stderr == ""  # nothing through logging.lastResort
