#!/bin/sh
# Probe the local raftd's ops endpoint (address from RAFTD_METRICS, default
# 127.0.0.1:9420): exit 0 when healthy, 1 when not, with the reason on stderr.
#   raftd-healthcheck            GET /healthz (liveness: the process serves)
#   raftd-healthcheck --ready    GET /readyz  (a leader is known and applied is caught up)
exec python -m raftd.ops.healthcheck -q "$@"
