"""SocketIO: the same bytes and errors as trio's stream methods, over real sockets."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from raftd.netio.sockio import CHECKPOINT_EVERY, SocketIO


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(
        trio.socket.from_stdlib_socket(b)
    )


async def test_bytes_in_order_both_ways_and_end_of_stream() -> None:
    a, b = _pair()
    io_a, io_b = SocketIO(a), SocketIO(b)
    big = bytes(range(256)) * 20_000  # 5 MB: more than the socket buffers hold
    got = bytearray()

    async def read_all() -> None:
        while True:
            chunk = await io_b.receive_some(65536)
            if not chunk:
                return
            got.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await io_a.send_all(big)
        await io_a.send_all(b"tail")
        await a.send_eof()
    assert bytes(got) == big + b"tail"
    await io_b.send_all(b"back")
    assert await io_a.receive_some(10) == b"back"
    await a.aclose()
    await b.aclose()


async def test_a_read_that_emptied_the_socket_waits_for_the_next_bytes() -> None:
    a, b = _pair()
    io_b = SocketIO(b)
    await a.send_all(b"abc")
    assert await io_b.receive_some(100) == b"abc"  # less than asked: drained
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.send_all, b"later")
        assert await io_b.receive_some(100) == b"later"
    await a.aclose()
    await b.aclose()


async def test_peer_reset_is_a_broken_resource() -> None:
    a, b = _pair()
    io_a = SocketIO(a)
    await b.aclose()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first write may still be taken by the kernel
            await io_a.send_all(b"x" * 65536)
    await a.aclose()


async def test_send_nowait_takes_what_fits_and_never_waits() -> None:
    a, b = _pair()
    io_a, io_b = SocketIO(a), SocketIO(b)
    assert io_a.send_nowait(b"abc") == 3
    assert await io_b.receive_some(10) == b"abc"
    big = b"y" * (16 << 20)  # more than any socket buffer
    taken = io_a.send_nowait(big)
    assert 0 < taken < len(big)
    assert io_a.send_nowait(b"more") == 0  # full: nothing taken, no wait
    got = 0
    async with trio.open_nursery() as nursery:

        async def drain() -> None:
            nonlocal got
            while got < len(big):
                got += len(await io_b.receive_some(1 << 20))

        nursery.start_soon(drain)
        await io_a.send_all(big[taken:])
    assert got == len(big)
    await b.aclose()
    with pytest.raises(trio.BrokenResourceError):
        for _ in range(100):  # the first writes may still be taken by the kernel
            io_a.send_nowait(b"x" * 65536)
    await a.aclose()


async def test_closing_here_ends_a_waiting_read_and_refuses_later_ones() -> None:
    a, b = _pair()
    io_b = SocketIO(b)
    errors: list[BaseException] = []

    async def read() -> None:
        try:
            await io_b.receive_some(10)
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        await b.aclose()
    assert len(errors) == 1
    # The descriptor's number may belong to another socket by now: never used again.
    c, d = _pair()
    with pytest.raises(trio.ClosedResourceError):
        await io_b.receive_some(10)
    with pytest.raises(trio.ClosedResourceError):
        await io_b.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        io_b.send_nowait(b"x")
    for s in (a, c, d):
        await s.aclose()


async def test_a_reader_that_always_finds_data_can_be_cancelled() -> None:
    a, b = _pair()
    io_b = SocketIO(b)
    await a.send_all(b"x" * 10_000)
    reads = 0
    with trio.CancelScope() as scope:
        scope.cancel()
        while True:
            assert await io_b.receive_some(1) == b"x"
            reads += 1
    assert scope.cancelled_caught
    assert reads < CHECKPOINT_EVERY
    await a.aclose()
    await b.aclose()


async def test_streams_other_than_sockets_use_their_own_methods() -> None:
    left, right = trio.testing.memory_stream_pair()
    io = SocketIO(left)
    assert io.send_nowait(b"ignored") == 0  # no descriptor: send_all is the way
    await io.send_all(b"hello")
    assert await right.receive_some(10) == b"hello"
    await right.send_all(b"world")
    assert await io.receive_some(10) == b"world"


async def test_send_all_within_gives_up_on_a_peer_that_reads_nothing() -> None:
    a, b = _pair()
    io_a = SocketIO(a)
    assert await io_a.send_all_within(b"fits", 1.0)
    assert not await io_a.send_all_within(b"z" * (16 << 20), 0.2)  # nobody reads
    await a.aclose()
    await b.aclose()
