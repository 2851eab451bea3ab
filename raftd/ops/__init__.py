"""Operations surface of a daemon: health, readiness and Prometheus metrics over HTTP.

- :mod:`raftd.ops.server`: :class:`~raftd.ops.server.OpsServer` (``--metrics HOST:PORT``),
  the ``/healthz``, ``/readyz`` and ``/metrics`` endpoints.
- :mod:`raftd.ops.source`: :class:`~raftd.ops.source.OpsSource`, what they read (built by
  the app).
- :mod:`raftd.ops.health`: readiness rules, as data.
- :mod:`raftd.ops.metrics`: the scrape-time collector and the metric list.
- :mod:`raftd.ops.http`: the small bounded HTTP/1.1 server they run on.
- :mod:`raftd.ops.healthcheck`: ``python -m raftd.ops.healthcheck``, the container probe.

This package imports nothing at import time, so the probe starts fast.
"""
