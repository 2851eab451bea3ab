"""Storage benchmark behind ``scripts/bench-storage``.

Measures, on one filesystem and in one run:

- the raw fsync floor: 100-byte append + fsync, serially (the anchors' ``fsync_bench.py``
  when it is there, else the same loop inline), and the same with a batch-sized append;
- ``LevelDBStorage.save`` (one ``write_batch(sync=True)``) at batch sizes 1, 16 and 256
  with 100-byte entries: batches/s, entries/s, p50/p99 per batch, and the ratio to the
  floor per batch (p50 save latency / p50 floor latency; the mean ratio is in the JSON),
  also against a raw append+fsync of the batch's size, and bare plyvel at 256;
- read latencies (``term``, ``entries`` of 1 and 100 entries, a KV ``get``), the cost of
  a ``trio.to_thread.run_sync`` round trip, and ``save_async`` next to ``save``: the
  numbers behind the threading decision in :mod:`raftd.storage.leveldb`;
- the state machine's apply as a daemon runs it (``kv_apply_batch``): batches of 20 puts
  from 64 clients (a client id and seq each, as the API sends them) over 10,000 keys
  already written, 100-byte values, no fsync (the daemon's apply does not sync): CPU µs
  per put, for the same process's CPU only.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from raftd.core.types import Entry, HardState
from raftd.kv import commands as C
from raftd.kv.machine import KVStateMachine
from raftd.storage.leveldb import LevelDB, LevelDBStorage

ANCHOR = Path("/work/shared/anchors/raw/fsync_bench.py")
BATCHES = (1, 16, 256)
ENTRY_BYTES = 100


def q(lat: list[float], p: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(p * len(s)))]


def stats_ms(lat: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(q(lat, 0.50) * 1e3, 4),
        "p99_ms": round(q(lat, 0.99) * 1e3, 4),
        "mean_ms": round(statistics.mean(lat) * 1e3, 4),
    }


def fsync_floor_inline(d: Path, n: int, size: int, seconds: float) -> list[float]:
    """The anchors' loop: append ``size`` bytes then fsync, serially."""
    path = d / f"floor.{os.getpid()}.{size}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    rec = b"x" * (size - 1) + b"\n"
    lat: list[float] = []
    deadline = time.monotonic() + seconds
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, rec)
            os.fsync(fd)
            lat.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                break
    finally:
        os.close(fd)
        path.unlink()
    return lat


def fsync_floor(d: Path, n: int) -> dict[str, Any]:
    """The 100-byte fsync floor, from the anchor script if present."""
    if ANCHOR.exists():
        r = subprocess.run(
            [sys.executable, str(ANCHOR), str(d), str(n), "fsync"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if r.returncode == 0 and r.stdout.strip():
            j: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
            return {
                "source": str(ANCHOR),
                "p50_ms": j["p50_ms"],
                "p99_ms": j["p99_ms"],
                "mean_ms": j["mean_us"] / 1e3,
                "ops_per_s": j["ops_per_s"],
            }
    lat = fsync_floor_inline(d, n, ENTRY_BYTES, 60)
    return {"source": "inline", **stats_ms(lat), "ops_per_s": round(len(lat) / sum(lat))}


def bench_save(st: LevelDBStorage, batch: int, n: int, seconds: float) -> list[float]:
    payload = os.urandom(ENTRY_BYTES)
    lat: list[float] = []
    deadline = time.monotonic() + seconds
    idx = st.last_index()
    for _ in range(n):
        es = [Entry(1, idx + i, data=payload) for i in range(1, batch + 1)]
        idx += batch
        hs = HardState(1, "n1", idx)
        t0 = time.perf_counter()
        st.save(hs, es, None)
        lat.append(time.perf_counter() - t0)
        if time.monotonic() > deadline:
            break
    return lat


def bare_plyvel(tmp: Path, batch: int, n: int) -> list[float]:
    """plyvel alone: the same keys and value sizes, encoded beforehand."""
    import plyvel

    db = plyvel.DB(str(tmp / "bare"), create_if_missing=True)
    value = os.urandom(ENTRY_BYTES + 13)
    lat = []
    try:
        for b in range(n):
            kvs = [
                (b"\x01\x00\x00\x00\x01L" + (b * batch + i).to_bytes(8, "big"), value)
                for i in range(batch)
            ]
            t0 = time.perf_counter()
            wb = db.write_batch(sync=True)
            for k, v in kvs:
                wb.put(k, v)
            wb.write()
            lat.append(time.perf_counter() - t0)
    finally:
        db.close()
    return lat


def timeit(fn: Callable[[], object], n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    return lat


def kv_apply_batch(db: LevelDB, keys: int = 10_000, puts: int = 40_000) -> dict[str, Any]:
    """CPU µs per put of ``apply_many`` as a daemon drives it (see the module doc),
    over the median of three passes, with the record cache's hit rate."""
    sm = KVStateMachine.leveldb(db, "/bench-apply", sync=False)
    clients = [b"client-%02d" % i for i in range(64)]
    seqs = [0] * len(clients)
    index = 0

    def batch(keyf: Callable[[int], bytes]) -> list[tuple[int, bytes]]:
        nonlocal index
        out = []
        for _ in range(20):
            index += 1
            c = index % len(clients)
            seqs[c] += 1
            data = C.put(
                keyf(index), os.urandom(50).hex().encode(), client_id=clients[c], seq=seqs[c]
            )
            out.append((index, data))
        return out

    for b in [batch(lambda i: b"key%013d" % (i - 1)) for _ in range(keys // 20)]:
        sm.apply_many(b)
    passes = []
    rng = random.Random(1)  # uniform over the key space, the same work every run
    for _ in range(3):
        work = [batch(lambda i: b"key%013d" % rng.randrange(keys)) for _ in range(puts // 60)]
        sm.cache.hits = sm.cache.misses = 0
        t0 = time.process_time()
        for b in work:
            sm.apply_many(b)
        passes.append((time.process_time() - t0) / (len(work) * 20) * 1e6)
    hit = sm.cache.hits / max(1, sm.cache.hits + sm.cache.misses)
    return {"cpu_us_per_put": round(statistics.median(passes), 1), "cache_hit_rate": round(hit, 2)}


def us(lat: list[float]) -> dict[str, float]:
    return {"p50_us": round(q(lat, 0.5) * 1e6, 2), "p99_us": round(q(lat, 0.99) * 1e6, 2)}


async def bench_async(st: LevelDBStorage, n: int) -> dict[str, dict[str, float]]:
    hop = []
    for _ in range(n):
        t0 = time.perf_counter()
        await trio.to_thread.run_sync(lambda: None)
        hop.append(time.perf_counter() - t0)
    writer_hop = []
    for _ in range(n):
        t0 = time.perf_counter()
        await st.db.writer.run(lambda _: None, None)
        writer_hop.append(time.perf_counter() - t0)
    payload = os.urandom(ENTRY_BYTES)
    out: dict[str, dict[str, float]] = {
        "to_thread_round_trip": us(hop),
        "writer_thread_round_trip": us(writer_hop),
    }
    for name, batch in (("save_async_batch_1", 1), ("save_async_batch_256", 256)):
        lat = []
        for _ in range(n):
            idx = st.last_index()
            es = [Entry(1, idx + i, data=payload) for i in range(1, batch + 1)]
            t0 = time.perf_counter()
            await st.save_async(HardState(1, "n1", idx + batch), es, None)
            lat.append(time.perf_counter() - t0)
        out[name] = us(lat)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-storage", description=__doc__)
    ap.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="parent of the temp dir (pick the filesystem you care about)",
    )
    ap.add_argument("--batches", type=int, default=2000, help="max batches per size")
    ap.add_argument("--seconds", type=float, default=4.0, help="max seconds per size")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="raftd-bench-", dir=args.dir))
    try:
        return run(tmp, args.batches, args.seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path, nbatches: int, seconds: float) -> int:
    floor = fsync_floor(tmp, 2000)
    print(
        f"fsync floor (100 B append+fsync, {floor['source']}): p50={floor['p50_ms']:.3f}ms "
        f"p99={floor['p99_ms']:.3f}ms mean={floor['mean_ms']:.3f}ms "
        f"ops/s={floor['ops_per_s']}"
    )
    result: dict[str, Any] = {"system": "raftd-storage", "dir": str(tmp), "floor": floor}
    db = LevelDB(tmp / "data")
    st = db.group("/bench")
    bench_save(st, 16, 200, 2.0)  # warm up: files created, caches hot
    per_batch: dict[str, Any] = {}
    for batch in BATCHES:
        lat = bench_save(st, batch, nbatches, seconds)
        same = fsync_floor_inline(tmp, 500, batch * ENTRY_BYTES, 10)
        total = sum(lat)
        row = {
            "batches_per_s": round(len(lat) / total, 1),
            "entries_per_s": round(len(lat) * batch / total),
            **stats_ms(lat),
            "ratio_to_floor": round(q(lat, 0.5) * 1e3 / floor["p50_ms"], 2),
            "ratio_mean_to_floor": round(statistics.mean(lat) * 1e3 / floor["mean_ms"], 2),
            "same_bytes_floor_p50_ms": round(q(same, 0.5) * 1e3, 4),
            "ratio_to_same_bytes_floor": round(q(lat, 0.5) / q(same, 0.5), 2),
            "n": len(lat),
        }
        per_batch[str(batch)] = row
        print(
            f"batch {batch:3d}: {row['batches_per_s']:8.1f} batches/s "
            f"{row['entries_per_s']:8d} entries/s  p50={row['p50_ms']:.3f}ms "
            f"p99={row['p99_ms']:.3f}ms  x{row['ratio_to_floor']:.2f} floor per batch (p50) "
            f"(x{row['ratio_to_same_bytes_floor']:.2f} of a raw {batch * ENTRY_BYTES} B "
            f"append+fsync)"
        )
    result["save"] = per_batch
    bare = bare_plyvel(tmp, 256, 1000)
    result["bare_plyvel_256"] = stats_ms(bare)
    print(
        f"bare plyvel, 256 prebuilt values, write_batch(sync=True): p50={q(bare, 0.5) * 1e3:.3f}ms"
        f" (x{q(bare, 0.5) * 1e3 / floor['p50_ms']:.2f} floor): the library's own cost"
    )
    r256 = per_batch["256"]["ratio_to_floor"]
    result["target_256_within_3x_floor"] = r256 <= 3.0
    print(
        f"target: batch 256 within 3x of the floor per batch: "
        f"{'met' if r256 <= 3.0 else 'NOT met'} (x{r256})"
    )

    # Reads, inline.
    last = st.last_index()
    mid = last - 1000
    reads = {
        "term": us(timeit(lambda: st.term(mid), 20000)),
        "first_last_index": us(timeit(lambda: (st.first_index(), st.last_index()), 20000)),
        "entries_1": us(timeit(lambda: st.entries(mid, mid + 1), 5000)),
        "entries_100": us(timeit(lambda: st.entries(mid, mid + 100), 2000)),
        "entries_100_cold": us(
            timeit(lambda: st.entries(st.first_index() + 37, st.first_index() + 137), 200)
        ),
    }
    sm = KVStateMachine.leveldb(db, "/bench")
    sm.apply_many([(i, C.put(b"key%06d" % i, b"v" * 100)) for i in range(1, 5001)])
    reads["kv_get"] = us(timeit(lambda: sm.get(b"key002500"), 5000))
    reads["kv_apply_1"] = us(
        timeit(lambda: sm.apply(sm.applied_index() + 1, C.put(b"k", b"v" * 100)), 500)
    )
    for name, r in reads.items():
        print(f"read {name:18s} p50={r['p50_us']:9.2f}us p99={r['p99_us']:9.2f}us")
    result["reads"] = reads
    ab = kv_apply_batch(db)
    result["kv_apply_batch"] = ab
    print(
        f"kv_apply_batch: {ab['cpu_us_per_put']:.1f} CPU us per put (20-put batches, "
        f"10,000 keys, record cache hit rate {ab['cache_hit_rate']:.0%})"
    )
    asy = trio.run(bench_async, st, 300)
    for name, r in asy.items():
        print(f"{name:32s} p50={r['p50_us']:9.2f}us p99={r['p99_us']:9.2f}us")
    result["async"] = asy
    db.close()
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
