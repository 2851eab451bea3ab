"""Yamux window credit by the go-yamux rule (raftd.transport.yamuxwin), over real libp2p
hosts: small messages cost no WINDOW_UPDATE frames; bulk data keeps flowing (credit is
granted once half the window is consumed, so the sender never stalls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.stream_muxer.yamux.yamux import YamuxStream

from raftd.transport import yamuxwin
from raftd.transport.host import load_or_create_identity, open_host

PROTO = TProtocol("/raftd-test/sink/1")
SMALL = 100
SMALL_COUNT = 300  # 30 KB in all: well under half the 256 KiB window
BULK = 4 << 20


async def test_credit_is_granted_once_half_the_window_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    updates: list[int] = []
    real = YamuxStream.send_window_update

    async def counting(self: Any, increment: int, skip_lock: bool = False) -> None:
        updates.append(increment)
        await real(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counting)
    ka = load_or_create_identity(tmp_path / "a")
    kb = load_or_create_identity(tmp_path / "b")
    received = 0
    got_enough = trio.Event()
    target = 0

    async def sink(stream: Any) -> None:
        nonlocal received
        try:
            while True:
                data = await stream.read(65536)
                received += len(data)
                if received >= target:
                    got_enough.set()
                    await stream.write(b"k")  # ack: the sender may go on
        except Exception:  # end of stream ends the handler (pitfall 4)
            return

    with trio.fail_after(30):
        async with open_host(ka) as ha, open_host(kb) as hb:
            assert yamuxwin.installed()
            hb.set_stream_handler(PROTO, sink)
            await ha.connect(info_from_p2p_addr(hb.get_addrs()[0]))
            stream = await ha.new_stream(hb.get_id(), [PROTO])
            for i in range(SMALL_COUNT):
                target = (i + 1) * SMALL
                await stream.write(b"x" * SMALL)
                assert await stream.read(1) == b"k"
            assert received == SMALL * SMALL_COUNT
            assert updates == []  # no frame of credit for 30 KB of small reads
            target = SMALL * SMALL_COUNT + BULK
            got_enough = trio.Event()
            await stream.write(b"y" * BULK)  # 16x the initial window: needs credit
            await got_enough.wait()
            assert received == target
            assert updates, "the receiver never granted credit"
            # Each grant is at least half the initial window: no per-read updates.
            assert min(updates) >= (256 * 1024) // 2
            await stream.close()


@pytest.mark.parametrize(
    "env",
    [{}, {"PY_YAMUX_BATCH_THRESHOLD_DIV": "4"}, {"PY_YAMUX_DISABLE_HYSTERESIS": "1"}],
)
def test_the_threshold_is_the_librarys_with_the_settings_read_once(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Stream:
        target_recv_window = 256 * 1024 + 3

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yamuxwin.install()
        expected = YamuxStream._grow_threshold(Stream())  # type: ignore[arg-type]
        for name in env:
            monkeypatch.delenv(name)  # read at install, not on every call
        assert yamuxwin.grow_threshold(Stream()) == expected
    finally:
        monkeypatch.undo()
        yamuxwin.install()
