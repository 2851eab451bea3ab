"""The KV snapshot stream: what is written is read back, however the reads are cut."""

from __future__ import annotations

import io
import random

import pytest

from raftd.kv.backend import KeyRecord, LeaseRecord, Meta, Session, record_payload
from raftd.kv.snapfmt import SnapshotFormatError, iter_stream_stored, read_stream, write_stream
from tests.storage.helpers import seed_from_env

Records = tuple[
    list[tuple[bytes, KeyRecord]], list[tuple[bytes, Session]], list[tuple[int, LeaseRecord]]
]


class ChoppyReader:
    """A reader whose reads return at most a random number of bytes, as a socket or a
    pipe may: records then straddle the parser's buffer at every possible offset."""

    def __init__(self, data: bytes, rng: random.Random, most: int) -> None:
        self._f = io.BytesIO(data)
        self._rng = rng
        self._most = most

    def read(self, size: int = -1, /) -> bytes:
        n = self._rng.randint(1, self._most)
        return self._f.read(n if size < 0 else min(size, n))


def state(rng: random.Random, n_keys: int, *, leases: bool) -> Records:
    keys = []
    for i in range(n_keys):
        size = rng.choice([0, 1, 100, 1000, 70_000]) if i % 50 == 0 else rng.randint(0, 200)
        lease = rng.randint(1, 2**63) if leases and rng.random() < 0.3 else 0
        rec = KeyRecord(
            rng.randbytes(size), rng.randint(1, 2**40), rng.randint(1, 2**40), i + 1, lease
        )
        keys.append((b"key/%06d/" % i + rng.randbytes(rng.randint(0, 40)), rec))
    sessions = [(b"client-%d" % i, Session(i * 7, rng.randbytes(i % 90))) for i in range(40)]
    lease_list = (
        [(lid, LeaseRecord(60, (b"a", b"b" * lid))) for lid in range(1, 6)] if leases else []
    )
    return keys, sessions, lease_list


def encode(meta: Meta, recs: Records) -> bytes:
    buf = io.BytesIO()
    write_stream(buf, meta, *recs)
    return buf.getvalue()


@pytest.mark.parametrize("leases", [False, True])
@pytest.mark.parametrize("most", [3, 97, 1 << 20])
def test_every_record_reads_back_however_the_reads_are_cut(leases: bool, most: int) -> None:
    seed = seed_from_env()
    rng = random.Random(seed)
    keys, sessions, lease_list = state(rng, 3000, leases=leases)
    keys.sort()
    meta = Meta(applied=12_345, revision=99_999)
    data = encode(meta, (keys, sessions, lease_list))
    assert len(data) > 4 * (64 << 10)  # several of the reader's 64 KiB refills
    got_meta, records = read_stream(ChoppyReader(data, rng, most))
    assert got_meta == meta
    assert list(records) == [*keys, *sessions, *lease_list]


def test_a_cut_anywhere_is_reported_never_misread() -> None:
    rng = random.Random(5)
    keys, sessions, lease_list = state(rng, 12, leases=True)
    keys = sorted((k, r._replace(value=r.value[:30])) for k, r in keys)
    data = encode(Meta(7, 8), (keys, sessions, lease_list))
    whole = list(read_stream(io.BytesIO(data))[1])
    for cut in range(len(data)):
        with pytest.raises(SnapshotFormatError):
            _, records = read_stream(io.BytesIO(data[:cut]))
            got = list(records)
            assert got == whole[: len(got)]  # what came out before the cut was right


def test_keys_out_of_order_are_refused() -> None:
    rec = KeyRecord(b"v", 1, 1, 1)
    data = encode(Meta(1, 1), ([(b"b", rec), (b"a", rec)], [], []))
    with pytest.raises(SnapshotFormatError, match="order"):
        list(read_stream(io.BytesIO(data))[1])


@pytest.mark.parametrize("leases", [False, True])
def test_records_as_stored_encode_to_the_same_stream(leases: bool) -> None:
    """The snapshot writer re-encodes records from their stored layout without decoding
    them: byte for byte the stream the decoded records make."""
    seed = seed_from_env()
    rng = random.Random(seed)
    keys, sessions, lease_list = state(rng, 3000, leases=leases)
    # Versions up to the bit below the lease flag, which shares their field when stored.
    keys += [
        (b"zz/%d" % i, KeyRecord(b"v", 1, 2, (1 << 63) - 1 - i, 5 if leases else 0))
        for i in range(3)
    ]
    keys.sort()
    meta = Meta(applied=4, revision=9)
    stored = [(k, record_payload(r)) for k, r in keys]
    made = b"".join(iter_stream_stored(meta, stored, sessions, lease_list))
    assert made == encode(meta, (keys, sessions, lease_list))
    assert list(read_stream(io.BytesIO(made))[1]) == [*keys, *sessions, *lease_list]
