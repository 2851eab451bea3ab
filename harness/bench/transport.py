"""Throughput micro-benchmark of the libp2p transport between two OS processes.

Run ``scripts/bench-transport [--count N] [--size BYTES]``. The parent process starts a
receiver in a child process, connects, then sends N APP messages (one entry of
``--size`` data bytes each) as fast as the bounded queue allows; the receiver answers
once it has all N. Printed: messages/s end to end, as the receiver measured it, and the
batching achieved (messages per frame, i.e. per stream write). ``--max-batch-bytes 1``
turns batching off, for comparison.

``--rtt N`` measures the round trip instead: N heartbeats sent one at a time, each
answered at once by the receiver, over the same transport the daemons use (Noise,
Yamux, raftd's framing, one trio event loop per process). Printed: the p50 and p99 of
the last two thirds. It is the network part of a put's floor: a put through the leader
needs one such round trip (the append and its acknowledgement), one through a follower
two.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.lowlevel

from harness.bench.load import BenchResult
from harness.repo import env_with_root
from raftd.core.types import Entry, Message, MessageType
from raftd.transport.host import (
    configure_logging,
    listen_addrs_of,
    load_or_create_identity,
    open_host,
)
from raftd.transport.libp2p import Libp2pTransport, Libp2pTransportConfig

NS = "/raft/bench"


async def receiver(count: int) -> None:
    """Child: count APP messages; answer HEARTBEATs at once, and the sender once all
    ``count`` arrived (context carries the receiver-side timing as JSON)."""
    kp = load_or_create_identity(tempfile.mkdtemp(prefix="raftd-bench-"))
    async with open_host(kp) as host:
        got = 0
        first = 0.0
        t: Libp2pTransport

        def on_message(msg: Message) -> None:
            nonlocal got, first
            if msg.type == MessageType.HEARTBEAT:
                t.send(msg.frm, Message(MessageType.HEARTBEAT_RESP, to=msg.frm, frm=msg.to))
                return
            if got == 0:
                first = time.perf_counter()
            got += 1
            if got == count:
                elapsed = time.perf_counter() - first
                info = {"elapsed": elapsed, "frames": t.stats.frames_received}
                t.send(
                    msg.frm,
                    Message(
                        MessageType.APP_RESP,
                        to=msg.frm,
                        frm=msg.to,
                        index=got,
                        context=json.dumps(info).encode(),
                    ),
                )

        t = Libp2pTransport(host, NS, on_message=on_message)
        async with trio.open_nursery() as nursery:
            await nursery.start(t.run)
            print(json.dumps({"id": t.local_id, "addrs": listen_addrs_of(host)}), flush=True)
            stdin = trio.lowlevel.FdStream(0)
            while await stdin.receive_some(1024):
                pass
            nursery.cancel_scope.cancel()


async def _read_line(stream: Any) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise RuntimeError("receiver exited early")
        buf += chunk
    return buf


@asynccontextmanager
async def _receiver(count: int) -> AsyncIterator[tuple[dict[str, Any], Any]]:
    """Spawn the receiver (expecting ``count`` APP messages) in a child process; yield
    its peer info and a fresh local host. The child exits when the block ends."""
    env = env_with_root()
    cmd = [sys.executable, "-m", "harness.bench.transport", "--role", "recv", "--count", str(count)]
    proc = await trio.lowlevel.open_process(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    try:
        with trio.fail_after(30):
            peer = json.loads(await _read_line(proc.stdout))
        kp = load_or_create_identity(tempfile.mkdtemp(prefix="raftd-bench-"))
        async with open_host(kp) as host:
            yield peer, host
    finally:
        if proc.stdin is not None:
            await proc.stdin.aclose()
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()


async def sender(count: int, size: int, max_batch_bytes: int) -> dict[str, float]:
    """Parent: spawn the receiver, send, time, report."""
    async with _receiver(count) as (peer, host):
        done = trio.Event()
        result: dict[str, Any] = {}

        def on_message(msg: Message) -> None:
            if msg.type == MessageType.HEARTBEAT_RESP:
                result["warm"] = True
                done.set()
            elif msg.type == MessageType.APP_RESP:
                result.update(json.loads(msg.context))
                result["end"] = time.perf_counter()
                done.set()

        cfg = Libp2pTransportConfig(max_batch_bytes=max_batch_bytes)
        t = Libp2pTransport(host, NS, on_message=on_message, config=cfg)
        t.add_peer_addrs(peer["id"], peer["addrs"])
        async with trio.open_nursery() as nursery:
            await nursery.start(t.run)
            with trio.fail_after(10):  # connect both directions before timing
                t.send(peer["id"], Message(MessageType.HEARTBEAT, to=peer["id"], frm=t.local_id))
                await done.wait()
            done = trio.Event()
            data = os.urandom(size)
            high_water = t.config.queue_size // 2
            start = time.perf_counter()
            with trio.fail_after(300):
                for i in range(count):
                    while t.pending(peer["id"]) >= high_water:  # noqa: ASYNC110
                        await trio.sleep(0.0005)  # let the sender task drain
                    t.send(
                        peer["id"],
                        Message(
                            MessageType.APP,
                            to=peer["id"],
                            frm=t.local_id,
                            term=1,
                            index=i,
                            entries=(Entry(1, i, data=data),),
                        ),
                    )
                await done.wait()
            elapsed = result["end"] - start
            frames = t.stats.frames_sent - 1  # minus the warm-up heartbeat
            nursery.cancel_scope.cancel()
        return {
            "messages": count,
            "size": size,
            "elapsed_s": elapsed,
            "msgs_per_s": count / elapsed,
            "recv_msgs_per_s": count / result["elapsed"],
            "mib_per_s": count * size / elapsed / 2**20,
            "msgs_per_frame": count / max(frames, 1),
        }


async def round_trips(n: int) -> dict[str, float | None]:
    """Parent: spawn the receiver, then time ``n`` heartbeat round trips one at a time."""
    async with _receiver(1) as (peer, host):
        answered = trio.Event()

        def on_message(msg: Message) -> None:
            if msg.type == MessageType.HEARTBEAT_RESP:
                answered.set()

        t = Libp2pTransport(host, NS, on_message=on_message)
        t.add_peer_addrs(peer["id"], peer["addrs"])
        beat = Message(MessageType.HEARTBEAT, to=peer["id"], frm=t.local_id)
        samples: list[float] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(t.run)
            with trio.fail_after(10):  # connect both directions before timing
                t.send(peer["id"], beat)
                await answered.wait()
            with trio.fail_after(max(60.0, n * 0.01)):
                for _ in range(n):
                    answered = trio.Event()
                    t0 = time.perf_counter()
                    t.send(peer["id"], beat)
                    await answered.wait()
                    samples.append(time.perf_counter() - t0)
            nursery.cancel_scope.cancel()
        timed = BenchResult("libp2p-rtt", 1, 1, latencies=samples[len(samples) // 3 :])
        return {"round_trips": n, "p50_ms": timed.pct(0.5), "p99_ms": timed.pct(0.99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=["send", "recv"], default="send")
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100, help="entry data bytes per message")
    ap.add_argument(
        "--max-batch-bytes",
        type=int,
        default=Libp2pTransportConfig().max_batch_bytes,
        help="frame size cap; 1 sends one message per frame (no batching)",
    )
    ap.add_argument(
        "--rtt", type=int, metavar="N", help="time N heartbeat round trips, one at a time"
    )
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()
    configure_logging(logging.WARNING, stream=sys.stderr)
    if args.role == "recv":
        trio.run(receiver, args.count)
        return
    if args.rtt:
        rt = trio.run(round_trips, args.rtt)
        if args.json:
            print(json.dumps(rt))
        else:
            print(
                f"{args.rtt} heartbeat round trips between two processes: "
                f"p50 {rt['p50_ms']} ms, p99 {rt['p99_ms']} ms"
            )
        return
    r = trio.run(sender, args.count, args.size, args.max_batch_bytes)
    if args.json:
        print(json.dumps(r))
    else:
        print(
            f"{r['messages']} messages of {r['size']} B data between two processes: "
            f"{r['msgs_per_s']:,.0f} msg/s end to end ({r['mib_per_s']:.1f} MiB/s of data), "
            f"{r['recv_msgs_per_s']:,.0f} msg/s at the receiver, "
            f"{r['msgs_per_frame']:.0f} messages per frame (per write)"
        )


if __name__ == "__main__":
    main()
