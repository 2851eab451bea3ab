"""The file layout ``etcdctl snapshot save`` accepts, around a raftd backup.

etcdctl checks that a snapshot is whole 512-byte pages (bbolt's) followed by a SHA-256
of them. raftd's Snapshot stream therefore sends the raftd backup, then padding, then the
SHA-256 of both. The padding ends with the backup's length and :data:`MARK`, so
``raftd snapshot restore`` finds the backup inside such a file (:func:`payload_size`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MARK", "PAGE", "padding", "payload_size"]

PAGE = 512
MARK = b"RAFTDPAD"
_TRAILER = 16  # 8-byte length + MARK


def padding(body_size: int) -> bytes:
    """What follows a backup of ``body_size`` bytes so that it fills whole pages."""
    n = (-(body_size + _TRAILER)) % PAGE
    return bytes(n) + body_size.to_bytes(8, "big") + MARK


def payload_size(path: Path) -> int | None:
    """The size of the raftd backup inside an etcdctl-saved file, or ``None`` if the
    file is not one (then it is a plain raftd backup, or something else)."""
    size = path.stat().st_size
    if size % PAGE != 32 or size < PAGE + 32:
        return None
    with open(path, "rb") as f:
        f.seek(size - 32 - _TRAILER)
        tail = f.read(_TRAILER)
    if tail[8:] != MARK:
        return None
    body = int.from_bytes(tail[:8], "big")
    return body if 0 < body <= size - 32 - _TRAILER else None
