"""Unsigned-varint length-delimited frames, sans I/O.

A frame on the wire is ``uvarint(len(payload)) || payload``, the multiformats
unsigned-varint (LEB128: 7 bits per byte, least significant group first, high bit set on
every byte but the last). The same codec serves libp2p streams and the local API socket,
so it knows nothing about what the payloads are.

:class:`FrameDecoder` is fed whatever chunks the transport read (any split, including
one byte at a time) and hands back complete payloads. It never buffers a frame larger
than its limit: an oversized length prefix raises :class:`FrameTooLarge` as soon as the
prefix itself is complete, before any of the body is accepted.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "MAX_VARINT_BYTES",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "decode_varint",
    "encode_frame",
    "encode_frames",
    "encode_varint",
]

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
#: A uint64 needs at most 10 groups of 7 bits.
MAX_VARINT_BYTES = 10

_U64_MAX = (1 << 64) - 1


class FrameError(ValueError):
    """The byte stream is not a valid sequence of frames; the stream must be dropped."""


class FrameTooLarge(FrameError):
    """A length prefix announced a frame over the decoder's limit."""

    def __init__(self, size: int, limit: int, *, exact: bool = True) -> None:
        what = f"{size}" if exact else f"at least {size}"
        super().__init__(f"frame of {what} bytes exceeds the limit of {limit} bytes")
        self.size = size  # the announced size (a lower bound if not ``exact``)
        self.limit = limit


def encode_varint(value: int) -> bytes:
    """Minimal unsigned-varint encoding of ``0 <= value < 2**64``."""
    if not 0 <= value <= _U64_MAX:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int] | None:
    """Parse a varint at ``buf[pos:]``.

    Returns ``(value, next_pos)``, or ``None`` if the buffer ends inside the varint.
    Raises :class:`FrameError` if it runs past :data:`MAX_VARINT_BYTES` or overflows
    64 bits. Non-minimal encodings (``0x80 0x00``) are accepted.
    """
    value = 0
    shift = 0
    end = len(buf)
    i = pos
    while i < end:
        if i - pos >= MAX_VARINT_BYTES:
            raise FrameError(f"varint longer than {MAX_VARINT_BYTES} bytes")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            if value > _U64_MAX:
                raise FrameError("varint overflows 64 bits")
            return value, i
        shift += 7
    if i - pos >= MAX_VARINT_BYTES:
        raise FrameError(f"varint longer than {MAX_VARINT_BYTES} bytes")
    return None


def encode_frame(payload: bytes | bytearray | memoryview) -> bytes:
    """One frame: length prefix, then the payload."""
    return encode_varint(len(payload)) + bytes(payload)


def encode_frames(payloads: list[bytes]) -> bytes:
    """Several frames concatenated, for one write (batching is what makes streams fast)."""
    parts: list[bytes] = []
    for p in payloads:
        parts.append(encode_varint(len(p)))
        parts.append(p)
    return b"".join(parts)


class FrameDecoder:
    """Incremental frame parser with a size limit.

    ``feed(data)`` returns the payloads completed by ``data`` (possibly none, possibly
    many). After it raised :class:`FrameError` the decoder is poisoned: every later call
    raises again, because the stream can no longer be resynchronized.
    """

    __slots__ = ("_buf", "_error", "_need", "_pos", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < 0:
            raise ValueError("max_frame_size must be >= 0")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed bytes in _buf
        self._need: int | None = None  # body length of the frame in progress, if known
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buf) - self._pos

    @property
    def at_boundary(self) -> bool:
        """True if no partial frame is buffered (a clean place for the stream to end)."""
        return self.buffered == 0

    @property
    def pending_frame_size(self) -> int | None:
        """Declared size of the frame being received, once its prefix is complete."""
        return self._need

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Append ``data``; return every frame it completes, in order.

        Raises :class:`FrameTooLarge` when a prefix announces more than
        ``max_frame_size`` bytes (the body is not buffered), :class:`FrameError` for a
        malformed prefix.
        """
        if self._error is not None:
            raise self._error
        self._buf += data
        try:
            frames = self._parse()
        except FrameError as exc:
            self._error = exc
            # Drop what was buffered: a poisoned decoder must not pin memory.
            self._buf = bytearray()
            self._pos = 0
            self._need = None
            raise
        self._compact()
        return frames

    def _parse(self) -> list[bytes]:
        frames: list[bytes] = []
        # Slicing a view copies once (a bytearray slice would copy twice). The view must
        # be released before the buffer is resized, hence the context manager.
        with memoryview(self._buf) as view:
            while True:
                if self._need is None:
                    parsed = decode_varint(view, self._pos)
                    if parsed is None:
                        self._check_partial_prefix()
                        break
                    size, body = parsed
                    if size > self.max_frame_size:
                        raise FrameTooLarge(size, self.max_frame_size)
                    self._need = size
                    self._pos = body
                end = self._pos + self._need
                if end > len(view):
                    break
                frames.append(bytes(view[self._pos : end]))
                self._pos = end
                self._need = None
        return frames

    def _check_partial_prefix(self) -> None:
        # An incomplete prefix whose low-order groups already exceed the limit can only
        # grow: refuse it now rather than after the next read.
        value = 0
        shift = 0
        for byte in self._buf[self._pos :]:
            value |= (byte & 0x7F) << shift
            shift += 7
        if value > self.max_frame_size:
            raise FrameTooLarge(value, self.max_frame_size, exact=False)

    def _compact(self) -> None:
        # Drop consumed bytes once they dominate, keeping appends amortized O(1).
        if self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
