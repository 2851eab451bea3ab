"""The per-frame AES-GCM envelope: format, round trips, tampering, replay, binding,
rotation, the null envelope, fuzzing, and a throughput print."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from hashlib import sha256

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftd.security.envelope import (
    FRAME_OVERHEAD,
    MAX_SEQ,
    NULL_HEADER,
    AuthenticationFailed,
    Envelope,
    EnvelopeError,
    KeyedEnvelope,
    MalformedFrame,
    NullEnvelope,
    Opener,
    ReplayDetected,
    Sealer,
    SequenceExhausted,
    StreamKind,
    UnknownKey,
    accept_duplex,
    header_size,
    make_envelope,
    open_duplex,
)
from raftd.security.keys import Key, KeyRing, NoCommonKey

NS = "/raft/cron"
A = "12D3KooWAlpha"
B = "12D3KooWBravo"
C = "12D3KooWCharlie"


def make_key(seed: int) -> Key:
    return Key(sha256(b"envelope test key %d" % seed).digest(), origin=f"test key {seed}")


K1, K2, K3 = make_key(1), make_key(2), make_key(3)
RING = KeyRing(K1)


def sealer(
    ring: KeyRing = RING,
    *,
    ns: str = NS,
    kind: StreamKind = "raft",
    src: str = A,
    dst: str = B,
    peer_accepts: set[str] | frozenset[str] | None = None,
    max_frame_size: int = 1 << 20,
) -> Sealer:
    return Sealer(
        ring,
        ns,
        kind,
        local_peer=src,
        remote_peer=dst,
        peer_accepts=peer_accepts,
        max_frame_size=max_frame_size,
    )


def opener(
    ring: KeyRing = RING,
    *,
    ns: str = NS,
    kind: StreamKind = "raft",
    src: str = A,
    dst: str = B,
    max_frame_size: int = 1 << 20,
) -> Opener:
    """The receiving side of stream direction ``src -> dst`` (it runs on ``dst``)."""
    return Opener(ring, ns, kind, local_peer=dst, remote_peer=src, max_frame_size=max_frame_size)


def connected(s: Sealer, **kw: object) -> Opener:
    o = opener(**kw)  # type: ignore[arg-type]
    o.accept_header(s.header)
    return o


def bit_flips(data: bytes) -> Iterator[bytes]:
    for i in range(len(data) * 8):
        buf = bytearray(data)
        buf[i // 8] ^= 1 << (i % 8)
        yield bytes(buf)


# ------------------------------------------------------------------ format, basics


def test_round_trip_in_order() -> None:
    s = sealer()
    o = connected(s)
    payloads = [b"", b"x", b"hello raft", bytes(range(256)) * 40, b"\x00" * 1000]
    for p in payloads:
        assert o.open(s.seal(p)) == p
    assert s.frames_sealed == o.frames_opened == len(payloads)
    assert o.key_id == s.key_id == K1.id
    assert o.peer_accepts == frozenset({K1.id})


def test_bytes_like_inputs() -> None:
    s = sealer()
    o = connected(s)
    assert o.open(bytearray(s.seal(bytearray(b"abc")))) == b"abc"
    assert o.open(memoryview(s.seal(memoryview(b"xabcx")[1:4]))) == b"abc"
    fresh = opener()
    fresh.accept_header(memoryview(s.header))


def test_header_layout() -> None:
    ring = KeyRing(K1, next=K2)
    s = sealer(ring)
    h = s.header
    assert len(h) == header_size(2) == 42 + 16
    assert h[0] == 1  # version
    assert h[1:9].hex() == K1.id  # sealed under current: peer's accepted ids unknown
    salt = h[9:25]
    assert h[25] == 2
    assert [h[26:34].hex(), h[34:42].hex()] == [K2.id, K1.id]  # newest first
    assert len(h[42:]) == 16  # tag
    assert salt != sealer(ring).header[9:25]  # fresh per stream
    assert len(sealer().header) == 50


def test_frame_layout() -> None:
    s = sealer()
    for seq in range(3):
        frame = s.seal(b"payload!")
        assert len(frame) == FRAME_OVERHEAD + 8
        assert struct.unpack(">Q", frame[:8]) == (seq,)
        assert b"payload!" not in frame


def test_same_plaintext_differs_across_streams() -> None:
    a, b = sealer(), sealer()
    assert a.header != b.header
    assert a.seal(b"same")[8:] != b.seal(b"same")[8:]


def test_sealer_repr_shows_no_key_bytes() -> None:
    s = sealer()
    o = connected(s)
    for text in (repr(s), repr(o), repr(KeyedEnvelope(RING))):
        assert K1.derive("transport", NS).hex() not in text
        assert K1.id in text


# ------------------------------------------------------------- tampering, replay


def test_every_bit_flip_of_a_frame_is_rejected() -> None:
    s = sealer()
    frame = s.seal(b"hello")
    assert len(frame) == 29
    for bad in bit_flips(frame):
        o = connected(s)
        with pytest.raises((AuthenticationFailed, ReplayDetected)):
            o.open(bad)
    assert connected(s).open(frame) == b"hello"  # the untouched frame still opens


def test_every_bit_flip_of_a_later_frame_is_rejected() -> None:
    s = sealer()
    frames = [s.seal(b"abc") for _ in range(3)]
    for bad in bit_flips(frames[2]):
        o = connected(s)
        o.open(frames[0])
        o.open(frames[1])
        with pytest.raises(EnvelopeError):
            o.open(bad)


def test_every_bit_flip_of_the_header_is_rejected() -> None:
    s = sealer(KeyRing(K1, next=K2))
    ring = KeyRing(K1, next=K2)
    for bad in bit_flips(s.header):
        with pytest.raises((AuthenticationFailed, UnknownKey, MalformedFrame)):
            opener(ring).accept_header(bad)


def test_truncated_and_extended_frames_are_rejected() -> None:
    s = sealer()
    frame = s.seal(b"some payload")
    for cut in range(len(frame)):
        with pytest.raises((MalformedFrame, AuthenticationFailed)):
            connected(s).open(frame[:cut])
    with pytest.raises(AuthenticationFailed):
        connected(s).open(frame + b"\x00")
    with pytest.raises(MalformedFrame, match="shorter than 24"):
        connected(s).open(frame[:23])
    for cut in range(len(s.header)):
        with pytest.raises(EnvelopeError):
            opener().accept_header(s.header[:cut])


def test_replayed_frame_is_rejected() -> None:
    s = sealer()
    o = connected(s)
    f0 = s.seal(b"one")
    assert o.open(f0) == b"one"
    with pytest.raises(ReplayDetected, match="expected 1"):
        o.open(f0)


def test_reordered_frames_are_rejected() -> None:
    s = sealer()
    o = connected(s)
    f0, f1 = s.seal(b"0"), s.seal(b"1")
    with pytest.raises(ReplayDetected):
        o.open(f1)
    with pytest.raises(EnvelopeError):  # failed for good: the stream must be reset
        o.open(f0)


def test_dropped_frame_is_detected() -> None:
    s = sealer()
    o = connected(s)
    f0, _f1, f2 = s.seal(b"0"), s.seal(b"1"), s.seal(b"2")
    o.open(f0)
    with pytest.raises(ReplayDetected):
        o.open(f2)


def test_forged_sequence_number_fails_authentication() -> None:
    s = sealer()
    o = connected(s)
    s.seal(b"0")
    f1 = s.seal(b"1")
    with pytest.raises(AuthenticationFailed):
        o.open(struct.pack(">Q", 0) + f1[8:])  # claims seq 0 with seq 1's ciphertext


def test_frame_from_another_stream_is_rejected() -> None:
    one, two = sealer(), sealer()  # same peers, kind, namespace and key; other salt
    o = connected(one)
    with pytest.raises(AuthenticationFailed):
        o.open(two.seal(b"from the other stream"))
    # A stream spliced from two headers/frames fails as well.
    o2 = connected(two)
    with pytest.raises(AuthenticationFailed):
        o2.open(one.seal(b"x"))


def test_header_twice_and_frame_before_header() -> None:
    s = sealer()
    with pytest.raises(MalformedFrame, match="before the stream header"):
        opener().open(s.seal(b"x"))
    o = connected(s)
    with pytest.raises(MalformedFrame, match="twice"):
        o.accept_header(s.header)


# ------------------------------------------------------------------ keys, binding


def test_unknown_key_is_rejected() -> None:
    s = sealer(KeyRing(K2))
    with pytest.raises(UnknownKey, match=K2.id) as info:
        opener(RING).accept_header(s.header)
    assert K1.id in str(info.value)  # says what this node accepts


def test_wrong_key_under_a_known_id_fails_authentication() -> None:
    s = sealer(KeyRing(K2))
    forged = s.header[:1] + bytes.fromhex(K1.id) + s.header[9:]
    with pytest.raises(AuthenticationFailed):
        opener(RING).accept_header(forged)


@pytest.mark.parametrize(
    "where",
    [
        {"ns": "/raft/other"},
        {"kind": "cmd"},
        {"kind": "snap"},
        {"src": B, "dst": A},  # reflected: the other direction
        {"dst": C},  # meant for another receiver
        {"src": C},  # claimed to come from another sender
    ],
)
def test_wrong_context_is_rejected(where: dict[str, str]) -> None:
    s = sealer()
    with pytest.raises(AuthenticationFailed):
        opener(**where).accept_header(s.header)  # type: ignore[arg-type]


def test_frame_aad_binds_context_even_with_a_matching_header() -> None:
    """Frames are bound through their AAD too, not only through the stream key."""
    s = sealer()
    o = connected(s)
    o._aad_prefix = sha256(b"other context").digest()  # as if another context's header
    with pytest.raises(AuthenticationFailed):
        o.open(s.seal(b"x"))


def flip_last(frame: bytes) -> bytes:
    """The frame with its last (tag) byte changed.

    Flip a bit rather than overwrite with a constant: the tag is random, and
    one frame in 256 already ends in the constant.
    """
    return frame[:-1] + bytes([frame[-1] ^ 0x01])


def test_errors_name_peer_and_kind_but_no_key_material() -> None:
    secrets = [K1.derive(p, NS).hex() for p in ("transport", "snapshot", "commands")]
    s = sealer(kind="snap")
    errors: list[EnvelopeError] = []
    cases: list[Callable[[], object]] = [
        lambda: opener(kind="snap").open(b"\x00" * 30),
        lambda: opener(kind="snap").accept_header(b"\x01" * 50),
        lambda: opener(KeyRing(K2), kind="snap").accept_header(s.header),
        lambda: opener(kind="snap", ns="/raft/x").accept_header(s.header),
        lambda: connected(s, kind="snap").open(flip_last(s.seal(b"a"))),
        lambda: connected(s, kind="snap").open(b"\x00" * 10),
    ]
    for case in cases:
        with pytest.raises(EnvelopeError) as info:
            case()
        errors.append(info.value)
    for err in errors:
        assert A in str(err) and "snap" in str(err)
        assert err.peer == A and err.kind == "snap"
        for secret in secrets:
            assert secret not in str(err) and secret not in repr(err)


# -------------------------------------------------------------------- size limits


def test_max_frame_size() -> None:
    s = sealer(max_frame_size=100)
    assert s.max_plaintext == 76
    frame = s.seal(b"x" * 76)
    assert len(frame) == 100
    assert connected(s, max_frame_size=100).open(frame) == b"x" * 76
    with pytest.raises(ValueError, match="exceeds"):
        s.seal(b"x" * 77)
    assert s.frames_sealed == 1  # a refused plaintext uses no sequence number
    with pytest.raises(MalformedFrame, match="exceeds"):
        connected(s, max_frame_size=99).open(frame)


def test_sequence_never_wraps() -> None:
    s = sealer()
    o = connected(s)
    s._seq = MAX_SEQ
    o._seq = MAX_SEQ
    assert o.open(s.seal(b"last")) == b"last"
    with pytest.raises(SequenceExhausted):
        s.seal(b"one too many")
    with pytest.raises(SequenceExhausted):
        s.seal(b"")


# --------------------------------------------------------------- no key vs key


def test_null_envelope_round_trip() -> None:
    env = NullEnvelope(max_frame_size=10)
    s = env.sealer(NS, "raft", local_peer=A, remote_peer=B, peer_accepts={K1.id})
    o = env.opener(NS, "raft", local_peer=B, remote_peer=A)
    assert s.header == NULL_HEADER and s.key_id is None and o.peer_accepts is None
    o.accept_header(s.header)
    assert o.open(s.seal(b"plain")) == b"plain"
    with pytest.raises(ValueError):
        s.seal(b"x" * 11)
    with pytest.raises(MalformedFrame):
        o.open(b"x" * 11)
    assert not env.encrypted and env.ring is None
    assert not s.stale(env.ring, None) and not o.stale(env.ring)


def test_keyed_opener_refuses_unencrypted_peer() -> None:
    null = NullEnvelope().sealer(NS, "raft", local_peer=A, remote_peer=B)
    with pytest.raises(AuthenticationFailed, match="unencrypted"):
        opener().accept_header(null.header)
    plaintext_frame = null.seal(b"\x0a\x04\x08\x01\x10\x02 a protobuf batch")
    with pytest.raises(EnvelopeError):
        opener().accept_header(plaintext_frame)
    s = sealer()
    o = connected(s)
    with pytest.raises(EnvelopeError):
        o.open(plaintext_frame)


def test_null_opener_refuses_encrypted_peer() -> None:
    o = NullEnvelope().opener(NS, "raft", local_peer=B, remote_peer=A)
    with pytest.raises(UnknownKey, match="no shared key"):
        o.accept_header(sealer().header)
    with pytest.raises(EnvelopeError):
        o.open(b"anything")  # failed for good
    o2 = NullEnvelope().opener(NS, "raft", local_peer=B, remote_peer=A)
    with pytest.raises(MalformedFrame):
        o2.open(b"before header")


def test_make_envelope() -> None:
    assert isinstance(make_envelope(None), NullEnvelope)
    env: Envelope = make_envelope(RING, max_frame_size=4096)  # both satisfy the protocol
    env = make_envelope(None)
    env = make_envelope(RING, max_frame_size=4096)
    assert isinstance(env, KeyedEnvelope) and env.encrypted and env.max_frame_size == 4096


# ------------------------------------------------------------------------ rotation


def test_rotation_end_to_end() -> None:
    """Two nodes A and B move from K1 to K2 without a stream being refused, and a node
    still on K1 is cut off only when K1 is retired."""
    env_a, env_b = KeyedEnvelope(KeyRing(K1)), KeyedEnvelope(KeyRing(K1))
    seen_by_a: dict[str, frozenset[str] | None] = {}  # peer -> accepted ids (transport cache)
    seen_by_b: dict[str, frozenset[str] | None] = {}

    def send(
        src_env: KeyedEnvelope,
        dst_env: KeyedEnvelope,
        src: str,
        dst: str,
        cache_src: dict[str, frozenset[str] | None],
        cache_dst: dict[str, frozenset[str] | None],
    ) -> tuple[Sealer, Opener]:
        s = src_env.sealer(NS, "raft", local_peer=src, remote_peer=dst,
                           peer_accepts=cache_src.get(dst))  # fmt: skip
        o = dst_env.opener(NS, "raft", local_peer=dst, remote_peer=src)
        o.accept_header(s.header)
        cache_dst[src] = o.peer_accepts  # the receiver learns what the sender accepts
        assert o.open(s.seal(b"append entries")) == b"append entries"
        return s, o

    # Stage 1: K2 distributed as next; A reloads first.
    env_a.reload(KeyRing(K1, next=K2))
    s_ab, _ = send(env_a, env_b, A, B, seen_by_a, seen_by_b)
    assert s_ab.key_id == K1.id  # B's accepted ids unknown: current
    s_ba, o_ba = send(env_b, env_a, B, A, seen_by_b, seen_by_a)
    assert s_ba.key_id == K1.id and seen_by_a[B] == frozenset({K1.id})
    s_ab, _ = send(env_a, env_b, A, B, seen_by_a, seen_by_b)
    assert s_ab.key_id == K1.id  # B does not accept K2 yet

    env_b.reload(KeyRing(K1, next=K2))
    assert not o_ba.stale(env_a.ring)  # K1 still accepted
    s_ba, _ = send(env_b, env_a, B, A, seen_by_b, seen_by_a)  # B advertises K2
    assert s_ba.key_id == K2.id  # B knows A accepts K2 (from A's header)
    assert s_ab.stale(env_a.ring, seen_by_a[B])  # A should re-open its stream to B ...
    s_ab, _ = send(env_a, env_b, A, B, seen_by_a, seen_by_b)
    assert s_ab.key_id == K2.id  # ... which now runs under K2
    assert not s_ab.stale(env_a.ring, seen_by_a[B])

    # Stage 3: promote on A only; B still has K1 current, K2 next.
    env_a.reload(KeyRing(K2, previous=K1))
    s_ab, _ = send(env_a, env_b, A, B, {}, seen_by_b)  # even with no cache: current K2
    assert s_ab.key_id == K2.id
    s_ba, o_ba = send(env_b, env_a, B, A, seen_by_b, seen_by_a)
    assert s_ba.key_id == K2.id
    # A laggard C that never got K2 still works during the grace period ...
    env_c = KeyedEnvelope(KeyRing(K1))
    seen_by_c: dict[str, frozenset[str] | None] = {}
    _, o_ca = send(env_c, env_a, C, A, seen_by_c, seen_by_a)
    s_ac, _ = send(env_a, env_c, A, C, seen_by_a, seen_by_c)
    assert s_ac.key_id == K1.id  # previous key, only because C accepts nothing newer

    # Stage 4: retire K1 on A. Streams under K1 are stale; C is refused.
    env_a.reload(KeyRing(K2))
    assert o_ca.stale(env_a.ring) and s_ac.stale(env_a.ring, seen_by_a[C])
    assert not o_ba.stale(env_a.ring)
    with pytest.raises(NoCommonKey):
        env_a.sealer(NS, "raft", local_peer=A, remote_peer=C, peer_accepts=seen_by_a[C])
    with pytest.raises(UnknownKey, match=K1.id):
        send(env_c, env_a, C, A, seen_by_c, seen_by_a)


# ------------------------------------------------------------- request / response


@pytest.mark.parametrize("encrypted", [True, False])
def test_command_stream_request_response(encrypted: bool) -> None:
    ring_a, ring_b = KeyRing(K1, next=K2), KeyRing(K1, next=K2)
    env_a = make_envelope(ring_a if encrypted else None)
    env_b = make_envelope(ring_b if encrypted else None)
    client = open_duplex(env_a, NS, "cmd", local_peer=A, remote_peer=B)
    wire_to_b = [client.sealer.header, client.sealer.seal(b"forward: put x=1")]
    server = accept_duplex(env_b, NS, "cmd", wire_to_b[0], local_peer=B, remote_peer=A)
    assert server.opener.open(wire_to_b[1]) == b"forward: put x=1"
    wire_to_a = [server.sealer.header, server.sealer.seal(b"ok index=7")]
    client.opener.accept_header(wire_to_a[0])
    assert client.opener.open(wire_to_a[1]) == b"ok index=7"
    if encrypted:
        assert client.sealer.key_id == K1.id  # B's accepted ids unknown yet
        assert server.sealer.key_id == K2.id  # the newest key A just advertised
        assert client.opener.peer_accepts == frozenset({K1.id, K2.id})


def test_command_stream_reflection_is_rejected() -> None:
    env = KeyedEnvelope(RING)
    client = open_duplex(env, NS, "cmd", local_peer=A, remote_peer=B)
    with pytest.raises(AuthenticationFailed):
        client.opener.accept_header(client.sealer.header)  # B "answers" with A's own header


# ------------------------------------------------------------------------- fuzzing

FUZZ_SEALER = sealer(KeyRing(K1, next=K2), max_frame_size=4096)
FUZZ_FRAMES = [FUZZ_SEALER.seal(p) for p in (b"", b"abc", bytes(range(200)))]
FUZZ_RING = KeyRing(K1, next=K2)


def fuzz_opener() -> Opener:
    return opener(FUZZ_RING, max_frame_size=4096)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_header_random_bytes(data: bytes) -> None:
    with pytest.raises(EnvelopeError):
        fuzz_opener().accept_header(data)
    null = NullEnvelope().opener(NS, "raft", local_peer=B, remote_peer=A)
    try:
        null.accept_header(data)
        null.open(data)
    except EnvelopeError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5))
def test_fuzz_frames_random_bytes(frames: list[bytes]) -> None:
    o = fuzz_opener()
    o.accept_header(FUZZ_SEALER.header)
    for frame in frames:
        with pytest.raises(EnvelopeError):
            o.open(frame)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.integers(0, 10_000)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("swap"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("dup"), st.integers(0, 3), st.integers(0, 3)),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_mutated_real_frames(mutations: list[tuple[str, int, object]]) -> None:
    original = [FUZZ_SEALER.header, *FUZZ_FRAMES]
    frames = list(original)
    for op, a, b in mutations:
        if op in ("swap", "dup"):
            assert isinstance(b, int)
            i, j = a % len(frames), b % len(frames)
            if op == "swap":
                frames[i], frames[j] = frames[j], frames[i]
            else:
                frames.insert(j, frames[i])
            continue
        target = a % len(frames)
        buf = bytearray(frames[target])
        if op == "flip":
            assert isinstance(b, int)
            if buf:
                buf[(a // len(frames)) % len(buf)] ^= b
        elif op == "cut":
            assert isinstance(b, int)
            lo = (a // len(frames)) % (len(buf) + 1)
            hi = lo + b % (len(buf) - lo + 1)
            del buf[lo:hi]
        else:
            assert isinstance(b, bytes)
            pos = (a // len(frames)) % (len(buf) + 1)
            buf[pos:pos] = b
        frames[target] = bytes(buf)
    padded = original + [b""] * max(0, len(frames) - len(original))
    if frames == original:
        return
    o = fuzz_opener()
    try:
        o.accept_header(frames[0])
        for i, frame in enumerate(frames[1:], start=1):
            plaintext = o.open(frame)
            assert frame == padded[i]  # only an untouched frame in its place opens
            assert plaintext in (b"", b"abc", bytes(range(200)))
    except EnvelopeError:
        return
    # Every frame opened: the mutations only appended to the end or were no-ops.
    assert frames[: len(original)] == original


# --------------------------------------------------------------------- benchmark


@pytest.mark.parametrize("size", [100, 64 * 1024])
def test_throughput_seal_open(size: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints throughput; no timed assertion (machines differ)."""
    payload = bytes(size)
    n = 50_000 if size <= 1024 else 5_000
    s = sealer(max_frame_size=1 << 20)
    t0 = time.perf_counter()
    for _ in range(n):
        s.seal(payload)
    seal_s = time.perf_counter() - t0
    s = sealer(max_frame_size=1 << 20)
    o = connected(s, max_frame_size=1 << 20)
    t0 = time.perf_counter()
    for _ in range(n):
        o.open(s.seal(payload))
    both_s = time.perf_counter() - t0
    open_s = both_s - seal_s
    mib = n * size / (1 << 20)
    with capsys.disabled():
        print(
            f"\nenvelope {size:>6} B frames: seal {n / seal_s:>9,.0f}/s "
            f"({mib / seal_s:,.0f} MiB/s), open ~{n / open_s:>9,.0f}/s "
            f"({mib / open_s:,.0f} MiB/s), seal+open {n / both_s:>9,.0f}/s "
            f"({mib / both_s:,.0f} MiB/s)"
        )
