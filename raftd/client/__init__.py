"""Python clients of the raftd API (the protocol: ``raftd/api/PROTOCOL.md``).

- :class:`Client`: blocking, thread-safe, one pipelined connection.
- :func:`open_client` -> :class:`AsyncClient`: the same for trio.
- :mod:`raftd.client.concurrency`: :class:`Lock`, :class:`Election`, :class:`Session`
  (and their ``Async*`` forms) built on leases and watches, as etcd's ``concurrency``.

Defaults come from the environment: ``RAFTD_SOCKET`` (a unix socket path or
``tcp://host:port``), ``RAFTD_NAMESPACE``, ``RAFTD_API_TOKEN`` / ``RAFTD_API_TOKEN_FILE``.

Errors are :class:`RaftdError` subclasses by protocol code (:class:`NotFound`,
:class:`Unavailable`, :class:`DeadlineExceeded`, ...); ``err.indeterminate`` says that a
write may have been applied. ``get`` returns None for a missing key and ``cas`` returns a
result with ``succeeded=False`` on a mismatch rather than raising.

Example::

    from raftd.client import Client

    with Client() as c:
        c.put("greeting", "hello")
        print(c.get("greeting").value)
"""

from raftd.client import _proto
from raftd.client._proto import *  # noqa: F403 (the names _proto.__all__ lists)
from raftd.client._sync import Client, Watch
from raftd.client._trio import AsyncClient, AsyncWatch, open_client

# The protocol's results, errors and request builders, then the two clients.
__all__ = ["AsyncClient", "AsyncWatch", "Client", "Watch", "open_client"]
__all__ += _proto.__all__
