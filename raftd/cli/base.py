"""The root ``raftd`` command group, exit codes, and what every client command shares:
the ``--socket``/``--namespace``/``-o``/``--timeout`` options, errors mapped to exit codes,
and output helpers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INDETERMINATE = 4


@click.group()
@click.version_option(package_name="raftd")
def main() -> None:
    """raftd: a libp2p-native Raft consensus daemon."""


def given(ctx: click.Context, names: list[str]) -> dict[str, Any]:
    """Options the user actually gave on the command line (not defaults)."""
    out: dict[str, Any] = {}
    for name in names:
        src = ctx.get_parameter_source(name)
        if src == click.core.ParameterSource.COMMANDLINE:
            value = ctx.params[name]
            if isinstance(value, tuple):
                value = list(value)
            out[name] = value
    return out


# ---------------------------------------------------------------------------------------
# Client commands: they talk to a running daemon over its API socket. They import only
# the light client (protobuf, no libp2p), so each invocation starts in ~0.2 s.
# ---------------------------------------------------------------------------------------


class Ctx:
    """Options shared by the client commands."""

    def __init__(
        self, socket: str | None, namespace: str | None, output: str, timeout: float | None
    ):
        self.socket = socket
        self.namespace = namespace
        self.output = output
        self.timeout = timeout
        self.namespace_given = namespace is not None

    def client(self) -> Any:
        from raftd.client import Client

        return Client(self.socket, namespace=self.namespace, timeout=self.timeout)

    @property
    def json(self) -> bool:
        return self.output == "json"


def client_options(
    fn: Any = None, *, timeout_help: str = "Request deadline in seconds."
) -> Callable[..., Any]:
    """``--socket``, ``--namespace``, ``-o``, ``--timeout`` on a client command; the
    command receives a :class:`Ctx` as ``opts``. Use bare (``@client_options``) or
    with a command-specific ``--timeout`` help (``@client_options(timeout_help=...)``)."""
    import functools

    if fn is None:
        return functools.partial(client_options, timeout_help=timeout_help)

    @click.option(
        "--socket",
        "socket_",
        envvar="RAFTD_SOCKET",
        metavar="PATH|tcp://HOST:PORT",
        help="Daemon API socket (env RAFTD_SOCKET).",
    )
    @click.option(
        "--namespace", "-n", envvar="RAFTD_NAMESPACE", help="Raft group (env RAFTD_NAMESPACE)."
    )
    @click.option(
        "-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
    )
    @click.option("--timeout", type=float, help=timeout_help)
    @functools.wraps(fn)
    def wrapper(
        socket_: str | None,
        namespace: str | None,
        output: str,
        timeout: float | None,
        **kw: Any,
    ) -> Any:
        opts = Ctx(socket_, namespace, output, timeout)
        return _run_client(fn, opts, kw)

    return wrapper


def _exit_code(exc: BaseException) -> int:
    from raftd.client import (
        Compacted,
        FailedPrecondition,
        InvalidArgument,
        NotFound,
        RaftdError,
        TooLarge,
        Unauthenticated,
        UnknownNamespace,
    )

    if isinstance(exc, RaftdError):
        if exc.indeterminate:
            return EXIT_INDETERMINATE
        if isinstance(exc, NotFound | FailedPrecondition | Compacted):
            return EXIT_FAILED
        if isinstance(exc, InvalidArgument | UnknownNamespace | Unauthenticated | TooLarge):
            return EXIT_USAGE
        return EXIT_UNAVAILABLE
    return EXIT_UNAVAILABLE


def _run_client(fn: Any, opts: Ctx, kw: dict[str, Any]) -> None:
    from raftd.client import RaftdError

    try:
        code = fn(opts, **kw)
    except RaftdError as exc:
        click.echo(f"raftd: {exc}", err=True)
        sys.exit(_exit_code(exc))
    except (ValueError, TypeError) as exc:
        click.echo(f"raftd: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or EXIT_OK)


def to_bytes(s: str) -> bytes:
    return s.encode("utf-8", errors="surrogateescape")


def to_text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


def emit(opts: Ctx, obj: Any, text: str | None = None) -> None:
    import json

    if opts.json:
        click.echo(json.dumps(obj))
    elif text is not None:
        click.echo(text)
