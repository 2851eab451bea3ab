"""Daemon configuration: flags, then ``RAFTD_*`` environment variables, then an optional
TOML file, then defaults (first found wins).

Every field is validated at start; a bad value raises :class:`ConfigError` naming the
field and where the value came from.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from raftd.runtime.presets import PRESETS, Preset

DEFAULT_PORT = 7420
DEFAULT_LISTEN = f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"
NAMESPACE_RE = re.compile(r"/raft(/[A-Za-z0-9._-]+)+")
DISCOVERY_KINDS = ("mdns", "dht", "pubsub", "pex")


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and its source."""


def validate_namespace(ns: str) -> str:
    """Namespaces look like ``/raft/<name>[/<name>...]`` of ``[A-Za-z0-9._-]``."""
    if not NAMESPACE_RE.fullmatch(ns):
        raise ConfigError(
            f"namespace {ns!r} is invalid: it must start with /raft/ and contain only "
            "segments of letters, digits, '.', '_' or '-' (e.g. /raft/cron)"
        )
    return ns


@dataclass(slots=True)
class DaemonConfig:
    """Everything ``raftd run`` needs. Lists are replaced, not merged, across sources."""

    data_dir: Path
    namespaces: list[str] = field(default_factory=lambda: ["/raft/default"])
    listen: list[str] = field(default_factory=lambda: [DEFAULT_LISTEN])
    preset: str = "local"
    peers: list[str] = field(default_factory=list)
    socket: Path | None = None
    api_tcp: str | None = None
    api_token_file: Path | None = None
    discovery: list[str] = field(default_factory=lambda: ["mdns", "pubsub", "pex"])
    bootstrap: list[str] = field(default_factory=list)
    expect: int = 0
    voter_cap: int = 5
    key_file: Path | None = None
    next_key_file: Path | None = None
    previous_key_file: Path | None = None
    psk_file: Path | None = None
    metrics: str | None = None
    log_format: str = "text"
    log_level: str = "info"
    leave_on_shutdown: bool = False
    etcd_listen: str | None = None
    etcd_namespace: str | None = None
    etcd_cert_file: Path | None = None
    etcd_key_file: Path | None = None
    etcd_trusted_ca_file: Path | None = None

    @property
    def socket_path(self) -> Path:
        return self.socket if self.socket is not None else self.data_dir / "raftd.sock"

    @property
    def timing(self) -> Preset:
        return PRESETS[self.preset]

    def validate(self) -> None:
        if not self.namespaces:
            raise ConfigError("namespace: at least one namespace is required")
        seen: set[str] = set()
        for ns in self.namespaces:
            validate_namespace(ns)
            if ns in seen:
                raise ConfigError(f"namespace: {ns!r} is given twice")
            seen.add(ns)
        if self.preset not in PRESETS:
            raise ConfigError(f"preset: {self.preset!r} is not one of {', '.join(sorted(PRESETS))}")
        for addr in self.listen + self.peers + self.bootstrap:
            if not addr.startswith("/"):
                raise ConfigError(f"listen/peer/bootstrap: {addr!r} is not a multiaddr")
        for p in self.peers:
            if "/p2p/" not in p:
                raise ConfigError(f"peer: {p!r} must end in /p2p/<peer id>")
        for d in self.discovery:
            if d not in DISCOVERY_KINDS:
                raise ConfigError(f"discovery: {d!r} is not one of {', '.join(DISCOVERY_KINDS)}")
        if self.voter_cap < 1 or self.voter_cap % 2 == 0:
            raise ConfigError(f"voter_cap: {self.voter_cap} must be a positive odd number")
        if self.expect < 0:
            raise ConfigError(f"expect: {self.expect} must be >= 0")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format: {self.log_format!r} must be text or json")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"log_level: {self.log_level!r} is not a log level")
        self._validate_etcd()

    def _validate_etcd(self) -> None:
        from raftd.etcd.endpoint import EndpointError, is_loopback, parse_listen

        tls = self.etcd_cert_file is not None or self.etcd_key_file is not None
        if tls and (self.etcd_cert_file is None or self.etcd_key_file is None):
            raise ConfigError("etcd_cert_file and etcd_key_file: give both or neither")
        if self.etcd_trusted_ca_file is not None and not tls:
            raise ConfigError("etcd_trusted_ca_file needs etcd_cert_file and etcd_key_file")
        if self.etcd_listen is None:
            if self.etcd_namespace is not None or tls:
                raise ConfigError("etcd_namespace/etcd_cert_file need etcd_listen")
            return
        try:
            host, _ = parse_listen(self.etcd_listen)
        except EndpointError as exc:
            raise ConfigError(f"etcd_listen: {exc}") from None
        if not tls and not is_loopback(host):
            raise ConfigError(
                f"etcd_listen: {host} is not a loopback address: serving etcd clients on "
                "the network needs TLS (etcd_cert_file and etcd_key_file, and "
                "etcd_trusted_ca_file to require client certificates)"
            )
        if self.etcd_namespace is not None and self.etcd_namespace not in self.namespaces:
            raise ConfigError(
                f"etcd_namespace: {self.etcd_namespace!r} is not one of this daemon's "
                f"namespaces ({', '.join(self.namespaces)})"
            )


_LIST_FIELDS = {"namespaces", "listen", "peers", "discovery", "bootstrap"}
_PATH_FIELDS = {
    "data_dir",
    "socket",
    "api_token_file",
    "key_file",
    "next_key_file",
    "previous_key_file",
    "psk_file",
    "etcd_cert_file",
    "etcd_key_file",
    "etcd_trusted_ca_file",
}
_INT_FIELDS = {"expect", "voter_cap"}
_BOOL_FIELDS = {"leave_on_shutdown"}
# TOML keys and env names use the flag spelling; these differ from the field name.
_ALIASES = {"namespace": "namespaces", "peer": "peers"}


def _coerce(name: str, value: Any, source: str) -> Any:
    try:
        if name in _LIST_FIELDS:
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                return list(value)
            raise TypeError("expected a list of strings")
        if name in _PATH_FIELDS:
            if not isinstance(value, str | Path):
                raise TypeError("expected a path string")
            return Path(value)
        if name in _INT_FIELDS:
            if isinstance(value, bool):
                raise TypeError("expected an integer")
            return int(value)
        if name in _BOOL_FIELDS:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise TypeError("expected true or false")
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} (from {source}): {value!r} is invalid: {exc}") from None


def _field_names() -> set[str]:
    return {f.name for f in fields(DaemonConfig)}


def load_config(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config_file: Path | None = None,
) -> DaemonConfig:
    """Merge the sources (flags > env > file > defaults) and validate.

    ``flags`` holds only the options given on the command line, by field name.
    ``env`` is the process environment; ``RAFTD_<FIELD>`` (upper case) is read, lists
    comma-separated, e.g. ``RAFTD_NAMESPACE=/raft/a,/raft/b``.
    """
    names = _field_names()
    merged: dict[str, Any] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"config: cannot read {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {config_file} is not valid TOML: {exc}") from None
        for key, value in data.items():
            name = _ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
            if name not in names:
                raise ConfigError(f"config: unknown key {key!r} in {config_file}")
            merged[name] = _coerce(name, value, str(config_file))
    for name in names:
        for env_name in {f"RAFTD_{name.upper()}"} | {
            f"RAFTD_{k.upper()}" for k, v in _ALIASES.items() if v == name
        }:
            if env_name in env and env[env_name] != "":
                merged[name] = _coerce(name, env[env_name], f"env {env_name}")
    for name, value in flags.items():
        if name not in names:
            raise ConfigError(f"unknown option {name!r}")
        merged[name] = _coerce(name, value, f"--{name.replace('_', '-')}")
    if "data_dir" not in merged:
        raise ConfigError("data_dir: required (--data-dir, RAFTD_DATA_DIR or data_dir in the file)")
    cfg = DaemonConfig(**merged)
    cfg.validate()
    return cfg
