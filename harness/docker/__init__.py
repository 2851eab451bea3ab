"""raftd's image and compose clusters on a real Docker engine (``scripts/docker-test``)."""
