"""Structural checks of the Dockerfile, .dockerignore and the compose files (no Docker
engine here), and of the YAML-subset reader they rely on."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import fields
from pathlib import Path

import pytest

from harness.compose.specs import REPO, YamlSubsetError, load_compose, load_dockerfile, parse_yaml
from raftd.app.config import DEFAULT_PORT, DaemonConfig, load_config
from raftd.ops.server import DEFAULT_METRICS_PORT, parse_listen_addr

COMPOSE_FILES = [REPO / "daemon" / "docker-compose.yml", REPO / "daemon" / "docker-compose.5.yml"]
ENV_NAMES = {f"RAFTD_{f.name.upper()}" for f in fields(DaemonConfig)} | {
    "RAFTD_NAMESPACE",
    "RAFTD_PEER",
    "RAFTD_CONFIG",
    "RAFTD_KEY",
}


# -- the YAML subset ----------------------------------------------------------------------


def test_yaml_subset() -> None:
    doc = parse_yaml(
        """
# comment
a: 1
b: "two: 2"   # trailing comment
c: 'it''s'
d:
  - x
  - "y # not a comment"
  - [1, "2", three]
e:
f: true
g: 0.5
h:
  nested:
    deep: ~
i: /raft/app
j: 0.0.0.0:9420
"""
    )
    assert doc == {
        "a": 1,
        "b": "two: 2",
        "c": "it's",
        "d": ["x", "y # not a comment", [1, "2", "three"]],
        "e": None,
        "f": True,
        "g": 0.5,
        "h": {"nested": {"deep": None}},
        "i": "/raft/app",
        "j": "0.0.0.0:9420",
    }


@pytest.mark.parametrize(
    "text",
    [
        "a: &anchor 1",
        "a: *alias",
        "a: !!str 1",
        "a: |\n  block",
        "a: >\n  folded",
        "a: {b: 1}",
        "a: 1\na: 2",
        "a:\n\t- x",
        "a: [1, [2]]",
        "a: [1,\n  2]",
        "- a: 1",
        "a: 1\n   b: 2",
        "---\na: 1",
        "a: b: c",
    ],
)
def test_yaml_subset_rejects(text: str) -> None:
    with pytest.raises(YamlSubsetError):
        parse_yaml(text)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_subset_reader_agrees_with_pyyaml(path: Path) -> None:
    import yaml  # type: ignore[import-untyped]

    assert parse_yaml(path.read_text()) == yaml.safe_load(path.read_text())


# -- the Dockerfile -------------------------------------------------------------------------


def test_dockerfile_structure() -> None:
    df = load_dockerfile()
    assert len(df.stages) >= 2, "multi-stage: build, then runtime"
    build, final = df.stages[0], df.final
    assert build.name == "build"
    assert build.base == final.base == "python:3.11-slim"
    build_runs = " ".join(build.runs)
    # Both ways of installing, in one RUN: offline from wheelhouse/ (--no-index, neither
    # apt nor compiler), else from the index with the CA bundle secret and a compiler.
    assert "--mount=type=bind,source=wheelhouse" in build_runs
    assert "--no-index --find-links=/wheelhouse" in build_runs
    assert "--mount=type=secret,id=ca-bundle" in build_runs
    assert "PIP_CERT=/run/secrets/ca-bundle" in build_runs
    assert "build-essential" in build_runs and "libgmp-dev" in build_runs
    assert "python3 -m venv /opt/raftd" in build_runs
    final_runs = " ".join(final.runs)
    assert "apt-get" not in final_runs and "pip" not in final_runs
    assert any(c.flags.get("from") == "build" and c.dest == "/opt/raftd" for c in final.copies)
    assert final.env["PATH"].startswith("/opt/raftd/bin:")

    # Non-root user, created in the image.
    assert final.user is not None
    user = final.user.split(":")[0]
    assert user not in ("root", "0")
    assert "useradd" in final_runs and user in final_runs

    # Volumes, ports, signals, probe, entrypoint.
    assert {"/data", "/run/raftd"} <= set(final.volumes)
    assert f"{DEFAULT_PORT}/tcp" in final.expose
    assert f"{DEFAULT_METRICS_PORT}/tcp" in final.expose
    assert final.stopsignal == "SIGTERM"
    assert final.healthcheck is not None and final.healthcheck.command
    # The probe is the bash script, not a Python process every interval.
    assert final.healthcheck.command == ["raftd-healthcheck"]
    probe = next(c for c in final.copies if c.dest.endswith("/raftd-healthcheck"))
    script = (REPO / probe.sources[0]).read_text()
    assert script.startswith("#!/bin/bash\n") and "/healthz" in script
    assert "python" not in "".join(ln for ln in script.splitlines() if not ln.startswith("#"))
    assert final.entrypoint is not None and final.entrypoint_exec_form, "exec form: signals"
    assert final.cmd == []

    # The environment configures raftd: data on the volume, the socket on the shared one.
    env = final.env
    assert env["RAFTD_DATA_DIR"] == "/data"
    assert env["RAFTD_SOCKET"] == "/run/raftd/raftd.sock"
    assert parse_listen_addr(env["RAFTD_METRICS"]) == ("0.0.0.0", DEFAULT_METRICS_PORT)
    assert env["RAFTD_LISTEN"].endswith(f"/tcp/{DEFAULT_PORT}")
    unknown = {k for k in env if k.startswith("RAFTD_")} - ENV_NAMES
    assert not unknown, f"ENV names no setting: {unknown}"
    raftd_env = {k: v for k, v in env.items() if k.startswith("RAFTD_")}
    cfg = load_config({}, raftd_env)  # the image's environment alone is a valid config
    assert cfg.data_dir == Path("/data") and cfg.log_format == "json"

    # Scripts are copied from the build context, executable, and exist in the repo.
    for c in final.copies:
        if "from" in c.flags:
            continue
        for src in c.sources:
            assert (REPO / src).exists(), src
        assert c.flags.get("chmod") == "0755"
    entry = final.entrypoint[0]
    assert any(c.dest == entry for c in final.copies), "ENTRYPOINT is a copied script"


def _dockerignore_allows(path: str) -> bool:
    """Last matching rule wins, as in Docker (enough of its syntax for our file)."""
    allowed = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        rule = raw.strip()
        if not rule or rule.startswith("#"):
            continue
        neg = rule.startswith("!")
        pat = rule[1:] if neg else rule
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/") or pat == "**":
            allowed = neg
    return allowed


def test_dockerignore_keeps_what_the_build_needs() -> None:
    df = load_dockerfile()
    needed = [
        src for st in df.stages for c in st.copies if "from" not in c.flags for src in c.sources
    ]
    assert "pyproject.toml" in needed and "raftd" in needed
    assert _dockerignore_allows("wheelhouse"), "the offline build mounts wheelhouse/"
    assert (REPO / "wheelhouse").is_dir(), "a clean clone has wheelhouse/ for the mount"
    for src in needed:
        assert _dockerignore_allows(src), f".dockerignore excludes {src}"
    for excluded in (".venv", "tests", ".git", "raftd/__pycache__"):
        assert not _dockerignore_allows(excluded), excluded


# -- the compose files ----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "n"), [(COMPOSE_FILES[0], 3), (COMPOSE_FILES[1], 5)])
def test_compose_structure(path: Path, n: int) -> None:
    c = load_compose(path)
    df = load_dockerfile()
    nodes = c.nodes
    assert [s.name for s in nodes] == [f"node{i}" for i in range(1, n + 1)]
    assert c.networks == ["raft"]
    data_volumes = set()
    for s in nodes:
        env = s.environment
        assert env["RAFTD_NAMESPACE"] == "/raft/app"
        assert env["RAFTD_EXPECT"] == str(n)
        # No seed list, no static peers, discovery left at its default (mDNS on).
        assert not {"RAFTD_PEER", "RAFTD_PEERS", "RAFTD_BOOTSTRAP", "RAFTD_DISCOVERY"} & env.keys()
        assert set(env) <= ENV_NAMES, set(env) - ENV_NAMES
        full = {**df.final.env, **env}
        cfg = load_config({}, {k: v for k, v in full.items() if k.startswith("RAFTD_")})
        assert cfg.discovery and "mdns" in cfg.discovery and not cfg.peers
        mounts = {m.target: m for m in s.mounts}
        assert mounts["/data"].source == f"{s.name}-data" and not mounts["/data"].bind
        assert mounts["/run/raftd"].source == f"{s.name}-sock"
        data_volumes.add(mounts["/data"].source)
        assert s.raw["restart"] in ("unless-stopped", "always", "on-failure")
        assert s.raw["stop_signal"] == "SIGTERM"
        assert s.healthcheck == ["CMD", "raftd-healthcheck"]
        assert s.raw["build"]["context"] == ".." and s.raw["image"] == "raftd:latest"
        assert s.networks == ["raft"]
    assert len(data_volumes) == n, "one data volume per node, never shared"
    for v in c.volumes:
        assert c.raw["volumes"][v] is None  # plain named volumes
    assert {f"node{i}-{k}" for i in range(1, n + 1) for k in ("data", "sock")} == set(c.volumes)

    net = c.raw["networks"]["raft"]
    assert net["internal"] is True, "the cluster network has no route out"
    (ipam,) = net["ipam"]["config"]
    assert ipam["subnet"].endswith("/24")

    # One example app per node, on that node's socket volume alone.
    assert [s.name for s in c.services.values() if s.name.startswith("app")] == [
        f"app{i}" for i in range(1, n + 1)
    ]
    for i in range(1, n + 1):
        app = c.services[f"app{i}"]
        assert app.raw["network_mode"] == "none", "the app reaches raftd only by the socket"
        assert app.raw["healthcheck"] == {"disable": True}, "no daemon to probe in an app"
        assert app.raw["tmpfs"] == ["/data"], "no anonymous volume for the image's /data"
        assert app.depends_on == {f"node{i}": "service_healthy"}
        sock = {m.target: m for m in app.mounts}["/run/raftd"]
        assert sock.source == f"node{i}-sock"
        assert app.environment["RAFTD_SOCKET"] == "/run/raftd/raftd.sock"
        assert app.environment["APP_NAME"] == f"app{i}"
        assert app.entrypoint == ["python", "/app/app.py"]
    assert (path.parent / "app" / "app.py").exists()


def test_compose_files_differ_only_in_size() -> None:
    three, five = (load_compose(p) for p in COMPOSE_FILES)
    n1_3 = json.dumps(three.services["node1"].raw, sort_keys=True)
    n1_5 = json.dumps(five.services["node1"].raw, sort_keys=True)
    assert n1_3.replace('"3"', '"N"') == n1_5.replace('"5"', '"N"')
    app_3, app_5 = (json.dumps(c.services["app1"].raw, sort_keys=True) for c in (three, five))
    assert app_3 == app_5
