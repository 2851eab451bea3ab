"""Exercise raftd's etcd endpoint with the PyPI ``etcd3`` client (python-etcd3 0.12).

Runs in a virtualenv of its own (etcd3 needs protobuf 3), not under pytest:
``python etcd3_client.py HOST:PORT HOST:PORT`` (two different nodes) prints one JSON
object with what it observed; tests/etcd/test_etcdctl.py checks it.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import etcd3  # type: ignore[import-not-found]


def client(endpoint: str) -> Any:
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=15)


def main() -> None:
    a, b = client(sys.argv[1]), client(sys.argv[2])
    out: dict[str, Any] = {}
    a.put("py/a", "1")
    a.put("py/b", "2")
    out["get"] = b.get("py/a")[0].decode()
    out["prefix"] = sorted(m.key.decode() for _, m in b.get_prefix("py/"))
    ok, _ = a.transaction(
        compare=[a.transactions.value("py/a") == "1"],
        success=[a.transactions.put("py/t", "yes")],
        failure=[],
    )
    out["txn"] = ok
    out["txn_value"] = b.get("py/t")[0].decode()
    # Compares over a key range (clientv3 sends them for WithPrefix()).
    a.put("py/r/1", "x")
    a.put("py/r/2", "y")
    newest = a.get("py/r/2")[1].mod_revision
    t = a.transactions
    rng = {"range_end": "py/r0"}
    out["range_compares"] = [
        a.transaction(compare=[t.mod("py/r/", **rng) < newest + 1], success=[], failure=[])[0],
        a.transaction(compare=[t.mod("py/r/", **rng) > newest - 1], success=[], failure=[])[0],
        a.transaction(
            compare=[t.version("py/none/", range_end="py/none0") == 0], success=[], failure=[]
        )[0],
        a.transaction(compare=[t.value("py/r/", **rng) == "x"], success=[], failure=[])[0],
    ]
    lease = a.lease(30)
    a.put("py/l", "x", lease=lease)
    out["lease_granted_ttl"] = lease.granted_ttl
    out["lease_keys"] = [k.decode() for k in lease.keys]
    lease.revoke()
    out["after_revoke"] = b.get("py/l")[0]

    # Watch helper (iterator) on the other node.
    events, cancel = b.watch_prefix("py/w/")
    got: list[list[str]] = []

    def consume() -> None:
        for ev in events:
            got.append([type(ev).__name__, ev.key.decode(), ev.value.decode()])
            if len(got) == 3:
                return

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    a.put("py/w/1", "a")
    a.put("py/w/2", "b")
    a.delete("py/w/1")
    t.join(20)
    cancel()
    out["watch"] = got

    # Lock helper: the second client waits while the first holds it.
    first = a.lock("pylock", ttl=10)
    first.acquire()
    out["first_locked"] = first.is_acquired()
    second = b.lock("pylock", ttl=10)
    out["second_while_held"] = second.acquire(timeout=1)
    first.release()
    out["second_after_release"] = second.acquire(timeout=15)
    second.release()

    out["members"] = len(list(a.members))
    out["status_has_leader"] = a.status().leader is not None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
