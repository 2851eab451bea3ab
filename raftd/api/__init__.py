"""The local application API: the wire protocol (``proto/raftd/v1/api.proto``, described
in ``raftd/api/PROTOCOL.md``), the listener (:mod:`raftd.api.server`), what each request
does (:mod:`raftd.api.service`), the leader's lease clock (:mod:`raftd.api.leases`), and
how a daemon runs it all (:mod:`raftd.api.runtime`). The client is :mod:`raftd.client`.
"""
