"""Progress bars of long CLI operations: drawn on a terminal, nothing at all when the
stream is not one. The helper alone (a fake tty stream and a real pty), then
``raftd snapshot restore`` as a subprocess with stderr piped and with stderr on a pty."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raftd.app.backup import write_backup
from raftd.cli.progress import ProgressBar, is_tty
from raftd.kv import commands
from raftd.kv.machine import KVStateMachine


class FakeTty(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _last_frame(out: str) -> str:
    """The bar as last drawn: the text after the last carriage return."""
    return out.rsplit("\r", 1)[-1]


def test_nothing_at_all_when_not_a_tty() -> None:
    s = io.StringIO()
    with ProgressBar("copy", file=s) as bar:
        assert not bar.enabled
        for done in (0, 5, 10):
            bar.update(done, 10)
    assert s.getvalue() == ""


def test_a_bar_on_a_tty() -> None:
    s = FakeTty()
    with ProgressBar("copy", file=s) as bar:
        assert bar.enabled
        bar.update(0, 4)
        assert "copy" in s.getvalue() and "0%" in _last_frame(s.getvalue())
        bar.update(2, 4)
        assert "50%" in _last_frame(s.getvalue())
        bar.update(4, 4)
    out = s.getvalue()
    assert "100%" in out and "#" * 30 in out  # a full bar (click's default width)
    assert out.endswith("\n")  # closing ends the bar's line


def test_no_bar_until_a_total_is_known() -> None:
    s = FakeTty()
    with ProgressBar("wait", file=s) as bar:
        bar.update(0, 0)
        assert s.getvalue() == ""
        bar.update(1, 2)
        assert "50%" in s.getvalue()


def test_total_may_grow_and_done_is_clamped() -> None:
    s = FakeTty()
    with ProgressBar("catch-up", file=s, show_pos=True) as bar:
        bar.update(10, 10)
        assert "10/10" in _last_frame(s.getvalue())
        bar.update(10, 40)  # the target moved on: no longer full
        frame = _last_frame(s.getvalue())
        assert "10/40" in frame and "25%" in frame
        bar.update(99, 40)
        assert "40/40" in _last_frame(s.getvalue())


def test_enabled_overrides_the_tty_check() -> None:
    s = FakeTty()
    with ProgressBar("off", file=s, enabled=False) as bar:
        bar.update(1, 2)
    assert s.getvalue() == ""


def test_is_tty() -> None:
    assert not is_tty(io.StringIO())
    assert not is_tty(object())
    closed = io.StringIO()
    closed.close()
    assert not is_tty(closed)
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as f:
            assert is_tty(f)
    finally:
        os.close(slave)
        os.close(master)


def _drain(fd: int, until: float) -> bytes:
    """Whatever is readable on ``fd`` now (waiting at most until ``until``)."""
    out = b""
    while time.monotonic() < until:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer closed the other side
            break
        if not chunk:
            break
        out += chunk
    return out


def test_a_bar_on_a_real_pty() -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as f, ProgressBar("pty", file=f) as bar:
            bar.update(3, 3)
        out = _drain(master, time.monotonic() + 5).decode()
    finally:
        os.close(slave)
        os.close(master)
    assert "pty" in out and "100%" in out


# -- raftd snapshot restore -------------------------------------------------------------


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    """A backup of 2,000 keys (about 480 KB: several read chunks per pass)."""
    sm = KVStateMachine.memory()
    entries = [(1, b"")] + [(i + 2, commands.put(b"k/%05d" % i, b"v" * 200)) for i in range(2000)]
    sm.apply_many(entries)
    path = tmp_path / "b.bak"
    with open(path, "wb") as f:
        write_backup(sm, "/raft/bak", f.write)
    return path


def _restore_args(backup: Path, data_dir: Path) -> list[str]:
    restore = ["snapshot", "restore", str(backup), "--data-dir", str(data_dir)]
    return [sys.executable, "-m", "raftd", *restore]


def test_restore_piped_prints_only_its_result(backup: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        _restore_args(backup, tmp_path / "d"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("restored /raft/bak at index 2001"), lines


def test_restore_on_a_terminal_draws_a_bar(backup: Path, tmp_path: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        _restore_args(backup, tmp_path / "d"),
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    # Read the terminal while the command runs, so a full pty buffer cannot block it.
    deadline = time.monotonic() + 120
    err = b""
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            err += _drain(master, deadline)
        err += _drain(master, time.monotonic() + 2)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        os.close(master)
    text = err.decode(errors="replace")
    assert "snapshot restore" in text and "100%" in text and "#" * 30 in text, text
    assert out.startswith("restored /raft/bak at index 2001"), out
