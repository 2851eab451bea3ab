"""The local API listener: a unix socket (and optionally TCP), framing, connections.

Security of the listeners:

- The unix socket is created under a restrictive umask (0177), then chmod 0600, and its
  owner is checked: only the daemon's user (and root) can connect. A stale socket file
  left by a dead daemon is replaced; a live one (something answers on it) or a file that
  is not a socket is an error.
- The TCP listener is refused on a non-loopback address unless an API token is
  configured. With a token, every connection must send ``auth`` (token compared with
  ``hmac.compare_digest``) before anything else, within ``auth_timeout``; a wrong token
  gets UNAUTHENTICATED and the connection is closed.

Each connection: a reader (the connection's task) parses varint-delimited frames
(:class:`raftd.wire.framing.FrameDecoder`, limit ``max_frame_size``) and serves each
request, at most ``max_in_flight`` at a time (then it stops reading: back-pressure). The
usual writes (``INLINE_WRITE_OPS``) and the reads need no task: they are started here and
answered from the group's callbacks, or at once (:meth:`NamespaceService.start_write`,
:meth:`NamespaceService.start_read`), their deadlines kept by one timer task per
connection; every other request runs in a task of its own. A
writer task sends the responses in completion order, batching what is ready into one
``send_all`` bounded by ``write_timeout``. The answers a group hands out for one Ready
(its applied writes, the reads it releases) skip that task when the connection has
nothing queued: they are held and written together, once per connection, when the group
is done, as far as the socket takes them at once; the rest goes through the writer task,
in order. Bad input is answered, not fatal to the
daemon: an undecodable request gets INVALID_ARGUMENT (id 0) and the connection goes on;
an oversized frame gets TOO_LARGE and a malformed length prefix INVALID_ARGUMENT, then the
connection closes (the byte stream cannot be resynchronized).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import os
import socket as stdsocket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from raftd.api.deadlines import DeadlineHeap
from raftd.api.errors import ApiError
from raftd.api.service import (
    INLINE_WRITE_OPS,
    READ_OPS,
    WRITE_OPS,
    InlineRead,
    InlineWrite,
    NamespaceService,
)
from raftd.netio.sockio import SocketIO
from raftd.transport.fastlock import take_all
from raftd.wire.framing import FrameDecoder, FrameError, FrameTooLarge, encode_frame
from raftd.wire.pb import api_pb2 as apb

if TYPE_CHECKING:
    from trio_typing import TaskStatus

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "ApiConfigError",
    "ApiServer",
    "ApiServerConfig",
    "open_unix_listener",
    "parse_request",
    "parse_tcp_address",
]

log = logging.getLogger("raftd.api.server")

#: A request served without a task of its own (its deadline kept by the connection).
InlineRequest = InlineWrite | InlineRead

C = apb.Error
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024
#: sun_path is 108 bytes on Linux (104 on BSDs), including the terminating NUL.
MAX_SOCKET_PATH = 103


class ApiConfigError(Exception):
    """The API listener cannot be set up as configured; the message says why."""


@dataclass(frozen=True, slots=True)
class ApiServerConfig:
    socket_path: Path | None
    tcp: str | None = None  # "host:port"
    token: str | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_connections: int = 4096
    max_in_flight: int = 1024  # requests per connection
    write_timeout: float = 30.0
    auth_timeout: float = 10.0
    read_chunk: int = 64 * 1024


def parse_request(frame: bytes) -> apb.Request:
    """Decode one request frame. Raises :class:`ApiError` (INVALID_ARGUMENT) and
    nothing else, whatever the bytes."""
    try:
        return apb.Request.FromString(frame)
    except Exception as exc:  # DecodeError, or anything protobuf throws on garbage
        raise ApiError(C.INVALID_ARGUMENT, f"undecodable request: {exc}") from None


def parse_tcp_address(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port). Raises ApiConfigError."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ApiConfigError(f"api_tcp: {addr!r} is not host:port")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def open_unix_listener(path: Path, backlog: int = 4096) -> trio.SocketListener:
    """Listen on ``path`` with mode 0600 (see the module doc). Raises ApiConfigError."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ApiConfigError(
            f"socket path {path} is too long for a unix socket ({len(os.fsencode(path))} > "
            f"{MAX_SOCKET_PATH} bytes): use --socket with a shorter path"
        )
    await trio.Path(path.parent).mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise ApiConfigError(f"{path} exists and is not a socket: not replacing it")
        probe = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            with trio.move_on_after(1.0):
                await probe.connect(str(path))
                raise ApiConfigError(f"{path}: another process is serving on this socket")
        except OSError:
            pass  # nobody listens: a stale socket of a dead daemon
        finally:
            probe.close()
        os.unlink(path)
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        await sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ApiConfigError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    owner = os.stat(path).st_uid
    if owner != os.geteuid():
        sock.close()
        raise ApiConfigError(f"{path} is owned by uid {owner}, not by this process")
    sock.listen(backlog)
    return trio.SocketListener(sock)


class ApiServer:
    """Serves the API of every namespace of a daemon (see the module doc)."""

    def __init__(self, services: Mapping[str, NamespaceService], config: ApiServerConfig) -> None:
        if not services:
            raise ValueError("an API server needs at least one namespace")
        self.services = dict(services)
        self.default_namespace = next(iter(services))
        # Answers given while a group hands out the results of one Ready are held per
        # connection and written once per connection when it is done (see
        # _Connection.send_nowait): one system call for a batch, no writer task step.
        self._holding = 0
        self._held: list[_Connection] = []
        for svc in self.services.values():
            svc.group.add_answer_listener(self._hold_answers, self._send_held_answers)
        self.config = config
        self.connections = 0
        self.stats = {
            "connections": 0,
            "requests": 0,
            "bad_frames": 0,
            "refused": 0,
            # Answers held during a group's Ready, and the writes that sent them.
            "held_answers": 0,
            "held_writes": 0,
        }
        self.tcp_addrs: list[tuple[str, int]] = []
        if config.tcp:
            host, _ = parse_tcp_address(config.tcp)
            if not is_loopback(host) and not config.token:
                raise ApiConfigError(
                    f"api_tcp {config.tcp}: a non-loopback API listener needs an API token "
                    "(api_token_file)"
                )

    def service_for(self, namespace: str) -> NamespaceService | None:
        return self.services.get(namespace or self.default_namespace)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        path = cfg.socket_path
        unix: trio.SocketListener | None = None
        tcp: list[trio.SocketListener] = []
        try:
            if path is not None:
                unix = await open_unix_listener(path)
            if cfg.tcp:
                host, port = parse_tcp_address(cfg.tcp)
                try:
                    tcp = list(await trio.open_tcp_listeners(port, host=host))
                except OSError as exc:
                    raise ApiConfigError(f"api_tcp {cfg.tcp}: {exc.strerror}") from None
                for lst in tcp:
                    name = lst.socket.getsockname()
                    self.tcp_addrs.append((name[0], name[1]))
            async with trio.open_nursery() as nursery:
                if unix is not None:
                    nursery.start_soon(
                        partial(trio.serve_listeners, partial(self._handle, tcp=False), [unix])
                    )
                if tcp:
                    nursery.start_soon(
                        partial(trio.serve_listeners, partial(self._handle, tcp=True), tcp)
                    )
                if path is not None:
                    log.info("API listening on %s", path)
                for h, p in self.tcp_addrs:
                    log.info("API listening on tcp %s:%d", h, p)
                task_status.started()
                await trio.sleep_forever()
        finally:
            if unix is not None and path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()

    async def _handle(self, stream: trio.abc.Stream, *, tcp: bool) -> None:
        self.stats["connections"] += 1
        if self.connections >= self.config.max_connections:
            self.stats["refused"] += 1
            err = ApiError(C.UNAVAILABLE, "too many connections").response()
            with trio.move_on_after(1.0), contextlib.suppress(Exception):
                await stream.send_all(encode_frame(err.SerializeToString()))
            with contextlib.suppress(Exception):
                await trio.aclose_forcefully(stream)
            return
        self.connections += 1
        log.debug("API connection %d opened", self.stats["connections"])
        try:
            conn = _Connection(self, stream, needs_auth=tcp and bool(self.config.token))
            await conn.serve()
        except Exception:
            log.exception("API connection failed")
        finally:
            self.connections -= 1
            log.debug("API connection closed (%d open)", self.connections)

    def _hold_answers(self) -> None:
        self._holding += 1

    def _send_held_answers(self) -> None:
        self._holding -= 1
        if self._holding or not self._held:
            return
        held, self._held = self._held, []
        for conn in held:
            conn.send_held()


class _Connection:
    def __init__(self, server: ApiServer, stream: trio.abc.Stream, *, needs_auth: bool) -> None:
        self.server = server
        self.stream = stream
        self.io = SocketIO(stream)
        self.config = server.config
        self.authenticated = not needs_auth
        self.scope = trio.CancelScope()
        self.send_ch, self.recv_ch = trio.open_memory_channel[bytes](256)
        self.in_flight = trio.Semaphore(self.config.max_in_flight)
        self.pending: dict[int, bool] = {}  # request id -> is a write
        self.watches: dict[int, trio.CancelScope] = {}
        self.writing = False
        #: Frames handed to the writer task and not yet taken by it (some may be in
        #: transit to it, outside the channel's buffer).
        self.queued = 0
        #: Answers held while the server holds answers (see send_nowait).
        self.held: list[bytes] = []
        self.writer_done = trio.Event()
        self.watches_changed = trio.Event()
        self.nursery: trio.Nursery | None = None
        #: Requests answered from callbacks, by deadline.
        self.deadlines = DeadlineHeap()

    async def serve(self) -> None:
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self.deadlines.run)
                    if not self.authenticated:
                        nursery.start_soon(self._auth_timer)
                    await self._read_loop()
                    # End of input: stop the watches, let the requests in flight answer.
                    for scope in list(self.watches.values()):
                        scope.cancel()
                    await take_all(self.in_flight, self.config.max_in_flight)
                    while self.watches:
                        self.watches_changed = trio.Event()
                        await self.watches_changed.wait()
                    await self.send_ch.aclose()
                    await self.writer_done.wait()
                    nursery.cancel_scope.cancel()
        finally:
            self.deadlines.abandon_all()
            await self._close()

    def _inline_reply(self, resp: apb.Response) -> None:
        self.pending.pop(resp.id, None)
        self.in_flight.release()
        self.send_nowait(resp)

    async def _close(self) -> None:
        with trio.move_on_after(0.5) as guard:
            guard.shield = True
            if self.pending and not self.scope.cancel_called and not self.writing:
                # Cancelled from outside: the daemon is stopping. Say so to every request
                # still waiting rather than just dropping the connection.
                frames = [
                    encode_frame(
                        ApiError(
                            C.UNAVAILABLE,
                            "daemon shutting down",
                            indeterminate=is_write,
                        )
                        .response(rid)
                        .SerializeToString()
                    )
                    for rid, is_write in self.pending.items()
                ]
                with contextlib.suppress(Exception):
                    await self.stream.send_all(b"".join(frames))
            with contextlib.suppress(Exception):
                await self.stream.aclose()

    async def _auth_timer(self) -> None:
        await trio.sleep(self.config.auth_timeout)
        if not self.authenticated:
            self.scope.cancel()

    async def _writer(self) -> None:
        try:
            await self._write_loop()
        finally:
            self.writer_done.set()

    async def _write_loop(self) -> None:
        timeout = self.config.write_timeout
        async for data in self.recv_ch:
            parts = [data]
            while True:
                try:
                    parts.append(self.recv_ch.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self.queued -= len(parts)
            self.writing = True
            try:
                if not await self.io.send_all_within(b"".join(parts), timeout):
                    log.info("API client does not read its responses: closing the connection")
                    self.scope.cancel()
                    return
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.writing = False
                self.scope.cancel()
                return
            self.writing = False

    async def send(self, resp: apb.Response) -> None:
        self.queued += 1
        await self._send_frame(self._frame(resp))

    def send_nowait(self, resp: apb.Response) -> None:
        """:meth:`send` from code that cannot wait. While the server holds answers (a
        group is handing out one Ready's results) and nothing of this connection is
        queued for its writer task or being written, the frame is held, to be written
        with the others of the batch by :meth:`send_held`; otherwise it is queued for the
        writer task (a full queue hands it to a task of its own)."""
        frame = self._frame(resp)
        if self.server._holding and (self.held or not (self.queued or self.writing)):
            if not self.held:
                self.server._held.append(self)
            self.held.append(frame)
            return
        self._queue(frame)

    def send_held(self) -> None:
        """Write the held answers in one system call, as far as the socket takes them
        now; the rest goes to the writer task, in order. Should anything of this
        connection be queued or half written, they go behind it instead: a write here
        would tear the stream."""
        stats = self.server.stats
        stats["held_answers"] += len(self.held)
        stats["held_writes"] += 1
        data = b"".join(self.held)
        self.held.clear()
        if self.queued or self.writing:
            self._queue(data)
            return
        try:
            sent = self.io.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.scope.cancel()
            return
        if sent < len(data):
            self._queue(data[sent:])

    def _queue(self, frame: bytes) -> None:
        self.queued += 1
        try:
            self.send_ch.send_nowait(frame)
        except trio.WouldBlock:
            if self.nursery is not None:
                self.nursery.start_soon(self._send_frame, frame)
            else:
                self.queued -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.queued -= 1

    async def _send_frame(self, frame: bytes) -> None:
        """Queue ``frame`` (already counted in :attr:`queued`) for the writer task; if the
        writer is gone (the connection is closing), drop it."""
        try:
            await self.send_ch.send(frame)
        except BaseException as exc:
            self.queued -= 1
            if not isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError)):
                raise

    def _frame(self, resp: apb.Response) -> bytes:
        data = resp.SerializeToString()
        if len(data) > self.config.max_frame_size:
            data = (
                ApiError(
                    C.TOO_LARGE,
                    f"response of {len(data)} bytes exceeds the frame limit of "
                    f"{self.config.max_frame_size}: ask for less (e.g. a range limit)",
                )
                .response(resp.id)
                .SerializeToString()
            )
        return encode_frame(data)

    async def _final(self, code: int, message: str, request_id: int = 0) -> None:
        """Answer a fatal error (framing, authentication), flush, close."""
        await self.send(ApiError(code, message).response(request_id))
        await self.send_ch.aclose()
        with trio.move_on_after(1.0):
            await self.writer_done.wait()
        self.scope.cancel()

    async def _read_loop(self) -> None:
        decoder = FrameDecoder(self.config.max_frame_size)
        chunk = self.config.read_chunk
        while True:
            try:
                data = await self.io.receive_some(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                if not decoder.at_boundary:
                    log.debug("API client closed inside a frame (%d bytes)", decoder.buffered)
                return
            try:
                frames = decoder.feed(data)
            except FrameTooLarge as exc:
                self.server.stats["bad_frames"] += 1
                await self._final(C.TOO_LARGE, str(exc))
                return
            except FrameError as exc:
                self.server.stats["bad_frames"] += 1
                await self._final(C.INVALID_ARGUMENT, f"malformed frame: {exc}")
                return
            for frame in frames:
                await self._dispatch(frame)

    async def _dispatch(self, frame: bytes) -> None:
        self.server.stats["requests"] += 1
        try:
            req = parse_request(frame)
        except ApiError as exc:
            self.server.stats["bad_frames"] += 1
            await self.send(exc.response(0))
            return
        op = req.WhichOneof("op")
        if op == "auth":
            await self._auth(req)
            return
        if not self.authenticated:
            await self.send(
                ApiError(C.UNAUTHENTICATED, "send auth with the API token first").response(req.id)
            )
            return
        svc = self.server.service_for(req.namespace)
        if svc is None:
            await self.send(
                ApiError(
                    C.UNKNOWN_NAMESPACE,
                    f"namespace {req.namespace!r} is not served by this daemon "
                    f"(serving: {', '.join(self.server.services)})",
                ).response(req.id)
            )
            return
        assert self.nursery is not None
        if op == "watch":
            if req.id in self.watches:
                await self.send(
                    ApiError(C.INVALID_ARGUMENT, f"watch id {req.id} is in use").response(req.id)
                )
                return
            scope = trio.CancelScope()
            self.watches[req.id] = scope
            self.nursery.start_soon(self._watch, svc, req, scope)
            return
        if op == "snapshot":
            self.nursery.start_soon(self._snapshot, svc, req)
            return
        if op == "watch_cancel":
            wid = req.watch_cancel.watch_id
            wscope = self.watches.get(wid)
            if wscope is not None:
                wscope.cancel()
            resp = apb.Response(id=req.id)
            resp.watch_cancel.found = wscope is not None
            await self.send(resp)
            return
        try:
            # Without a scheduler round when there is room (the usual case); the reader
            # still yields at its socket (SocketIO's checkpoint every few reads).
            self.in_flight.acquire_nowait()
        except trio.WouldBlock:
            await self.in_flight.acquire()
        self.pending[req.id] = op in WRITE_OPS
        log.debug("API request %d: %s (timeout %d ms)", req.id, op, req.timeout_ms)
        w: InlineRequest | None = None
        if op in INLINE_WRITE_OPS:
            w = svc.start_write(req, self._inline_reply, self.nursery.start_soon)
        elif op in READ_OPS:
            w = svc.start_read(req, self._inline_reply, self.nursery.start_soon)
        if w is not None:
            if not w.finished:
                self.deadlines.track(w)
            return
        self.nursery.start_soon(self._run, svc, req)

    async def _auth(self, req: apb.Request) -> None:
        token = self.server.config.token
        if token is not None and not self.authenticated:
            given = req.auth.token.encode()
            if not hmac.compare_digest(given, token.encode()):
                await self._final(C.UNAUTHENTICATED, "wrong API token", req.id)
                return
        self.authenticated = True
        resp = apb.Response(id=req.id)
        resp.auth.SetInParent()
        await self.send(resp)

    async def _run(self, svc: NamespaceService, req: apb.Request) -> None:
        started = trio.current_time()
        try:
            if req.WhichOneof("op") == "status" and req.status.all_namespaces:
                deadline = trio.current_time() + svc.timeout_of(req)
                try:
                    groups = [
                        await s.status_for(req.status, deadline)
                        for s in self.server.services.values()
                    ]
                except ApiError as exc:
                    resp = exc.response(req.id)
                else:
                    resp = apb.Response(id=req.id, revision=svc.group.sm.revision())
                    resp.status.groups.extend(groups)
            else:
                resp = await svc.handle(req)
        except Exception as exc:
            log.exception("API request %s failed", req.WhichOneof("op"))
            resp = ApiError(C.INTERNAL, f"internal error: {exc!r}").response(req.id)
        finally:
            self.in_flight.release()
        self.pending.pop(req.id, None)
        elapsed = trio.current_time() - started
        late = elapsed - svc.timeout_of(req)
        # The deadline bounds every wait on the request path: an answer this late means
        # the event loop itself was held up (see the watchdog's warnings). The code's
        # name is only looked up when something is logged (this runs for every request).
        if late > 0.5 or log.isEnabledFor(logging.DEBUG):
            code = C.Code.Name(resp.error.code)
            log.debug("API response %d: %s in %.3fs", req.id, code, elapsed)
            if late > 0.5:
                log.warning(
                    "API %s answered %.1fs after its deadline (%s)",
                    req.WhichOneof("op"),
                    late,
                    code,
                )
        await self.send(resp)

    async def _snapshot(self, svc: NamespaceService, req: apb.Request) -> None:
        try:
            await svc.snapshot(req, self.send)
        except ApiError as exc:
            await self.send(exc.response(req.id))
        except Exception as exc:
            log.exception("snapshot failed")
            await self.send(ApiError(C.INTERNAL, f"internal error: {exc!r}").response(req.id))

    async def _watch(
        self, svc: NamespaceService, req: apb.Request, scope: trio.CancelScope
    ) -> None:
        error: ApiError | None = None
        try:
            with scope:
                await svc.watch(req, self.send)
        except ApiError as exc:
            error = exc
        except Exception as exc:
            log.exception("watch failed")
            error = ApiError(C.INTERNAL, f"internal error: {exc!r}")
        finally:
            self.watches.pop(req.id, None)
            self.watches_changed.set()
        final = apb.Response(id=req.id, revision=svc.group.sm.revision())
        final.watch.canceled = True
        if error is not None:
            final.error.CopyFrom(error.to_pb())
        await self.send(final)
