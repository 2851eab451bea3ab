"""Static checks of daemon/raftd.example.toml and daemon/raftd.service."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from raftd.app.config import DaemonConfig, load_config

DAEMON = Path(__file__).resolve().parents[2] / "daemon"
TOML = DAEMON / "raftd.example.toml"
UNIT = DAEMON / "raftd.service"
ALIASES = {"namespaces": "namespace", "peers": "peer"}  # the file uses the flag spelling


def test_example_config_loads() -> None:
    cfg = load_config({}, {}, TOML)
    assert cfg.data_dir == Path("/var/lib/raftd")
    assert cfg.metrics == "127.0.0.1:9420"
    # The systemd unit's StateDirectory is /var/lib/raftd; the client's default socket
    # is in it.
    assert str(cfg.socket_path) == "/var/lib/raftd/raftd.sock"


def test_example_config_documents_every_setting() -> None:
    """Every DaemonConfig field appears as a key (set or commented out), and every key
    has a comment block right above it (possibly shared with the keys next to it)."""
    lines = TOML.read_text().splitlines()
    key_re = re.compile(r"^#?\s?([a-z_]+) = ")
    keys: dict[str, int] = {}
    for i, line in enumerate(lines):
        m = key_re.match(line)
        if m:
            keys[m.group(1)] = i
    missing = [
        ALIASES.get(f.name, f.name)
        for f in fields(DaemonConfig)
        if ALIASES.get(f.name, f.name) not in keys
    ]
    assert not missing, f"document these settings in {TOML.name}: {missing}"
    for key, i in keys.items():
        j = i - 1
        while j >= 0 and key_re.match(lines[j]):
            j -= 1  # a group of keys shares one comment
        assert j >= 0 and lines[j].startswith("# "), f"{key}: no comment above it"
    # The commented-out defaults are the real defaults.
    defaults = DaemonConfig(data_dir=Path("/var/lib/raftd"))
    for f in fields(DaemonConfig):
        key = ALIASES.get(f.name, f.name)
        line = lines[keys[key]]
        want = getattr(defaults, f.name)
        if (line.startswith("#") and want not in (None, [])) or f.name == "bootstrap":
            shown = line.split("=", 1)[1].strip()
            assert shown == _toml_value(want), f"{key}: shows {shown}, default is {want!r}"


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return str(v)


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_systemd_unit() -> None:
    u = _unit()
    s = u["Service"]
    assert s["Type"] in ("simple", "notify", "exec")
    assert s["ExecStart"] == "/usr/local/bin/raftd run --config /etc/raftd/raftd.toml"
    assert s["KillSignal"] == "SIGTERM"
    assert s["Restart"] == "on-failure"
    assert s["TimeoutStopSec"].endswith("s") and int(s["TimeoutStopSec"][:-1]) >= 10
    assert s["User"] == "raftd" and s["Group"] == "raftd"
    assert s["StateDirectory"] == "raftd"
    assert s["RestartPreventExitStatus"] == "2"  # EXIT_USAGE: a bad config
    for hardening in (
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "RestrictAddressFamilies",
        "CapabilityBoundingSet",
        "SystemCallFilter",
    ):
        assert hardening in s, hardening
    assert s["ProtectSystem"] == "strict"  # writable: only the StateDirectory
    assert "AF_INET" in s["RestrictAddressFamilies"] and "AF_UNIX" in s["RestrictAddressFamilies"]
    assert u["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies() -> None:
    """``systemd-analyze verify``: only the missing binary may be reported (raftd is not
    installed at /usr/local/bin here)."""
    cp = subprocess.run(
        ["systemd-analyze", "verify", str(UNIT)], capture_output=True, text=True, timeout=60
    )
    problems = [
        ln
        for ln in (cp.stdout + cp.stderr).splitlines()
        if ln.strip() and "/usr/local/bin/raftd" not in ln
    ]
    assert not problems, problems
