"""scripts/docker-test as a test: the image and both compose clusters on a real engine.

The script installs and starts Docker itself when it is missing (and stops the engine it
started). When Docker cannot be had at all it exits 77 with the reason: the test then
skips with that reason, or, with ``RAFTD_REQUIRE_DOCKER=1`` (CI), fails, so that a CI
machine that lost Docker cannot go green by skipping.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.docker.images import REPO
from harness.docker.scenario import EXIT_UNAVAILABLE

REQUIRE_ENV = "RAFTD_REQUIRE_DOCKER"
TIMEOUT = 1800.0  # cold: apt-get, debootstrap, wheels, build, two clusters

pytestmark = pytest.mark.slow


def docker_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def test_docker_compose_clusters() -> None:
    if not sys.platform.startswith("linux"):
        reason = f"Docker engine tests need Linux (platform is {sys.platform})"
        if docker_required():
            pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    proc = subprocess.Popen(
        [str(REPO / "scripts" / "docker-test")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the script removes its clusters and stops its engine
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"scripts/docker-test ran over {TIMEOUT:.0f}s:\n{out[-3000:]}\n{err[-3000:]}")
    cp = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    print(cp.stdout)  # the figures, shown with -s or on failure
    print(cp.stderr, file=sys.stderr)
    if cp.returncode == EXIT_UNAVAILABLE:
        reason = cp.stderr.strip().splitlines()[-1] if cp.stderr.strip() else "no reason given"
        if docker_required():
            pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
        pytest.skip(reason)
    assert cp.returncode == 0, f"scripts/docker-test exited {cp.returncode}:\n{cp.stderr[-6000:]}"
    assert "docker-test: passed" in cp.stdout
