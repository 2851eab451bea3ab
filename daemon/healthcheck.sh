#!/bin/bash
# Probe the local raftd's ops endpoint (address from RAFTD_METRICS, default
# 127.0.0.1:9420): exit 0 when healthy, 1 when not, with the reason on stderr.
#   raftd-healthcheck            GET /healthz (liveness: the daemon's event loop answers)
#   raftd-healthcheck --ready    GET /readyz  (a leader is known and applied is caught up)
#
# Written for bash alone (its /dev/tcp redirection, the `read -t` builtin), so that the
# container health check, run every few seconds for as long as the node lives, costs
# one short shell process instead of a Python interpreter start. The same probe in
# Python, for scripts: `python -m raftd.ops.healthcheck`.
set -u

path=/healthz
case "${1:-}" in
    "") ;;
    --ready) path=/readyz ;;
    *)
        echo "usage: raftd-healthcheck [--ready]" >&2
        exit 2
        ;;
esac
timeout=${RAFTD_HEALTHCHECK_TIMEOUT:-3}
addr=${RAFTD_METRICS:-127.0.0.1:9420}
host=${addr%:*}
port=${addr##*:}
case "$host" in
    "" | 0.0.0.0 | "*") host=127.0.0.1 ;;
    "[::]" | ::) host=::1 ;;
    \[*\]) host=${host#[} && host=${host%]} ;;
esac
url="http://$addr$path"

# A wedged daemon still completes the TCP handshake (the kernel accepts into the
# backlog), so the bound on the answer is what detects it: `read -t`.
if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
    echo "$url: cannot connect to $host:$port" >&2
    exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
status=""
if ! IFS= read -r -t "$timeout" status <&3; then
    echo "$url: no answer within ${timeout}s" >&2
    exit 1
fi
status=${status%$'\r'}
case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
esac
body=""
IFS= read -r -d '' -t 1 body <&3
echo "$url: $status: ${body##*$'\r\n\r\n'}" >&2
exit 1
