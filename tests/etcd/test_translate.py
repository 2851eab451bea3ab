"""Unit tests of the etcd layer's pure parts: range options, historical ranges, Txn
translation and its refusals, ids, endpoint settings, the snapshot file layout."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import grpc
import pytest

from raftd.app.config import ConfigError, load_config
from raftd.etcd import errors
from raftd.etcd.endpoint import EndpointError, is_loopback, parse_listen
from raftd.etcd.errors import EtcdError
from raftd.etcd.ids import cluster_id, member_id
from raftd.etcd.kv import apply_range_options, range_at, txn_command
from raftd.etcd.snapfile import PAGE, padding, payload_size
from raftd.etcd.status import StatusCode
from raftd.kv.backend import KeyRecord
from raftd.kv.watch import DELETE, PUT, KeyEvent
from raftd.wire.pb import kv_pb2 as kpb
from raftd.wire.pb.etcd import kv_pb2 as mvcc
from raftd.wire.pb.etcd import rpc_pb2 as epb


def kvs() -> list[mvcc.KeyValue]:
    # key, value, create, mod, version
    rows = [("a", "3", 1, 9, 4), ("b", "1", 2, 2, 1), ("c", "2", 5, 7, 2), ("d", "0", 6, 6, 1)]
    return [
        mvcc.KeyValue(
            key=k.encode(), value=v.encode(), create_revision=c, mod_revision=m, version=n
        )
        for k, v, c, m, n in rows
    ]


def keys(resp: epb.RangeResponse) -> list[str]:
    return [kv.key.decode() for kv in resp.kvs]


def shaped(**kw: object) -> epb.RangeResponse:
    resp = epb.RangeResponse()
    apply_range_options(kvs(), epb.RangeRequest(key=b"a", range_end=b"z", **kw), resp)  # type: ignore[arg-type]
    return resp


def test_limit_count_more() -> None:
    r = shaped(limit=2)
    assert keys(r) == ["a", "b"] and r.more and r.count == 4
    r = shaped(limit=4)
    assert keys(r) == ["a", "b", "c", "d"] and not r.more


def test_sort_orders_and_targets() -> None:
    RR = epb.RangeRequest
    assert keys(shaped(sort_order=RR.DESCEND)) == ["d", "c", "b", "a"]
    assert keys(shaped(sort_target=RR.VALUE)) == ["d", "b", "c", "a"]  # no order: ascending
    assert keys(shaped(sort_target=RR.MOD, sort_order=RR.DESCEND, limit=1)) == ["a"]
    assert keys(shaped(sort_target=RR.CREATE, sort_order=RR.DESCEND)) == ["d", "c", "b", "a"]
    assert keys(shaped(sort_target=RR.VERSION, sort_order=RR.ASCEND)) == ["b", "d", "c", "a"]


def test_revision_filters_keys_only_count_only() -> None:
    r = shaped(min_mod_revision=6, max_mod_revision=8)
    assert keys(r) == ["c", "d"] and r.count == 4
    assert keys(shaped(min_create_revision=2, max_create_revision=5)) == ["b", "c"]
    r = shaped(keys_only=True)
    assert all(kv.value == b"" for kv in r.kvs) and len(r.kvs) == 4
    r = shaped(count_only=True)
    assert r.count == 4 and not r.kvs


def test_range_at_undoes_later_changes() -> None:
    now = [kpb.KeyValue(key=b"k1", value=b"new", create_revision=1, mod_revision=5, version=2)]
    old_k1 = KeyRecord(b"old", 1, 1, 1, 0)
    k2 = KeyRecord(b"gone", 2, 2, 1, 0)
    events = [
        KeyEvent(3, DELETE, b"k2", None, k2),
        KeyEvent(4, PUT, b"k3", KeyRecord(b"born", 4, 4, 1, 0), None),
        KeyEvent(5, PUT, b"k1", KeyRecord(b"new", 1, 5, 2, 0), old_k1),
    ]
    now.append(kpb.KeyValue(key=b"k3", value=b"born", create_revision=4, mod_revision=4, version=1))
    at2 = range_at(now, events)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in at2] == [
        (b"k1", b"old", 1),
        (b"k2", b"gone", 2),
    ]


def op_put(key: bytes, **kw: object) -> epb.RequestOp:
    return epb.RequestOp(request_put=epb.PutRequest(key=key, value=b"v", **kw))  # type: ignore[arg-type]


def test_txn_translation() -> None:
    req = epb.TxnRequest(
        compare=[
            epb.Compare(key=b"k", target=epb.Compare.MOD, result=epb.Compare.LESS, mod_revision=5),
            epb.Compare(key=b"k", target=epb.Compare.VALUE, value=b"x"),
        ],
        success=[op_put(b"k", prev_kv=True, lease=7)],
        failure=[
            epb.RequestOp(request_range=epb.RangeRequest(key=b"k", limit=1)),
            epb.RequestOp(request_delete_range=epb.DeleteRangeRequest(key=b"a", range_end=b"b")),
        ],
    )
    t = txn_command(req)
    assert t.compare[0].target == kpb.Compare.MOD and t.compare[0].result == kpb.Compare.LESS
    assert t.compare[0].mod_revision == 5 and t.compare[1].value == b"x"
    assert t.success[0].put.prev_kv and t.success[0].put.lease == 7
    # the range is read whole; its options are applied to the answer
    assert t.failure[0].range.key == b"k" and t.failure[0].range.limit == 0
    assert t.failure[1].delete_range.range_end == b"b"


def test_txn_lease_and_range_compares_translate() -> None:
    EC, KC = epb.Compare, kpb.Compare
    req = epb.TxnRequest(
        compare=[
            EC(key=b"k", target=EC.LEASE, result=EC.NOT_EQUAL, lease=42),
            EC(key=b"a", range_end=b"b", target=EC.CREATE, result=EC.GREATER, create_revision=3),
            EC(key=b"a", range_end=b"\0", target=EC.LEASE, result=EC.EQUAL, lease=0),
        ]
    )
    c = txn_command(req).compare
    assert (c[0].target, c[0].result, c[0].lease, c[0].range_end) == (
        KC.LEASE,
        KC.NOT_EQUAL,
        42,
        b"",
    )
    assert (c[1].target, c[1].create_revision, c[1].range_end) == (KC.CREATE, 3, b"b")
    assert c[2].range_end == b"\0" and c[2].WhichOneof("target_union") == "lease"


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (epb.TxnRequest(success=[op_put(b"")]), "key is not provided"),
        (epb.TxnRequest(success=[op_put(b"k"), op_put(b"k")]), "duplicate key"),
        (epb.TxnRequest(success=[op_put(b"k%d" % i) for i in range(129)]), "too many operations"),
        (epb.TxnRequest(compare=[epb.Compare(key=b"k", target=9)]), "unknown compare"),  # type: ignore[arg-type]
        (
            epb.TxnRequest(success=[epb.RequestOp(request_txn=epb.TxnRequest())]),
            "nested transactions",
        ),
        (epb.TxnRequest(success=[op_put(b"k", ignore_value=True)]), "ignore_value"),
    ],
)
def test_txn_refusals(req: epb.TxnRequest, message: str) -> None:
    with pytest.raises(EtcdError) as ei:
        txn_command(req)
    assert ei.value.code == StatusCode.INVALID_ARGUMENT
    assert ei.value.message.startswith("etcdserver: ") and message in ei.value.message


def test_error_messages_are_etcds() -> None:
    assert errors.COMPACTED.code == StatusCode.OUT_OF_RANGE
    assert errors.COMPACTED.message == "etcdserver: mvcc: required revision has been compacted"
    assert errors.LEASE_NOT_FOUND.message == "etcdserver: requested lease not found"
    assert errors.LEASE_NOT_FOUND.code == StatusCode.NOT_FOUND


def test_ids_stable_distinct_nonzero() -> None:
    a, b = member_id("12D3KooWA"), member_id("12D3KooWB")
    assert a == member_id("12D3KooWA") and a != b and a > 0 and a < 1 << 64
    assert member_id("") == 0
    assert cluster_id("/raft/a") != cluster_id("/raft/b")
    assert cluster_id("/raft/a", "x") != cluster_id("/raft/a", "y")


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:2379") == ("127.0.0.1", 2379)
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("localhost:2379") == ("localhost", 2379)
    for bad in ("2379", "127.0.0.1:", "::1:2379", "h:99999", "h:x"):
        with pytest.raises(EndpointError):
            parse_listen(bad)
    assert is_loopback("127.0.0.5") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("host")


def cfg(tmp_path: Path, **flags: object) -> None:
    load_config({"data_dir": str(tmp_path), **flags}, {})


def test_config_rules(tmp_path: Path) -> None:
    cfg(tmp_path, etcd_listen="127.0.0.1:2379")
    cfg(tmp_path, etcd_listen="[::1]:2379", etcd_namespace="/raft/default")
    with pytest.raises(ConfigError, match=r"not a loopback address.*needs TLS"):
        cfg(tmp_path, etcd_listen="0.0.0.0:2379")
    cfg(tmp_path, etcd_listen="0.0.0.0:2379", etcd_cert_file="c.pem", etcd_key_file="k.pem")
    with pytest.raises(ConfigError, match="give both or neither"):
        cfg(tmp_path, etcd_listen="127.0.0.1:2379", etcd_cert_file="c.pem")
    with pytest.raises(ConfigError, match="needs etcd_cert_file"):
        cfg(tmp_path, etcd_listen="127.0.0.1:2379", etcd_trusted_ca_file="ca.pem")
    with pytest.raises(ConfigError, match="not one of this daemon's namespaces"):
        cfg(tmp_path, etcd_listen="127.0.0.1:2379", etcd_namespace="/raft/other")
    with pytest.raises(ConfigError, match="etcd_listen"):
        cfg(tmp_path, etcd_listen="nonsense")
    with pytest.raises(ConfigError, match="need etcd_listen"):
        cfg(tmp_path, etcd_namespace="/raft/default")
    env = {"RAFTD_DATA_DIR": str(tmp_path), "RAFTD_ETCD_LISTEN": "127.0.0.1:2379"}
    assert load_config({}, env).etcd_listen == "127.0.0.1:2379"
    toml = tmp_path / "c.toml"
    toml.write_text('etcd_listen = "127.0.0.1:2380"\n')
    assert load_config({"data_dir": str(tmp_path)}, {}, toml).etcd_listen == "127.0.0.1:2380"


def test_snapshot_file_layout(tmp_path: Path) -> None:
    body = b"RAFTDBAK1\n" + b"x" * 1000
    pad = padding(len(body))
    blob = body + pad
    assert len(blob) % PAGE == 0
    f = tmp_path / "snap.db"
    f.write_bytes(blob + hashlib.sha256(blob).digest())
    assert payload_size(f) == len(body)
    plain = tmp_path / "plain"
    plain.write_bytes(body)
    assert payload_size(plain) is None


def test_cluster_id_static_and_after_formation() -> None:
    from types import SimpleNamespace

    from raftd.app.etcd import _ClusterId

    peers = ["/ip4/1.2.3.4/tcp/1/p2p/B", "/ip4/1.2.3.5/tcp/1/p2p/A"]
    static: Any = SimpleNamespace(formation=None, cfg=SimpleNamespace(peers=peers))
    assert _ClusterId(static, "/raft/x")() == cluster_id("/raft/x", "A,B")
    nf = SimpleNamespace(record=None)
    formed: Any = SimpleNamespace(
        formation=SimpleNamespace(namespaces={"/raft/x": nf}), cfg=SimpleNamespace(peers=[])
    )
    cid = _ClusterId(formed, "/raft/x")
    assert cid() == cluster_id("/raft/x")  # not formed yet
    nf.record = SimpleNamespace(id="c-123")
    assert cid() == cluster_id("/raft/x", "c-123")
    nf.record = SimpleNamespace(id="other")  # fixed once formed
    assert cid() == cluster_id("/raft/x", "c-123")


def test_status_codes_are_grpcs() -> None:
    """raftd's own enum carries gRPC's numbers, name for name."""
    theirs = {c.name: c.value[0] for c in grpc.StatusCode}
    assert {c.name: c.value for c in StatusCode} == theirs
