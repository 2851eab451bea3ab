"""Telling cancellation apart from failure in what a library raises while stopping."""

from __future__ import annotations

import trio

__all__ = ["split_cancelled"]


def split_cancelled(
    exc: BaseException,
) -> tuple[BaseException | None, BaseException | None]:
    """(the part of ``exc`` to re-raise: cancellation and interpreter exits, the part
    that is a failure to log); either may be None. Trio wraps exceptions from nurseries
    in groups, so a failure may arrive together with the Cancelled of a shutdown."""
    if isinstance(exc, trio.Cancelled):
        return exc, None
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(lambda e: not isinstance(e, Exception))
    if isinstance(exc, Exception):
        return None, exc
    return exc, None  # KeyboardInterrupt, SystemExit: pass through
