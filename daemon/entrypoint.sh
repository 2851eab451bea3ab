#!/bin/sh
# raftd container entrypoint: `raftd run`, configured from RAFTD_* environment variables
# (or the TOML file named by RAFTD_CONFIG).
#
#   no arguments, or options only ("--preset regional")  -> exec raftd run [OPTIONS...]
#   a command ("raftd status", "sh")                      -> exec that command
#
# raftd replaces this shell (exec), so it receives SIGTERM directly and shuts down
# gracefully (leadership handed over, storage flushed, exit status 0).
set -eu

case "${1:-}" in
    "" | -*) ;;
    *) exec "$@" ;;
esac

data_dir="${RAFTD_DATA_DIR:-/data}"
if ! mkdir -p "$data_dir" 2>/dev/null || [ ! -w "$data_dir" ]; then
    echo "raftd-entrypoint: data directory $data_dir is not writable by uid $(id -u):" \
        "mount a volume owned by uid $(id -u) there" >&2
    exit 2
fi
if [ -n "${RAFTD_SOCKET:-}" ]; then
    sock_dir=$(dirname "$RAFTD_SOCKET")
    if ! mkdir -p "$sock_dir" 2>/dev/null || [ ! -w "$sock_dir" ]; then
        echo "raftd-entrypoint: socket directory $sock_dir is not writable by uid $(id -u)" >&2
        exit 2
    fi
fi

exec raftd run "$@"
