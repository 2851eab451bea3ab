"""A deliberately small HTTP/1.1 server on trio for the operations endpoints.

Scope: ``GET``/``HEAD`` of a few fixed paths by monitoring systems (Prometheus, Docker and
Kubernetes probes, ``curl``). One request per connection: the response always carries
``Connection: close`` and the server closes after it, so there is no keep-alive,
pipelining, chunked encoding or request body handling to get wrong.

Contracts:

- Every read is bounded in size (:attr:`HttpLimits.max_head` bytes of request head) and in
  time (:attr:`HttpLimits.read_timeout` for the whole head); every write is bounded in
  time (:attr:`HttpLimits.write_timeout`).
- Garbage (no request line, bad method token, non-ASCII bytes, an oversized head, a bad
  header line) gets ``400 Bad Request`` (``431`` for an oversized head, ``408`` for a
  head that does not arrive in time) and the server keeps serving.
- At most :attr:`HttpLimits.max_connections` connections are handled at once; beyond
  that a connection gets ``503`` at once, without reading its request.
- A handler exception becomes ``500`` (and is logged); it never reaches the server's
  nursery.

The parsing is sans-I/O (:func:`parse_request_head`), so it is tested without sockets.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = [
    "BadRequest",
    "Handler",
    "HttpLimits",
    "HttpServer",
    "Request",
    "Response",
    "parse_request_head",
    "render_response",
]

log = logging.getLogger("raftd.ops.http")

REASONS: dict[int, str] = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION_RE = re.compile(rb"^HTTP/1\.[01]$")
_MAX_HEADERS = 100


class BadRequest(Exception):
    """The request cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head. ``path`` is percent-decoded; ``query`` keeps the last value
    of each parameter; header names are lower case."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    version: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_head: int = 8192
    read_timeout: float = 5.0
    write_timeout: float = 10.0
    max_connections: int = 64
    linger_timeout: float = 0.5  # reading what the client still sends before closing
    linger_bytes: int = 64 * 1024


def parse_request_head(head: bytes) -> Request:
    """Parse the request line and header lines (``head`` without the blank line).

    Raises :class:`BadRequest` (400, or 505 for an HTTP version other than 1.0/1.1)."""
    try:
        head.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400, "request head is not ASCII") from None
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN_RE.match(method):
        raise BadRequest(400, "malformed method")
    if not version.startswith(b"HTTP/"):
        raise BadRequest(400, "malformed HTTP version")
    if not _VERSION_RE.match(version):
        raise BadRequest(505, f"unsupported version {version.decode()}")
    if not target or any(c <= 0x20 or c == 0x7F for c in target):
        raise BadRequest(400, "malformed request target")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN_RE.match(name):
            raise BadRequest(400, "malformed header line")
        headers.append((name.decode().lower(), value.strip(b" \t").decode()))
        if len(headers) > _MAX_HEADERS:
            raise BadRequest(431, "too many header lines")
    t = target.decode()
    # Origin form ("/path?q"), or absolute form ("http://host/path", RFC 9112 §3.2.2).
    if not t.startswith(("/", "http://", "https://")):
        raise BadRequest(400, "request target must be a path")
    split = urlsplit(t)
    try:
        query = dict(parse_qsl(split.query, keep_blank_values=True, strict_parsing=False))
    except ValueError:
        raise BadRequest(400, "malformed query string") from None
    return Request(
        method=method.decode(),
        target=t,
        path=unquote(split.path) or "/",
        query=query,
        version=version.decode(),
        headers=tuple(headers),
    )


def render_response(resp: Response, *, head_only: bool = False) -> bytes:
    """The response bytes: status line, ``Content-Type``, ``Content-Length``,
    ``Connection: close``, extra headers, then the body (omitted for HEAD)."""
    reason = REASONS.get(resp.status, "Unknown")
    lines = [
        f"HTTP/1.1 {resp.status} {reason}",
        f"Content-Type: {resp.content_type}",
        f"Content-Length: {len(resp.body)}",
        "Connection: close",
        "Cache-Control: no-store",
    ]
    lines.extend(f"{k}: {v}" for k, v in resp.headers)
    out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return out if head_only else out + resp.body


def error_response(status: int, why: str) -> Response:
    return Response(status, f"{REASONS.get(status, 'Error')}: {why}\n".encode())


@dataclass
class HttpServer:
    """Serve ``handler`` on ``host:port`` (port 0: any free port; see :attr:`port`).

    ``run()`` is a long-lived component: ``await nursery.start(server.run)`` returns once
    the listeners are bound (so a bind failure raises from ``start``); it serves until
    cancelled, every connection task living in the server's own nursery."""

    host: str
    port: int
    handler: Handler
    limits: HttpLimits = field(default_factory=HttpLimits)
    stats: dict[str, int] = field(
        default_factory=lambda: {"requests": 0, "bad_requests": 0, "rejected": 0, "errors": 0}
    )
    _slots: trio.Semaphore | None = None

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """:meth:`bind`, then :meth:`serve` until cancelled."""
        listeners = await self.bind()
        await self.serve(listeners, task_status=task_status)

    async def bind(self) -> list[trio.SocketListener]:
        """Open the listening sockets and set :attr:`port`. Raises OSError (unwrapped)."""
        listeners = list(await trio.open_tcp_listeners(self.port, host=self.host))
        self.port = int(listeners[0].socket.getsockname()[1])
        return listeners

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on ``listeners`` (from :meth:`bind`) until cancelled; closes them."""
        self._slots = trio.Semaphore(self.limits.max_connections)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._connection, listeners)
                task_status.started()
        finally:
            for ln in listeners:
                ln.socket.close()

    async def _connection(self, stream: trio.SocketStream) -> None:
        # serve_listeners runs this in its nursery (owned by run()); nothing escapes.
        assert self._slots is not None
        try:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                self.stats["rejected"] += 1
                await self._send(stream, error_response(503, "too many connections"), False)
                return
            try:
                await self._serve_one(stream)
            finally:
                self._slots.release()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:
            self.stats["errors"] += 1
            log.exception("ops http: connection failed")
        finally:
            await self._close(stream)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        lim = self.limits
        head: bytes | None = None
        status, why = 400, "empty request"
        buf = bytearray()
        with trio.move_on_after(lim.read_timeout) as scope:
            while True:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    if end > lim.max_head:
                        status, why = 431, f"request head over {lim.max_head} bytes"
                    else:
                        head = bytes(buf[:end])
                    break
                if len(buf) > lim.max_head + 4:
                    status, why = 431, f"request head over {lim.max_head} bytes"
                    break
                chunk = await stream.receive_some(4096)
                if not chunk:
                    if not buf:
                        return  # a connect-and-close probe: nothing to answer
                    why = "request head truncated"
                    break
                buf += chunk
        if scope.cancelled_caught:
            status, why = 408, f"no complete request head within {lim.read_timeout}s"
        req: Request | None = None
        if head is not None:
            try:
                req = parse_request_head(head)
            except BadRequest as exc:
                status, why = exc.status, exc.why
        if req is None:
            self.stats["bad_requests"] += 1
            await self._send(stream, error_response(status, why), False)
            return
        self.stats["requests"] += 1
        if req.method not in ("GET", "HEAD"):
            resp = Response(405, b"Method Not Allowed\n", headers=(("Allow", "GET, HEAD"),))
        else:
            try:
                resp = await self.handler(req)
            except Exception:
                self.stats["errors"] += 1
                log.exception("ops http: handler for %s failed", req.path)
                resp = error_response(500, "handler failed")
        await self._send(stream, resp, req.method == "HEAD")

    async def _send(self, stream: trio.SocketStream, resp: Response, head_only: bool) -> None:
        with trio.move_on_after(self.limits.write_timeout):
            await stream.send_all(render_response(resp, head_only=head_only))
            # Half-close, then read (bounded) what the client may still be sending, so the
            # close does not reset the connection and destroy the unread response.
            await stream.send_eof()
            with trio.move_on_after(self.limits.linger_timeout):
                left = self.limits.linger_bytes
                while left > 0:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    left -= len(chunk)

    @staticmethod
    async def _close(stream: trio.SocketStream) -> None:
        quiet = contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError)
        with trio.CancelScope(shield=True), trio.move_on_after(1.0), quiet:
            await stream.aclose()
