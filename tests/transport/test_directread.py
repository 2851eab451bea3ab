"""Noise messages read directly for the Yamux loop (raftd.transport.directread).

The reader's contract is checked on a real socket pair with a stand-in cipher (packets
split across receives, several in one, a frame split across two messages, the end of the
stream between and inside packets, an empty message, a message that fails to decrypt);
over real libp2p hosts, the loop's reads go through it and a stream larger than a Noise
message arrives whole."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import ConnectionClosedError, IncompleteReadError
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.secure_session import SecureSession

from raftd.netio.sockio import SocketIO
from raftd.transport import directread
from raftd.transport.directread import NoiseReader, noise_reader
from raftd.transport.host import load_or_create_identity, open_host

PROTO = TProtocol("/raftd-test/directread/1")


class _Cipher:
    """Stands in for a Noise state: a message is its plaintext reversed; one that starts
    with ``b"!"`` fails authentication."""

    def decrypt(self, data: bytes) -> bytes:
        if data.startswith(b"!"):
            raise ValueError("Failed authentication of message")
        return data[::-1]


class _Noise:
    noise_state = _Cipher()


class _Tcp:
    """Stands in for a ``TrioTCPStream`` read through raftd.transport.tcpread."""

    def __init__(self, io: SocketIO) -> None:
        self.read_lock = trio.Lock()
        self._raftd_rbuf: bytearray | None = None
        self._raftd_io = io  # what tcpread.io_of returns for it


def _packet(plain: bytes) -> bytes:
    body = plain[::-1]
    return len(body).to_bytes(2, "big") + body


def _session() -> Any:
    session = SecureSession.__new__(SecureSession)
    session._reset_internal_buffer()
    return session


def _pair() -> tuple[NoiseReader, Any, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    tcp = _Tcp(SocketIO(trio.SocketStream(trio.socket.from_stdlib_socket(ours))))
    reader = NoiseReader(_Noise(), tcp)
    return reader, _session(), theirs


async def test_packets_split_and_joined_arrive_in_order() -> None:
    reader, session, peer = _pair()
    frames = [b"A" * 12 + b"first body", b"B" * 12, b"C" * 12 + b"x" * 3000]
    wire = b"".join(_packet(f) for f in frames)
    with trio.fail_after(10):
        # A byte at a time for the first packet, the rest in one piece.
        for i in range(len(_packet(frames[0]))):
            peer.send(wire[i : i + 1])
        peer.send(wire[len(_packet(frames[0])) :])
        assert await reader.read_exactly(session, 12) == b"A" * 12
        assert await reader.read_exactly(session, 10) == b"first body"
        assert await reader.read_exactly(session, 12) == b"B" * 12
        assert await reader.read_exactly(session, 12) == b"C" * 12
        assert await reader.read_exactly(session, 3000) == b"x" * 3000
    peer.close()


async def test_a_frame_split_across_two_messages_is_joined() -> None:
    reader, session, peer = _pair()
    with trio.fail_after(10):
        peer.send(_packet(b"H" * 5) + _packet(b"H" * 7 + b"tail"))
        assert await reader.read_exactly(session, 12) == b"H" * 12
        assert await reader.read_exactly(session, 4) == b"tail"
    peer.close()


async def test_end_between_packets_is_a_clean_close() -> None:
    reader, session, peer = _pair()
    peer.send(_packet(b"h" * 12))
    peer.close()
    with trio.fail_after(10):
        assert await reader.read_exactly(session, 12) == b"h" * 12
        with pytest.raises(IncompleteReadError) as err:
            await reader.read_exactly(session, 12)
    assert err.value.is_clean_close


async def test_end_inside_a_packet_is_not_clean() -> None:
    reader, session, peer = _pair()
    peer.send(_packet(b"h" * 40)[:20])
    peer.close()
    with trio.fail_after(10), pytest.raises(IncompleteReadError) as err:
        await reader.read_exactly(session, 12)
    assert not err.value.is_clean_close
    assert err.value.received_bytes == 20


async def test_an_empty_message_closes_as_the_library_does() -> None:
    reader, session, peer = _pair()
    peer.send(_packet(b""))
    with trio.fail_after(10), pytest.raises(ConnectionClosedError):
        await reader.read_exactly(session, 12)
    peer.close()


async def test_a_message_that_fails_to_decrypt_raises() -> None:
    reader, session, peer = _pair()
    peer.send(len(b"!bad").to_bytes(2, "big") + b"!bad")
    with trio.fail_after(10), pytest.raises(ValueError, match="authentication"):
        await reader.read_exactly(session, 12)
    peer.close()


def test_unknown_stacks_get_no_reader() -> None:
    assert noise_reader(object()) is None
    assert noise_reader(_session()) is None  # no Noise reader under it


async def test_the_yamux_loop_reads_through_it(tmp_path: Path) -> None:
    ka = load_or_create_identity(tmp_path / "a")
    kb = load_or_create_identity(tmp_path / "b")
    # Larger than one Noise message (64 KiB) and than the initial window (256 KiB).
    payload = bytes(range(256)) * 2000
    got = bytearray()
    done = trio.Event()

    async def sink(stream: Any) -> None:
        while True:
            try:
                data = await stream.read(65536)
            except Exception:
                break
            if not data:
                break
            got.extend(data)
        done.set()

    with trio.fail_after(60):
        async with open_host(ka) as ha, open_host(kb) as hb:
            hb.set_stream_handler(PROTO, sink)
            await ha.connect(info_from_p2p_addr(hb.get_addrs()[0]))
            before = directread.counts["messages"]
            s = await ha.new_stream(hb.get_id(), [PROTO])
            for k in range(0, len(payload), 7000):
                await s.write(payload[k : k + 7000])
            await s.close()
            await done.wait()
            assert directread.counts["messages"] - before >= len(payload) // 65535
    assert bytes(got) == payload
