"""scripts/bench-idle-wakeup: the CPU one idle wake-up of a trio loop costs here.

An idle daemon's CPU is its wake-ups times their cost, and a wake-up after tens of
milliseconds asleep runs from a cold cache: far dearer than the same code in a busy
loop. This prints CPU µs per wake-up (the process's utime+stime over the run, read
with ``time.process_time``, divided by the wake-ups) at a given rate for:

- ``epoll``: a bare ``select.epoll().poll(timeout)`` loop, no trio (the floor);
- ``trio``: trio waking a task at a deadline (``trio.sleep``: a cancel scope's deadline,
  what a group's ticker sleeps on).

Multiply by a daemon's wake-ups a second (``voluntary_ctxt_switches`` in
``/proc/PID/status``) for the part of its idle CPU that is the event loop's alone.

The last line is a JSON object. ``--rate`` wake-ups a second (default 20, a leader's
heartbeat ticks with two followers' answers), ``--seconds`` per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import time

import trio


def _epoll(rate: float, seconds: float) -> int:
    ep = select.epoll()
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        ep.poll(1.0 / rate)
        n += 1
    return n


def _trio(rate: float, seconds: float) -> int:
    async def main() -> int:
        n = 0
        end = trio.current_time() + seconds
        while trio.current_time() < end:
            await trio.sleep(1.0 / rate)
            n += 1
        return n

    return trio.run(main)


VARIANTS = {"epoll": _epoll, "trio": _trio}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench-idle-wakeup", description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of all variants")
    args = ap.parse_args(argv)
    results: dict[str, list[float]] = {k: [] for k in VARIANTS}
    for _ in range(args.rounds):
        for name, fn in VARIANTS.items():
            c0 = time.process_time()
            n = fn(args.rate, args.seconds)
            us = (time.process_time() - c0) / n * 1e6
            results[name].append(round(us, 1))
            print(f"{name:6s} {n:5d} wake-ups at {args.rate:g}/s: {us:6.0f} µs CPU each")
    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    print(
        json.dumps(
            {"rate": args.rate, "us_per_wakeup": results, "median": med, "load": os.getloadavg()[0]}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
