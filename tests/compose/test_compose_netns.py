"""The container image and the compose topology, run without Docker: one network
namespace per service on one bridge (the compose network), the image's entrypoint and
environment plus the service's, named volumes as directories (see runner.py).

- the image alone: ENTRYPOINT + ENV start a node; the Dockerfile's HEALTHCHECK command
  passes; the entrypoint passes a command through (``raftd status``); SIGTERM exits 0;
- the 3-node compose file through ``up`` (all at once), ``restart node2`` and ``down`` /
  ``up`` with the volumes kept: every stop exits 0, identities and data survive;
- cluster formation by discovery (no seed list), for the 3- and 5-node files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.compose.runner import ComposeRunner
from harness.compose.specs import REPO, Compose, Mount, Service, load_compose, load_dockerfile
from harness.netns import Topology
from raftd.testing.launch import wait_until
from tests.ops.helpers import parse_metrics

COMPOSE_3 = REPO / "daemon" / "docker-compose.yml"
COMPOSE_5 = REPO / "daemon" / "docker-compose.5.yml"
NS = "/raft/app"

pytestmark = [pytest.mark.netns, pytest.mark.slow]


def peer_id(r: ComposeRunner, name: str) -> str:
    status, body = r.http_get(name, "/metrics")
    assert status == 200
    (labels,) = parse_metrics(body.decode())["raftd_info"]
    return dict(labels)["peer_id"]


def assert_clean_down(r: ComposeRunner, names: list[str]) -> None:
    """``docker compose down`` stops exactly ``names``, each with exit status 0; the log
    of any that did not is in the failure."""
    codes = r.down()
    bad = [n for n, rc in codes.items() if rc != 0]
    assert codes == dict.fromkeys(names, 0), "\n".join(
        [str(codes), *(r.log_tail(n, 80) for n in bad)]
    )


def assert_json_logs(r: ComposeRunner, name: str) -> None:
    """RAFTD_LOG_FORMAT=json: every line the daemon wrote is one JSON object."""
    lines = [ln for ln in r.log_lines(name) if not ln.startswith("--- start ")]
    assert lines, f"{name} logged nothing"
    for ln in lines:
        obj = json.loads(ln)
        assert {"ts", "level", "logger", "msg"} <= obj.keys(), ln


@pytest.fixture
def image_runner(need_netns: None, tmp_path: Path) -> Iterator[ComposeRunner]:
    """The image run bare (``docker run raftd``): anonymous volumes for its VOLUMEs and
    the Dockerfile's own HEALTHCHECK."""
    image = load_dockerfile().final
    assert image.healthcheck is not None
    svc = Service(
        name="raftd",
        raw={"stop_signal": image.stopsignal or "SIGTERM", "stop_grace_period": "10s"},
        environment={},
        mounts=[Mount(f"anon{i}", v, False, False) for i, v in enumerate(image.volumes)],
        entrypoint=None,
        command=None,
        healthcheck=["CMD", *image.healthcheck.command],
        networks=["default"],
        depends_on={},
    )
    compose = Compose(REPO / "Dockerfile", {}, {"raftd": svc}, [], ["default"])
    with Topology(["raftd"]) as topo:
        yield ComposeRunner(compose, image, topo, tmp_path)


def test_image_entrypoint_and_environment(image_runner: ComposeRunner) -> None:
    r = image_runner
    r.up(["raftd"])
    r.wait_healthy(["raftd"], 30)  # the Dockerfile's HEALTHCHECK one-liner
    data = r.volume("anon0")
    assert (data / "raftd.pid").exists() or any(data.iterdir()), "data goes to /data"
    # The entrypoint passes commands through (`docker run raftd raftd status -o json`),
    # and the API socket is on the /run/raftd volume, where RAFTD_SOCKET points.
    wait_until(
        lambda: (r.volume("anon1") / "raftd.sock").exists(), 20, interval=0.1, what="API socket"
    )
    cp = r.exec("raftd", ["/usr/local/bin/raftd-entrypoint", "raftd", "status", "-o", "json"])
    assert cp.returncode == 0, cp.stderr
    (st,) = json.loads(cp.stdout)
    assert st["namespace"] == "/raft/default"
    # The same probe the compose files use.
    assert r.exec("raftd", ["raftd-healthcheck"]).returncode == 0
    assert r.stop("raftd") == 0
    assert_json_logs(r, "raftd")
    assert r.exec("raftd", ["raftd-healthcheck"]).returncode == 1


def test_compose_lifecycle(need_netns: None, tmp_path: Path) -> None:
    """up / restart node2 / down + up: clean exits, identities and volumes kept."""
    compose = load_compose(COMPOSE_3)
    nodes = [s.name for s in compose.nodes]
    with Topology(nodes) as topo:
        r = ComposeRunner(compose, load_dockerfile().final, topo, tmp_path)
        r.up()
        r.wait_healthy(nodes, 40)
        ids = {n: peer_id(r, n) for n in nodes}
        assert len(set(ids.values())) == len(nodes), "each node has its own identity"

        # The example app, started once its node is healthy (depends_on), reaches the
        # daemon through the shared socket volume alone (it has no network).
        r.start("app1", extra_env={"APP_INTERVAL": "0.2"})
        wait_until(
            lambda: any('"starting"' in ln for ln in r.log_lines("app1")),
            20,
            interval=0.1,
            what="app1 started",
        )
        first = json.loads(next(ln for ln in r.log_lines("app1") if '"starting"' in ln))
        assert first["socket"] == str(r.volume("node1-sock") / "raftd.sock")

        # docker compose restart node2: SIGTERM, exit 0, same volume, same identity.
        rc = r.restart("node2")
        assert rc == 0, r.log_tail("node2", 80)
        r.wait_healthy(["node2"], 40)
        assert peer_id(r, "node2") == ids["node2"]

        # docker compose down (volumes kept), then up.
        assert_clean_down(r, [*nodes, "app1"])
        for n in nodes:
            vol = r.volume(f"{n}-data")
            assert any(vol.iterdir()), f"{n}: data volume is empty"
        r.up()
        r.wait_healthy(nodes, 40)
        assert {n: peer_id(r, n) for n in nodes} == ids
        assert_clean_down(r, nodes)
        for n in nodes:
            assert_json_logs(r, n)


@pytest.mark.parametrize(("path", "n"), [(COMPOSE_3, 3), (COMPOSE_5, 5)], ids=["3", "5"])
def test_compose_cluster_forms_by_discovery(
    need_netns: None, tmp_path: Path, path: Path, n: int
) -> None:
    """No seed list: the nodes find each other by mDNS, bootstrap together, elect a
    leader, replicate; (3 nodes) the example app works through its node's socket, and
    the cluster survives restart node2 and down + up."""
    from raftd.client import Client

    compose = load_compose(path)
    nodes = [s.name for s in compose.nodes]
    with Topology(nodes) as topo:
        r = ComposeRunner(compose, load_dockerfile().final, topo, tmp_path)

        def sock(name: str) -> str:
            return str(r.volume(f"{name}-sock") / "raftd.sock")

        def all_ready() -> bool:
            return all(r.readyz(x)[0] == 200 for x in nodes)

        def one_leader() -> str | None:
            leaders = set()
            for x in nodes:
                with Client(sock(x), namespace=NS, timeout=5) as c:
                    st = c.status()[0]
                if len([m for m in st.members if m.voter]) != min(n, 5):
                    return None
                leaders.add(st.leader)
            return leaders.pop() if len(leaders) == 1 and "" not in leaders else None

        r.up()
        r.wait_healthy(nodes, 40)
        wait_until(all_ready, 60, interval=0.1, what="all nodes ready")
        wait_until(one_leader, 30, interval=0.1, what="one leader, all voters")

        with Client(sock(nodes[0]), namespace=NS, timeout=10) as c:
            c.put("compose/k", "v1")
        with Client(sock(nodes[-1]), namespace=NS, timeout=10) as c:
            kv = c.get("compose/k")
            assert kv is not None and kv.value == b"v1"

        if n > 3:  # the lifecycle below is the same for every size: run it once
            assert_clean_down(r, nodes)
            return
        r.start("app1", extra_env={"APP_INTERVAL": "0.2", "APP_ITERATIONS": "3"})
        app = r.procs["app1"]
        assert app.wait(timeout=60) == 0, r.log_tail("app1")

        rc = r.restart("node2")
        assert rc == 0, r.log_tail("node2", 80)
        wait_until(lambda: r.readyz("node2")[0] == 200, 60, interval=0.1, what="node2 ready again")
        with Client(sock("node2"), namespace=NS, timeout=10) as c:
            kv = c.get("compose/k")
            assert kv is not None and kv.value == b"v1"

        assert_clean_down(r, nodes)
        r.up()
        wait_until(all_ready, 60, interval=0.1, what="all nodes ready after down/up")
        wait_until(one_leader, 30, interval=0.1, what="one leader after down/up")
        with Client(sock(nodes[1]), namespace=NS, timeout=10) as c:
            kv = c.get("compose/k")
            assert kv is not None and kv.value == b"v1"
        assert_clean_down(r, nodes)
        for x in nodes:
            assert_json_logs(r, x)
