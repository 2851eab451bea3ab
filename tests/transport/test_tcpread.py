"""The buffered TCP read under py-libp2p (raftd.transport.tcpread): same bytes, same
order, at most ``n`` per read, at least one unless at the end; one receive serves many
small reads."""

from __future__ import annotations

import trio
import trio.testing
from libp2p.io.trio import TrioTCPStream

from raftd.transport import tcpread


async def test_reads_are_served_from_one_receive_in_order() -> None:
    tcpread.install()
    tcpread.install()  # idempotent
    a, b = trio.testing.memory_stream_pair()
    receives = 0
    real = b.receive_some

    async def counting(max_bytes: int | None = None) -> bytes:
        nonlocal receives
        receives += 1
        return await real(max_bytes)

    b.receive_some = counting  # type: ignore[method-assign]
    s = TrioTCPStream(b)  # type: ignore[arg-type]
    payload = bytes(range(256)) * 40  # 10,240 bytes, arriving at once
    await a.send_all(payload)
    got = bytearray()
    sizes = [2, 12, 1000, 3, 5000, 100_000]
    for n in sizes:
        chunk = await s.read(n)
        assert 1 <= len(chunk) <= n
        got += chunk
    assert bytes(got) == payload
    assert receives == 1
    # Nothing buffered: the next read waits for the socket; then end of stream.
    await a.send_all(b"xy")
    assert await s.read(1) == b"x"
    assert await s.read(None) == b"y"
    await a.aclose()
    assert await s.read(10) == b""
    assert await s.read(0) == b""
