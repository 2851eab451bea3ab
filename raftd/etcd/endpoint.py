"""The etcd endpoint's settings: ``HOST:PORT`` parsing, the loopback rule, TLS files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raftd.api.server import is_loopback

__all__ = ["EndpointError", "TlsFiles", "is_loopback", "load_tls", "parse_listen"]


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM contents: the server certificate chain and key, and optionally a CA that
    client certificates must chain to (then clients without one are refused)."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None


class EndpointError(ValueError):
    """A bad etcd endpoint setting; the message says which and why."""


def parse_listen(value: str) -> tuple[str, int]:
    """``127.0.0.1:2379``, ``[::1]:2379`` or ``localhost:2379`` -> (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise EndpointError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:2379)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise EndpointError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:2379")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise EndpointError(f"{value!r}: port {port} is out of range")
    return host, port


def load_tls(cert: Path, key: Path, client_ca: Path | None) -> TlsFiles:
    """Read the PEM files (EndpointError naming the file if one cannot be read)."""

    def read(p: Path, what: str) -> bytes:
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise EndpointError(f"{what} {p}: {exc.strerror}") from None
        if b"-----BEGIN" not in data:
            raise EndpointError(f"{what} {p} is not a PEM file")
        return data

    return TlsFiles(
        cert=read(cert, "etcd_cert_file"),
        key=read(key, "etcd_key_file"),
        client_ca=read(client_ca, "etcd_trusted_ca_file") if client_ca is not None else None,
    )
