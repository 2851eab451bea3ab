"""The Yamux receive fast path (raftd.transport.yamuxrecv) over real libp2p hosts: the
bytes of concurrent streams arrive whole and in order, writes larger than the window
(WINDOW_UPDATE frames) and than a Noise message (bodies not yet decrypted) too, stream
opening and closing still go through the library, and the fast path takes the usual
frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr

from raftd.transport import yamuxrecv
from raftd.transport.host import load_or_create_identity, open_host

PROTO = TProtocol("/raftd-test/yamuxrecv/1")


async def test_streams_arrive_whole_through_the_fast_path(tmp_path: Path) -> None:
    ka = load_or_create_identity(tmp_path / "a")
    kb = load_or_create_identity(tmp_path / "b")
    small = 400
    payloads = {
        i: b"".join(bytes([i]) + b"line %05d\n" % n for n in range(small)) for i in range(4)
    }
    # Larger than the 256 KiB initial window and than one Noise message (64 KiB).
    payloads[4] = bytes([4]) + bytes(range(256)) * 4000
    received: dict[int, bytes] = {}
    echoed: dict[int, bytes] = {}
    done = trio.Event()

    async def echo(stream: Any) -> None:
        buf = bytearray()
        while True:
            try:
                data = await stream.read(65536)
            except Exception:  # the end of the stream ends the handler
                break
            if not data:
                break
            buf += data
        received[buf[0]] = bytes(buf)
        await stream.write(bytes(buf[:1]) + b"got %d" % len(buf))
        await stream.close()
        if len(received) == len(payloads):
            done.set()

    with trio.fail_after(60):
        async with open_host(ka) as ha, open_host(kb) as hb:
            assert yamuxrecv.installed()
            before = dict(yamuxrecv.counts)
            hb.set_stream_handler(PROTO, echo)
            await ha.connect(info_from_p2p_addr(hb.get_addrs()[0]))

            async def client(i: int) -> None:
                s = await ha.new_stream(hb.get_id(), [PROTO])
                data = payloads[i]
                step = 11 if i < 4 else 100_000
                for k in range(0, len(data), step):
                    await s.write(data[k : k + step])
                await s.close()
                reply = bytearray()
                while True:
                    try:
                        chunk = await s.read(65536)
                    except Exception:
                        break
                    if not chunk:
                        break
                    reply += chunk
                echoed[i] = bytes(reply)

            async with trio.open_nursery() as nursery:
                for i in payloads:
                    nursery.start_soon(client, i)
            await done.wait()
    for i, data in payloads.items():
        assert received[i] == data
        assert echoed[i] == bytes([i]) + b"got %d" % len(data)
    taken = yamuxrecv.counts["taken"] - before["taken"]
    passed = yamuxrecv.counts["passed"] - before["passed"]
    print(f"frame headers: {taken} taken by the fast path, {passed} left to the library")
    assert taken > len(payloads) * small // 2  # the usual frames
    assert passed >= 2 * len(payloads)  # at least each stream's SYN and FIN
