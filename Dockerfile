# syntax=docker/dockerfile:1
#
# raftd container image. Build from the repository root:
#
#     docker build -t raftd:latest .
#
# Run a cluster with daemon/docker-compose.yml (3 nodes) or daemon/docker-compose.5.yml.
# Configuration comes from RAFTD_* environment variables (see daemon/raftd.example.toml
# for every setting; lists are comma-separated, e.g. RAFTD_NAMESPACE=/raft/a,/raft/b),
# or from a TOML file named by RAFTD_CONFIG. Arguments after the image name are passed
# to `raftd run` (e.g. `docker run raftd:latest --preset regional`).
#
# Volumes: /data holds the node's identity key and its LevelDB (one volume per node,
# never shared); /run/raftd holds the API socket, to be shared with application
# containers on the same node (they must run as uid 10001, the socket is mode 0600).
#
# tests/compose/test_dockerfile.py lints this file and runs the same entrypoint with the
# same environment outside Docker.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: compile wheels for raftd and every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# plyvel is built against the system LevelDB (libleveldb-dev) so the runtime image uses
# Debian's libleveldb1d; fastecdsa (a libp2p dependency) has no wheel and needs GMP.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libleveldb-dev libgmp-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY raftd ./raftd
RUN pip wheel --wheel-dir /wheels --no-binary plyvel .

# ---- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="raftd" \
      org.opencontainers.image.description="A libp2p-native Raft consensus daemon" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libleveldb1d libgmp10 \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels raftd \
    && python -c "import plyvel, prometheus_client, raftd.app.daemon"
RUN groupadd --system --gid 10001 raftd \
    && useradd --system --uid 10001 --gid raftd --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin raftd \
    && mkdir -p /data /run/raftd \
    && chown raftd:raftd /data /run/raftd \
    && chmod 0750 /data /run/raftd
COPY --chmod=0755 daemon/entrypoint.sh /usr/local/bin/raftd-entrypoint
COPY --chmod=0755 daemon/healthcheck.sh /usr/local/bin/raftd-healthcheck

ENV RAFTD_DATA_DIR=/data \
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
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u; a=os.environ.get('RAFTD_METRICS','127.0.0.1:9420').replace('0.0.0.0','127.0.0.1'); sys.exit(0 if u.urlopen('http://'+a+'/healthz',timeout=2).status==200 else 1)"]

ENTRYPOINT ["/usr/local/bin/raftd-entrypoint"]
CMD []
