"""The ops HTTP server alone: parsing (sans-I/O) and bounded, garbage-tolerant serving."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from raftd.ops.http import (
    BadRequest,
    HttpLimits,
    HttpServer,
    Request,
    Response,
    parse_request_head,
    render_response,
)
from raftd.ops.server import parse_listen_addr

from .helpers import get, raw_request


def test_parse_request_head() -> None:
    r = parse_request_head(b"GET /readyz?max_lag=5&x=%41 HTTP/1.1\r\nHost: a\r\nX-Y:  z ")
    assert (r.method, r.path, r.version) == ("GET", "/readyz", "HTTP/1.1")
    assert r.query == {"max_lag": "5", "x": "A"}
    assert r.header("HOST") == "a" and r.header("x-y") == "z"
    assert parse_request_head(b"HEAD http://h:1/metrics HTTP/1.0").path == "/metrics"


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"", 400),
        (b"GARBAGE", 400),
        (b"GET / HTTP/1.1 extra", 400),
        (b"G\xffT / HTTP/1.1", 400),
        (b"GET /\x01 HTTP/1.1", 400),
        (b"GET / FTP/1.0", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET * HTTP/1.1", 400),
        (b"GET / HTTP/1.1\r\nno colon here", 400),
        (b"GET / HTTP/1.1\r\nbad name: v", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS ClientHello
    ],
)
def test_parse_rejects_garbage(head: bytes, status: int) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request_head(head)
    assert info.value.status == status


def test_render_response() -> None:
    out = render_response(Response(200, b"hi", "text/plain"))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 2\r\n" in out and b"Connection: close\r\n" in out
    assert out.endswith(b"\r\n\r\nhi")
    assert render_response(Response(200, b"hi"), head_only=True).endswith(b"\r\n\r\n")


def test_parse_listen_addr() -> None:
    assert parse_listen_addr("127.0.0.1:9420") == ("127.0.0.1", 9420)
    assert parse_listen_addr(":9420") == ("0.0.0.0", 9420)
    assert parse_listen_addr("[::1]:0") == ("::1", 0)
    for bad in ("9420", "host:port", "h:70000", "::1:9420"):
        with pytest.raises(ValueError):
            parse_listen_addr(bad)


class Slow:
    """Handlers of /slow wait for ``release``; ``entered`` is set when ``want`` are in."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.count = 0
        self.entered = trio.Event()
        self.release = trio.Event()


SLOW: list[Slow] = []


async def _echo(req: Request) -> Response:
    if req.path == "/boom":
        raise RuntimeError("handler bug")
    if req.path == "/slow":
        slow = SLOW[-1]
        slow.count += 1
        if slow.count >= slow.want:
            slow.entered.set()
        await slow.release.wait()
    return Response(200, f"{req.method} {req.path}".encode())


@asynccontextmanager
async def serving(limits: HttpLimits | None = None) -> AsyncIterator[HttpServer]:
    server = HttpServer("127.0.0.1", 0, _echo, limits or HttpLimits())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        yield server
        nursery.cancel_scope.cancel()


async def test_serves_and_survives_garbage() -> None:
    async with serving() as srv:
        port = srv.port
        assert (await get(port, "/x")).body == b"GET /x"
        assert (await raw_request(port, b"GARBAGE\r\n\r\n")).status == 400
        assert (await raw_request(port, b"\x00\xff" * 100 + b"\r\n\r\n")).status == 400
        assert (await raw_request(port, b"GET / HTTP/2.0\r\n\r\n")).status == 505
        # A truncated head (the client half-closes early) is a 400 too.
        r = await raw_request(port, b"GET / HTTP/1.1\r\nHost:", eof=True)
        assert r.status == 400
        assert (await get(port, "/x", method="POST")).status == 405
        head = await get(port, "/x", method="HEAD")
        assert head.status == 200 and head.body == b"" and head.headers["content-length"] == "7"
        assert (await get(port, "/boom")).status == 500
        # Connect and close without a byte: no answer, no harm.
        s = await trio.open_tcp_stream("127.0.0.1", port)
        await s.aclose()
        assert (await get(port, "/still")).body == b"GET /still"
        assert srv.stats["bad_requests"] >= 4 and srv.stats["errors"] == 1


async def test_reads_are_bounded() -> None:
    limits = HttpLimits(max_head=1024, read_timeout=0.3)
    async with serving(limits) as srv:
        port = srv.port
        big = b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n"
        assert (await raw_request(port, big)).status == 431
        # Endless header lines without the blank line: cut off at max_head.
        assert (await raw_request(port, b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 400)).status == 431
        # A client that sends nothing gets 408 after read_timeout, not a hung task.
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(b"GET / HT")
                data = bytearray()
                while chunk := await stream.receive_some(4096):
                    data += chunk
        assert data.startswith(b"HTTP/1.1 408 ")
        assert (await get(port, "/ok")).status == 200


async def test_connection_limit() -> None:
    limits = HttpLimits(max_connections=2, read_timeout=30)
    slow = Slow(want=2)
    SLOW.append(slow)
    async with serving(limits) as srv:
        port = srv.port
        # Two connections stuck in handlers hold both slots.
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        for s in held:
            await s.send_all(b"GET /slow HTTP/1.1\r\n\r\n")
        with trio.fail_after(5):
            await slow.entered.wait()
        assert (await get(port, "/x")).status == 503
        slow.release.set()
        with trio.fail_after(5):
            for s in held:
                data = bytearray()
                while chunk := await s.receive_some(4096):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200 ")
                await s.aclose()
            # The slots come back once the server has closed those connections.
            while (await get(port, "/x")).status != 200:
                pass
        assert srv.stats["rejected"] >= 1
