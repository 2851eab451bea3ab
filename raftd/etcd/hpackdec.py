"""HPACK (RFC 7541) header block decoding for the etcd endpoint's requests.

The ``hpack`` package's ``Decoder`` builds a ``HeaderTuple`` object, checks the logging
level and re-encodes names for every field; a gRPC request's block of ten fields cost as
much as the rest of reading the request. This decoder keeps only what the endpoint needs:
name -> value, as bytes. It still uses that package's static table and Huffman decoding,
which are facts of the format, not re-typed here.

Contract of :meth:`HeaderDecoder.decode`: one header block in, its fields as a dict (a
later field of the same name wins), the dynamic table updated as the peer's encoder
expects; a block that breaks the format, refers past the tables, grows the table beyond
what we allow, or decodes to more than :data:`MAX_HEADER_LIST` bytes raises
:class:`HeaderBlockError`, after which the connection must be closed (its table is no
longer in step with the peer's).
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["DEFAULT_TABLE_SIZE", "MAX_HEADER_LIST", "HeaderBlockError", "HeaderDecoder"]

#: SETTINGS_HEADER_TABLE_SIZE we leave at its default: the largest table the peer may use.
DEFAULT_TABLE_SIZE = 4096
#: Decoded size (RFC 9113 §6.5.2: names, values and 32 bytes per field) we accept.
MAX_HEADER_LIST = 64 << 10

_STATIC = HeaderTable.STATIC_TABLE
_N_STATIC = len(_STATIC)


class HeaderBlockError(Exception):
    """The header block cannot be decoded (COMPRESSION_ERROR for the connection)."""


class HeaderDecoder:
    """The decoding side of one connection's HPACK context."""

    __slots__ = ("_dynamic", "_max", "_size")

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE) -> None:
        self._dynamic: deque[tuple[bytes, bytes]] = deque()  # newest first
        self._size = 0
        self._max = max_table_size  # the size the peer set last (at most the default)

    def _entry(self, index: int) -> tuple[bytes, bytes]:
        if 0 < index <= _N_STATIC:
            return _STATIC[index - 1]
        i = index - _N_STATIC - 1
        if index <= 0 or i >= len(self._dynamic):
            raise HeaderBlockError(f"header index {index} is in neither table")
        return self._dynamic[i]

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        dyn = self._dynamic
        while dyn and self._size + size > self._max:
            n, v = dyn.pop()
            self._size -= len(n) + len(v) + 32
        if size <= self._max:  # a larger entry just empties the table (RFC 7541 §4.4)
            dyn.appendleft((name, value))
            self._size += size

    def _resize(self, size: int) -> None:
        if size > DEFAULT_TABLE_SIZE:
            raise HeaderBlockError(f"table size {size} exceeds {DEFAULT_TABLE_SIZE}")
        self._max = size
        dyn = self._dynamic
        while dyn and self._size > size:
            n, v = dyn.pop()
            self._size -= len(n) + len(v) + 32

    def decode(self, block: bytes) -> dict[bytes, bytes]:
        """The block's fields (see the module doc)."""
        out: dict[bytes, bytes] = {}
        pos, end, total = 0, len(block), 0
        try:
            while pos < end:
                b = block[pos]
                if b & 0x80:  # indexed field
                    index, pos = _integer(block, pos, 7)
                    name, value = self._entry(index)
                else:
                    if b & 0x40:  # literal, added to the table
                        index, pos = _integer(block, pos, 6)
                    elif b & 0x20:  # dynamic table size update
                        size, pos = _integer(block, pos, 5)
                        self._resize(size)
                        continue
                    else:  # literal, not indexed / never indexed
                        index, pos = _integer(block, pos, 4)
                    if index:
                        name = self._entry(index)[0]
                    else:
                        name, pos = _string(block, pos)
                    value, pos = _string(block, pos)
                    if b & 0x40:
                        self._add(name, value)
                total += len(name) + len(value) + 32
                if total > MAX_HEADER_LIST:
                    raise HeaderBlockError(f"header list larger than {MAX_HEADER_LIST} bytes")
                out[name] = value
        except IndexError:
            raise HeaderBlockError("header block ends inside a field") from None
        except HPACKDecodingError as exc:
            raise HeaderBlockError(f"bad Huffman string: {exc}") from None
        return out


def _integer(data: bytes, pos: int, prefix: int) -> tuple[int, int]:
    """An integer with a ``prefix``-bit prefix (RFC 7541 §5.1) at ``pos``: (value, next)."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HeaderBlockError("integer too large")


def _string(data: bytes, pos: int) -> tuple[bytes, int]:
    """A string literal (RFC 7541 §5.2) at ``pos``: (bytes, next)."""
    huffman = data[pos] & 0x80
    length, pos = _integer(data, pos, 7)
    stop = pos + length
    if stop > len(data):
        raise HeaderBlockError("string runs past the header block")
    raw = data[pos:stop]
    return (decode_huffman(raw) if huffman else raw), stop
