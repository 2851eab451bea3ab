"""raftd.etcd.hpackdec against the ``hpack`` package's encoder (a real HPACK encoder
nobody here wrote): sequences of blocks sharing one dynamic table, Huffman on and off,
table size changes, and blocks that must be refused."""

from __future__ import annotations

from collections.abc import Iterable

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.etcd.hpackdec import MAX_HEADER_LIST, HeaderBlockError, HeaderDecoder

_names = st.sampled_from(
    [b":path", b":method", b"content-type", b"grpc-timeout", b"te", b"user-agent", b"x-a"]
) | st.binary(min_size=1, max_size=40).map(lambda b: b.lower())
_field = st.tuples(_names, st.binary(max_size=300))
_block = st.lists(_field, max_size=12)


def _expected(fields: Iterable[tuple[bytes | str, bytes | str]]) -> dict[bytes, bytes]:
    return {_b(k): _b(v) for k, v in fields}


def _b(x: bytes | str) -> bytes:
    return x.encode() if isinstance(x, str) else bytes(x)


@settings(max_examples=300, deadline=None)
@given(
    blocks=st.lists(_block, min_size=1, max_size=8),
    huffman=st.booleans(),
    sizes=st.lists(st.sampled_from([0, 64, 256, 4096]), max_size=8),
)
def test_sequences_of_blocks_decode_as_encoded(
    blocks: list[list[tuple[bytes, bytes]]], huffman: bool, sizes: list[int]
) -> None:
    enc = hpack.Encoder()
    ours, theirs = HeaderDecoder(), hpack.Decoder()
    for i, fields in enumerate(blocks):
        if i < len(sizes):
            enc.header_table_size = sizes[i]  # emits a size update in the next block
        block = enc.encode(fields, huffman=huffman)
        want = _expected(theirs.decode(block, raw=True))
        assert ours.decode(block) == want == _expected(fields)


def test_never_indexed_and_indexed_fields_of_a_grpc_call() -> None:
    enc = hpack.Encoder()
    dec = HeaderDecoder()
    call = [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/etcdserverpb.KV/Put"),
        (b"content-type", b"application/grpc"),
        hpack.NeverIndexedHeaderTuple(b"authorization", b"secret"),
        (b"grpc-timeout", b"9999987u"),
    ]
    for timeout in (b"9999987u", b"9999962u", b"9999987u"):
        call[-1] = (b"grpc-timeout", timeout)
        got = dec.decode(enc.encode(call))
        assert got[b":path"] == b"/etcdserverpb.KV/Put"
        assert got[b"grpc-timeout"] == timeout
        assert got[b"authorization"] == b"secret"


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\xff", "ends inside"),  # an index whose integer never ends
        (b"\xbe", "neither table"),  # index 62: the dynamic table is empty
        (b"\x80", "neither table"),  # index 0
        (b"\x3f\xe2\x1f", "exceeds"),  # table size 4,097 > what SETTINGS allowed
        (b"\x00\x05ab", "past the header block"),  # name shorter than its length
        (b"\x00\x81\xff\x00", "Huffman"),  # EOS inside a Huffman string
        (b"\xff\xff\xff\xff\xff\xff\x01", "too large"),
    ],
)
def test_bad_blocks_are_refused_by_name(block: bytes, why: str) -> None:
    with pytest.raises(HeaderBlockError, match=why):
        HeaderDecoder().decode(block)


def test_a_small_block_cannot_expand_past_the_header_list_limit() -> None:
    dec = HeaderDecoder()
    big = (b"x-big", b"v" * 3000)
    enc = hpack.Encoder()
    assert dec.decode(enc.encode([big])) == {b"x-big": b"v" * 3000}
    # Each byte below repeats that entry (dynamic index 62): 30 bytes, 90 KB decoded.
    with pytest.raises(HeaderBlockError, match=str(MAX_HEADER_LIST)):
        dec.decode(b"\xbe" * 30)
