"""Test helpers: a raw HTTP/1.1 client on trio sockets and a Prometheus text parser."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


def parse_reply(data: bytes) -> Reply:
    """Parse a complete HTTP/1.1 response (the server closes after each one)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no end of head in {data[:200]!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"]) or not body, (len(body), headers)
    return Reply(int(status), headers, body)


async def raw_request(
    port: int, data: bytes, host: str = "127.0.0.1", *, eof: bool = False
) -> Reply:
    """Send ``data`` as is (then half-close if ``eof``), read until the server closes;
    bounded by 10 s."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            if data:
                await stream.send_all(data)
            if eof:
                await stream.send_eof()
            buf = bytearray()
            while chunk := await stream.receive_some(65536):
                buf += chunk
    return parse_reply(bytes(buf))


async def get(port: int, path: str, host: str = "127.0.0.1", method: str = "GET") -> Reply:
    req = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: test\r\n\r\n"
    return await raw_request(port, req.encode(), host)


def parse_metrics(text: str) -> dict[str, dict[Labels, float]]:
    """Sample name -> {labels: value}, parsed with prometheus_client's parser."""
    out: dict[str, dict[Labels, float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[frozenset(s.labels.items())] = float(s.value)
    return out


def sample(metrics: dict[str, dict[Labels, float]], name: str, **labels: str) -> float:
    """The value of the one series of ``name`` with exactly these labels."""
    series = metrics.get(name)
    assert series is not None, f"no metric {name}; have {sorted(metrics)[:50]}"
    key = frozenset(labels.items())
    assert key in series, f"{name}{labels} not in {list(series)}"
    return series[key]


async def scrape(port: int) -> dict[str, dict[Labels, float]]:
    r = await get(port, "/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return parse_metrics(r.text)


async def poll_until(check: Callable[[], Awaitable[bool]], *, interval: float = 0.05) -> None:
    """Poll ``check`` until it returns True. Unbounded (trio style): the caller bounds it
    with ``trio.fail_after``."""
    # Polling is the point: the condition is an HTTP answer, there is no event to await.
    while not await check():  # noqa: ASYNC110
        await trio.sleep(interval)
