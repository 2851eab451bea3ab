"""The key-range conventions of the API protocol (etcd's): how a ``key`` and a
``range_end`` select keys. Shared by the clients that build ranges and by the services
and the state machine that read them, so that all agree byte for byte.

Pure functions, no I/O.
"""

from __future__ import annotations

__all__ = ["key_bounds", "prefix_end"]


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that selects every key starting with ``prefix`` (etcd's
    ``GetPrefixRangeEnd``): the prefix with its last non-0xff byte incremented, or
    ``b"\\x00"`` (every key) when it has none."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\x00"


def key_bounds(key: bytes, range_end: bytes) -> tuple[bytes, bytes | None]:
    """etcd range conventions -> ``[start, end)``; ``end=None`` is unbounded.

    An empty ``range_end`` selects ``key`` alone, ``b"\\x00"`` every key >= ``key``, any
    other value is the exclusive end."""
    if not range_end:
        return key, key + b"\x00"
    if range_end == b"\x00":
        return key, None
    return key, range_end
