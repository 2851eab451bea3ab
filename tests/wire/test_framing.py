"""Length-delimited frame codec: round trips under any split, limits, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.wire.framing import (
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    decode_varint,
    encode_frame,
    encode_frames,
    encode_varint,
)


def split_feed(dec: FrameDecoder, data: bytes, cuts: list[int]) -> list[bytes]:
    out: list[bytes] = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        out += dec.feed(data[prev:c])
        prev = c
    return out


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_varint_roundtrip(n: int) -> None:
    enc = encode_varint(n)
    assert len(enc) <= 10
    assert decode_varint(enc) == (n, len(enc))
    assert decode_varint(enc[:-1]) is None


def test_varint_known_values() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x80\x01"
    assert encode_varint(300) == b"\xac\x02"
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(ValueError):
        encode_varint(1 << 64)


@settings(max_examples=300)
@given(
    st.lists(st.binary(max_size=300), max_size=20),
    st.lists(st.integers(min_value=0, max_value=7000), max_size=30),
)
def test_frames_roundtrip_under_any_split(payloads: list[bytes], cuts: list[int]) -> None:
    data = encode_frames(payloads)
    assert data == b"".join(encode_frame(p) for p in payloads)
    dec = FrameDecoder(max_frame_size=300)
    cuts = [c for c in cuts if c <= len(data)]
    assert split_feed(dec, data, cuts) == payloads
    assert dec.at_boundary


def test_byte_at_a_time() -> None:
    payloads = [b"", b"a", b"x" * 200, b"\x00" * 129]
    data = encode_frames(payloads)
    dec = FrameDecoder()
    out: list[bytes] = []
    for i in range(len(data)):
        out += dec.feed(data[i : i + 1])
    assert out == payloads


def test_oversized_prefix_raises_before_body() -> None:
    dec = FrameDecoder(max_frame_size=1000)
    with pytest.raises(FrameTooLarge) as ei:
        dec.feed(encode_varint(1001))  # no body at all yet
    assert ei.value.size == 1001
    assert ei.value.limit == 1000
    assert "1001" in str(ei.value) and "1000" in str(ei.value)
    assert dec.buffered == 0
    # Poisoned: the stream cannot be resynchronized.
    with pytest.raises(FrameTooLarge):
        dec.feed(b"\x00")


def test_oversized_partial_prefix_is_refused_early() -> None:
    dec = FrameDecoder(max_frame_size=100)
    # 0xff has the continuation bit set: the low 7 bits alone (127) already exceed 100.
    with pytest.raises(FrameTooLarge, match="at least 127"):
        dec.feed(b"\xff")


def test_frame_at_limit_is_accepted() -> None:
    dec = FrameDecoder(max_frame_size=5)
    assert dec.feed(encode_frame(b"12345")) == [b"12345"]


def test_huge_declared_size_does_not_allocate() -> None:
    dec = FrameDecoder()
    with pytest.raises(FrameTooLarge):
        dec.feed(encode_varint((1 << 64) - 1))


def test_varint_longer_than_ten_bytes() -> None:
    dec = FrameDecoder(max_frame_size=1 << 70)
    with pytest.raises(FrameError, match="longer than 10 bytes"):
        dec.feed(b"\x80" * 11)
    # Also when the 11 bytes arrive one at a time.
    dec = FrameDecoder(max_frame_size=1 << 70)
    with pytest.raises(FrameError):
        for _ in range(11):
            dec.feed(b"\x80")


def test_varint_overflowing_64_bits() -> None:
    with pytest.raises(FrameError, match="overflows"):
        decode_varint(b"\xff" * 9 + b"\x7f")


def test_pending_frame_size() -> None:
    dec = FrameDecoder()
    assert dec.feed(encode_varint(10) + b"abc") == []
    assert dec.pending_frame_size == 10
    assert not dec.at_boundary
    assert dec.feed(b"defghij") == [b"abcdefghij"]
    assert dec.pending_frame_size is None


def test_large_frame_in_chunks() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    data = encode_frame(payload)
    dec = FrameDecoder()
    out: list[bytes] = []
    for i in range(0, len(data), 65536):
        out += dec.feed(data[i : i + 65536])
    assert out == [payload]
    assert dec.buffered == 0


@settings(max_examples=1000)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=64))
def test_fuzz_decoder_raises_only_frame_error(data: bytes, limit: int) -> None:
    dec = FrameDecoder(max_frame_size=limit)
    try:
        for f in dec.feed(data):
            assert len(f) <= limit
    except FrameError:
        pass
