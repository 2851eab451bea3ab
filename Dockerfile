#
# raftd container image. Needs BuildKit (RUN --mount, COPY --chmod): Docker 23+ uses it by
# default; with Docker 20.10 set DOCKER_BUILDKIT=1. Build from the repository root:
#
#     docker build -t raftd:latest .
#
# The build stage installs raftd and its dependencies into a virtualenv (/opt/raftd), in
# one of two ways:
#
# - from the package index (the default, when wheelhouse/ holds no wheels). Behind a
#   TLS-inspecting proxy, hand the proxy's CA bundle to the build as a secret (it is
#   never stored in a layer):
#       docker build --secret id=ca-bundle,src=/etc/ssl/certs/ca-certificates.crt -t raftd .
#   fastecdsa (a libp2p dependency) has no wheel on the index: this way the build
#   stage installs a compiler and GMP's headers with apt-get.
# - offline, from wheels in wheelhouse/ (every dependency, plus setuptools and wheel to
#   build raftd itself): pip runs with --no-index, the build stage needs neither network,
#   apt nor a compiler. Make the wheelhouse on a machine with the same Python minor
#   version and C library as the image, e.g.
#       pip wheel --wheel-dir wheelhouse . "setuptools>=68" wheel && rm wheelhouse/raftd-*
#   scripts/docker-test does exactly this, then builds on a Debian-made base image.
#
# PYTHON_IMAGE picks the base of both stages: any Debian-based image with python3 (3.11+)
# and its venv module, e.g. --build-arg PYTHON_IMAGE=raftd-base:bookworm (made by
# scripts/docker-test with debootstrap, for machines that cannot pull images).
#
# Run a cluster with daemon/docker-compose.yml (3 nodes) or daemon/docker-compose.5.yml.
# Configuration comes from RAFTD_* environment variables (see daemon/raftd.example.toml
# for every setting; lists are comma-separated, e.g. RAFTD_NAMESPACE=/raft/a,/raft/b),
# or from a TOML file named by RAFTD_CONFIG. Arguments after the image name are passed
# to `raftd run` (e.g. `docker run raftd:latest --preset regional`); a command is run
# as given (`docker run raftd:latest raftd --version`).
#
# Volumes: /data holds the node's identity key and its LevelDB (one volume per node,
# never shared); /run/raftd holds the API socket, to be shared with application
# containers on the same node. The socket is owned by uid/gid 10001 (raftd) with mode
# 0600, so the applications run as uid 10001: this image's default user.
#
# tests/compose/test_static.py checks this file's structure and tests/compose runs the
# same entrypoint with the same environment outside Docker; scripts/docker-test builds
# it and runs the compose files on a Docker engine.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: raftd and every dependency in a virtualenv ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY raftd ./raftd
RUN --mount=type=bind,source=wheelhouse,target=/wheelhouse \
    --mount=type=secret,id=ca-bundle \
    set -eu; \
    python3 -m venv /opt/raftd; \
    if ls /wheelhouse/*.whl >/dev/null 2>&1; then \
        echo "installing offline from wheelhouse/"; \
        /opt/raftd/bin/pip install --no-compile --no-index --find-links=/wheelhouse /src; \
    else \
        echo "installing from the package index"; \
        if [ -f /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi; \
        headers=""; \
        python3 -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' \
            2>/dev/null || headers=python3-dev; \
        apt-get update; \
        apt-get install -y --no-install-recommends build-essential libgmp-dev $headers; \
        rm -rf /var/lib/apt/lists/*; \
        /opt/raftd/bin/pip install --no-compile /src; \
    fi; \
    /opt/raftd/bin/pip uninstall -y -q pip setuptools wheel; \
    /opt/raftd/bin/python -c "import raftd.cli, raftd.client, raftd.app.daemon, raftd.app.runner"

# ---- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="raftd" \
      org.opencontainers.image.description="A libp2p-native Raft consensus daemon" \
      org.opencontainers.image.licenses="Apache-2.0"
# No apt-get here: plyvel's wheel carries its own LevelDB, and fastecdsa needs libgmp10,
# which every Debian base has (coreutils depends on it).
RUN groupadd --system --gid 10001 raftd \
    && useradd --system --uid 10001 --gid raftd --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin raftd \
    && mkdir -p /data /run/raftd \
    && chown raftd:raftd /data /run/raftd \
    && chmod 0750 /data /run/raftd
COPY --from=build /opt/raftd /opt/raftd
COPY --chmod=0755 daemon/entrypoint.sh /usr/local/bin/raftd-entrypoint
COPY --chmod=0755 daemon/healthcheck.sh /usr/local/bin/raftd-healthcheck

ENV PATH=/opt/raftd/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAFTD_DATA_DIR=/data \
    RAFTD_SOCKET=/run/raftd/raftd.sock \
    RAFTD_LISTEN=/ip4/0.0.0.0/tcp/7420 \
    RAFTD_METRICS=0.0.0.0:9420 \
    RAFTD_LOG_FORMAT=json \
    RAFTD_LOG_LEVEL=info

VOLUME ["/data", "/run/raftd"]
# 7420: libp2p (Raft, forwarding, discovery); 9420: /healthz /readyz /metrics.
EXPOSE 7420/tcp 9420/tcp
# mDNS discovery uses UDP 5353 multicast on the container network (not published).

USER raftd:raftd
WORKDIR /data
STOPSIGNAL SIGTERM
# A bash probe of /healthz (see daemon/healthcheck.sh): no Python process every interval.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["raftd-healthcheck"]

ENTRYPOINT ["/usr/local/bin/raftd-entrypoint"]
CMD []
