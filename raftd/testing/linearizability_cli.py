"""Command line of scripts/check-linearizable.


Usage: scripts/check-linearizable [--timeout SECONDS] [--context N] FILE...

For each FILE prints ``<file>\\t<true|false>\\t<seconds>``; for a history that is not
linearizable, the explanation follows, indented by four spaces (times in it are line
numbers of the file). A file that cannot be read, parsed or checked in time prints
``<file>\\terror\\t<seconds>\\t<reason>``. Exit status: 0 if every file is linearizable,
1 if any is not, 2 on any error (bad usage, unreadable or malformed file, timeout).
The file format is documented in raftd/testing/linearizability.py.
"""

from __future__ import annotations

import argparse
import time

from raftd.testing.linearizability import (
    CheckTimeoutError,
    HistoryFormatError,
    check_history,
    parse_file,
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="check-linearizable",
        description="Check Jepsen-format key-value histories for linearizability.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="history files")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up on a file after SECONDS"
    )
    parser.add_argument(
        "--context", type=int, default=10, help="prefix ops shown in explanations (10)"
    )
    args = parser.parse_args(argv)
    status = 0
    for name in args.files:
        start = time.perf_counter()
        try:
            result = check_history(parse_file(name), timeout=args.timeout, context=args.context)
        except (OSError, UnicodeDecodeError, HistoryFormatError, CheckTimeoutError) as exc:
            elapsed = time.perf_counter() - start
            reason = "timed out" if isinstance(exc, CheckTimeoutError) else str(exc)
            print(f"{name}\terror\t{elapsed:.3f}\t{reason}", flush=True)
            status = 2
            continue
        elapsed = time.perf_counter() - start
        print(f"{name}\t{str(result.linearizable).lower()}\t{elapsed:.3f}", flush=True)
        if not result.linearizable:
            for line in result.explanation.splitlines():
                print(f"    {line}")
            status = max(status, 1)
    return status
