"""Builders for serialized KV commands (the data of Raft log entries)."""

from __future__ import annotations

from collections.abc import Iterable

from raftd.wire.pb import kv_pb2 as pb

__all__ = [
    "cas",
    "compare",
    "delete",
    "delete_range",
    "encode",
    "op_delete",
    "op_delete_range",
    "op_get",
    "op_put",
    "put",
    "txn",
]


def encode(cmd: pb.Command, *, client_id: bytes = b"", seq: int = 0) -> bytes:
    """Serialize ``cmd`` with its deduplication identity (empty client id: none)."""
    cmd.client_id = client_id
    cmd.seq = seq
    return cmd.SerializeToString(deterministic=True)


def put(key: bytes, value: bytes, *, client_id: bytes = b"", seq: int = 0) -> bytes:
    return encode(pb.Command(put=pb.PutRequest(key=key, value=value)), client_id=client_id, seq=seq)


def delete(key: bytes, *, client_id: bytes = b"", seq: int = 0) -> bytes:
    return encode(pb.Command(delete=pb.DeleteRequest(key=key)), client_id=client_id, seq=seq)


def delete_range(key: bytes, range_end: bytes, *, client_id: bytes = b"", seq: int = 0) -> bytes:
    cmd = pb.Command(delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end))
    return encode(cmd, client_id=client_id, seq=seq)


def cas(
    key: bytes,
    new_value: bytes,
    *,
    value: bytes | None = None,
    mod_revision: int | None = None,
    absent: bool = False,
    client_id: bytes = b"",
    seq: int = 0,
) -> bytes:
    """Compare-and-swap: exactly one of ``value``, ``mod_revision`` or ``absent=True``."""
    if (value is not None) + (mod_revision is not None) + absent != 1:
        raise ValueError("cas needs exactly one of value, mod_revision, absent")
    req = pb.CompareAndSwapRequest(key=key, new_value=new_value)
    if value is not None:
        req.value = value
    elif mod_revision is not None:
        req.mod_revision = mod_revision
    else:
        req.absent = True
    return encode(pb.Command(cas=req), client_id=client_id, seq=seq)


def compare(key: bytes, target: str, result: str, operand: int | bytes) -> pb.Compare:
    """``compare(b"k", "mod", "=", 5)``; targets: value, version, create, mod; results:
    ``=``, ``!=``, ``>``, ``<``."""
    results = {
        "=": pb.Compare.EQUAL,
        "!=": pb.Compare.NOT_EQUAL,
        ">": pb.Compare.GREATER,
        "<": pb.Compare.LESS,
    }
    c = pb.Compare(key=key, result=results[result])
    if target == "value":
        if not isinstance(operand, bytes):
            raise TypeError("a value compare needs bytes")
        c.target, c.value = pb.Compare.VALUE, operand
    elif isinstance(operand, int):
        field = {"version": "version", "create": "create_revision", "mod": "mod_revision"}
        targets = {
            "version": pb.Compare.VERSION,
            "create": pb.Compare.CREATE,
            "mod": pb.Compare.MOD,
        }
        c.target = targets[target]
        setattr(c, field[target], operand)
    else:
        raise TypeError(f"a {target} compare needs an int")
    return c


def txn(
    compares: Iterable[pb.Compare],
    success: Iterable[pb.RequestOp],
    failure: Iterable[pb.RequestOp] = (),
    *,
    client_id: bytes = b"",
    seq: int = 0,
) -> bytes:
    req = pb.TxnRequest(compare=list(compares), success=list(success), failure=list(failure))
    return encode(pb.Command(txn=req), client_id=client_id, seq=seq)


def op_put(key: bytes, value: bytes) -> pb.RequestOp:
    return pb.RequestOp(put=pb.PutRequest(key=key, value=value))


def op_delete(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(delete=pb.DeleteRequest(key=key))


def op_delete_range(key: bytes, range_end: bytes) -> pb.RequestOp:
    return pb.RequestOp(delete_range=pb.DeleteRangeRequest(key=key, range_end=range_end))


def op_get(key: bytes, range_end: bytes = b"", limit: int = 0) -> pb.RequestOp:
    return pb.RequestOp(range=pb.RangeRequest(key=key, range_end=range_end, limit=limit))
