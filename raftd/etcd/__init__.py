"""etcd v3 API for raftd: etcdctl and every etcd v3 client work against a raftd node.

- :mod:`raftd.etcd.kv`: pure translation of etcd's KV messages to raftd's commands;
- :mod:`raftd.etcd.service`: etcd's semantics over one namespace (trio);
- :mod:`raftd.etcd.http2`: the gRPC endpoint (HTTP/2 and gRPC framing on trio);
- :mod:`raftd.etcd.endpoint`: the endpoint's settings (address, loopback rule, TLS);
- :mod:`raftd.etcd.ids`: stable 64-bit cluster and member ids.

``raftd.app`` composes it: ``--etcd-listen`` starts one endpoint per daemon.
"""
