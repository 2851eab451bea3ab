"""Progress bars for the CLI's long operations (snapshot save and restore, catch-up).

A :class:`ProgressBar` draws a click progress bar on its stream (stderr by default) only
when that stream is a terminal. Piped or redirected, it writes nothing at all (click's
own bar would still print its label there), so scripts see only the command's result on
stdout. It is created lazily, on the first update with a known total, and the total may
change between updates (catch-up chases a moving commit index).
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

import click

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar as _ClickBar

__all__ = ["ProgressBar", "is_tty"]


def is_tty(stream: object) -> bool:
    """True if ``stream`` is an open terminal (False for files, pipes, closed streams
    and objects without ``isatty``)."""
    isatty = getattr(stream, "isatty", None)
    if not callable(isatty):
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # closed, or a detached buffer
        return False


class ProgressBar:
    """``done`` of ``total`` on a terminal; nothing elsewhere.

    ``file``: the stream (default: ``sys.stderr`` at construction). ``enabled``: force
    the bar on or off (default: whether ``file`` is a terminal). The bar shows the
    percentage; ``show_pos`` adds ``done/total`` (for counts; byte counts read better as
    a percentage alone).

    Use as a context manager, or call :meth:`close`: it ends the bar's line. Every method
    is a no-op when disabled, so callers need no tty checks of their own.
    """

    def __init__(
        self,
        label: str,
        *,
        file: TextIO | None = None,
        enabled: bool | None = None,
        show_pos: bool = False,
    ) -> None:
        self.label = label
        self.file: TextIO = file if file is not None else sys.stderr
        self.enabled = is_tty(self.file) if enabled is None else enabled
        self.show_pos = show_pos
        self._bar: _ClickBar[int] | None = None

    def update(self, done: int, total: int) -> None:
        """Show ``done`` of ``total`` (absolute values, not increments). Ignored while
        ``total`` is not positive (nothing to show yet); ``done`` is clamped to
        ``[0, total]``."""
        if not self.enabled or total <= 0:
            return
        done = min(max(done, 0), total)
        bar = self._bar
        if bar is None:
            bar = self._bar = click.progressbar(
                length=total,
                label=self.label,
                file=self.file,
                show_pos=self.show_pos,
                show_percent=True,
            )
            bar.__enter__()  # draws the empty bar
        moved = bar.length != total
        bar.length = total
        # A total that grew past a bar already full makes it unfinished again.
        bar.finished = bar.pos >= total
        if done != bar.pos:
            bar.update(done - bar.pos)
        elif moved:
            bar.render_progress()

    def close(self) -> None:
        """End the bar (moves to the next line). Idempotent."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.__exit__(None, None, None)

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
