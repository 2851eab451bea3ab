"""slowfs: a FUSE pass-through filesystem that delays ``fsync`` on command.

A slow disk for any process, whatever its language (etcd's Go binary ignores
``LD_PRELOAD``): mount slowfs over a daemon's data directory, and every operation passes
through to a backing directory. While a delay is armed, every ``fsync``, ``fdatasync``
and directory ``fsync`` that reaches the mount sleeps the given number of seconds first,
in its own FUSE thread (other operations, and other files, keep going). ``close``
(FUSE ``flush``) is not delayed: it is not a durability call, and neither LevelDB nor
etcd wait on it for durability.

Command line (``python -m harness.slowfs``)::

    slowfs mount MOUNT BACKING --control FILE   # foreground; SIGTERM/SIGINT unmount
    slowfs delay FILE SECONDS --for DURATION    # arm: each fsync sleeps SECONDS, for DURATION s
    slowfs clear FILE                           # disarm

The control file holds one JSON object ``{"delay_s": 2.0, "until": <unix time>}`` (an
absent or empty file means no delay). The filesystem re-reads it when its modification
time changes, at each sync call, so arming takes effect at the next ``fsync``. A sync
call that starts before ``until`` is delayed in full, even if it ends after. Each
delayed call is logged on stderr as ``slowfs: delayed fsync <path> by <s>s``, which is
what :meth:`SlowMount.delayed_calls` counts.

Requirements: Linux, ``/dev/fuse``, libfuse 2 (``apt-get install -y fuse libfuse2``) and
``fusepy`` (the ``test`` extra). :func:`fuse_unavailable` says why slowfs cannot run here
(it mounts a probe once); :func:`fuse_or_skip` applies the test policy (skip, or fail
under ``RAFTD_REQUIRE_FUSE=1``); :func:`ensure_libfuse` installs libfuse with apt when
it is missing and the process is root.

Overhead with no delay (3 daemons, ``local`` preset, 1-in-flight puts; measured with
``scripts/bench gray --overhead``) is written down in the README (Gray failures).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness.repo import env_with_root

__all__ = [
    "REQUIRE_ENV",
    "SlowMount",
    "clear_delay",
    "ensure_libfuse",
    "fuse_or_skip",
    "fuse_unavailable",
    "is_mounted",
    "main",
    "set_delay",
]

REQUIRE_ENV = "RAFTD_REQUIRE_FUSE"
DELAY_MARK = "slowfs: delayed "


# -- control file ----------------------------------------------------------------------


def set_delay(control: Path, seconds: float, duration: float) -> None:
    """Arm: every sync call for the next ``duration`` seconds sleeps ``seconds`` first."""
    if seconds < 0 or duration < 0:
        raise ValueError("delay and duration must be >= 0")
    _write_control(control, {"delay_s": seconds, "until": time.time() + duration})


def clear_delay(control: Path) -> None:
    """Disarm (sync calls already sleeping finish their sleep)."""
    _write_control(control, {"delay_s": 0.0, "until": 0.0})


def _write_control(control: Path, obj: dict[str, float]) -> None:
    # Written to a temporary file and renamed, so the filesystem never reads half a file.
    tmp = control.with_name(control.name + ".tmp")
    tmp.write_text(json.dumps(obj) + "\n")
    os.replace(tmp, control)


class _Control:
    """The filesystem's view of the control file, re-read when its mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._delay = 0.0
        self._until = 0.0
        self._lock = threading.Lock()

    def current_delay(self) -> float:
        if self.path is None:
            return 0.0
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_mtime_ns, st.st_ino)
                if stamp != self._stamp:
                    obj = json.loads(self.path.read_text() or "{}")
                    self._delay = float(obj.get("delay_s", 0.0))
                    self._until = float(obj.get("until", 0.0))
                    self._stamp = stamp
            except FileNotFoundError:
                self._delay = self._until = 0.0
                self._stamp = None
            except (OSError, ValueError) as exc:
                print(f"slowfs: unreadable control file {self.path}: {exc}", file=sys.stderr)
                return 0.0
            return self._delay if time.time() < self._until else 0.0


# -- the filesystem --------------------------------------------------------------------


def _make_ops(root: str, control: _Control) -> Any:
    """The fusepy Operations object (built lazily: importing fusepy needs libfuse)."""
    from fuse import FuseOSError, Operations

    class PassThrough(Operations):  # type: ignore[misc]
        """Every call on ``path`` goes to ``root + path``; fsync may sleep first."""

        def _p(self, path: str) -> str:
            return root + path

        def _delay(self, what: str, path: str) -> None:
            d = control.current_delay()
            if d > 0:
                time.sleep(d)
                print(f"{DELAY_MARK}{what} {path} by {d:g}s", file=sys.stderr, flush=True)

        # metadata
        def access(self, path: str, amode: int) -> None:
            if not os.access(self._p(path), amode):
                raise FuseOSError(errno.EACCES)

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.lstat(self._p(path))
            return {
                k: getattr(st, k)
                for k in (
                    "st_atime",
                    "st_ctime",
                    "st_gid",
                    "st_mode",
                    "st_mtime",
                    "st_nlink",
                    "st_size",
                    "st_uid",
                    "st_ino",
                    "st_blocks",
                )
            }

        def chmod(self, path: str, mode: int) -> None:
            os.chmod(self._p(path), mode)

        def chown(self, path: str, uid: int, gid: int) -> None:
            os.chown(self._p(path), uid, gid)

        def utimens(self, path: str, times: tuple[float, float] | None = None) -> None:
            os.utime(self._p(path), times)

        def statfs(self, path: str) -> dict[str, int]:
            sv = os.statvfs(self._p(path))
            return {
                k: getattr(sv, k)
                for k in (
                    "f_bavail",
                    "f_bfree",
                    "f_blocks",
                    "f_bsize",
                    "f_favail",
                    "f_ffree",
                    "f_files",
                    "f_flag",
                    "f_frsize",
                    "f_namemax",
                )
            }

        # No extended attributes. ENOSYS (rather than fusepy's ENOTSUP) makes the kernel
        # stop asking: otherwise every write() costs an extra GETXATTR round trip (the
        # kernel checks ``security.capability`` before each write).
        def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
            raise FuseOSError(errno.ENOSYS)

        def listxattr(self, path: str) -> list[str]:
            raise FuseOSError(errno.ENOSYS)

        def setxattr(
            self, path: str, name: str, value: bytes, options: int, position: int = 0
        ) -> None:
            raise FuseOSError(errno.ENOSYS)

        def removexattr(self, path: str, name: str) -> None:
            raise FuseOSError(errno.ENOSYS)

        # directories and names
        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._p(path))]

        def mkdir(self, path: str, mode: int) -> None:
            os.mkdir(self._p(path), mode)

        def rmdir(self, path: str) -> None:
            os.rmdir(self._p(path))

        def mknod(self, path: str, mode: int, dev: int) -> None:
            os.mknod(self._p(path), mode, dev)

        def unlink(self, path: str) -> None:
            os.unlink(self._p(path))

        def rename(self, old: str, new: str) -> None:
            os.rename(self._p(old), self._p(new))

        def symlink(self, target: str, source: str) -> None:
            # fusepy: ``target`` is the new link's path, ``source`` what it points to.
            os.symlink(source, self._p(target))

        def readlink(self, path: str) -> str:
            return os.readlink(self._p(path))

        def link(self, target: str, source: str) -> None:
            os.link(self._p(source), self._p(target))

        # files
        def open(self, path: str, flags: int) -> int:
            return os.open(self._p(path), flags)

        def create(self, path: str, mode: int, fi: object = None) -> int:
            # fusepy does not pass the caller's flags: read-write covers every caller
            # (bbolt, for one, reads back what it writes through the same descriptor).
            return os.open(self._p(path), os.O_RDWR | os.O_CREAT, mode)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> None:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._p(path), length)

        def flush(self, path: str, fh: int) -> None:
            return None  # nothing is buffered here: writes went straight to the backing file

        def release(self, path: str, fh: int) -> None:
            os.close(fh)

        def fsync(self, path: str, datasync: int, fh: int) -> None:
            self._delay("fdatasync" if datasync else "fsync", path)
            if datasync:
                os.fdatasync(fh)
            else:
                os.fsync(fh)

        def fsyncdir(self, path: str, datasync: int, fh: int) -> None:
            self._delay("fsyncdir", path)
            fd = os.open(self._p(path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    return PassThrough()


def serve(mount: Path, backing: Path, control: Path | None) -> None:
    """Mount and serve in the foreground until SIGTERM/SIGINT/SIGHUP (then unmounted)."""
    from fuse import FUSE

    root = str(backing.resolve())
    ops = _make_ops(root, _Control(control))
    print(f"slowfs: serving {mount} -> {root} (control {control})", file=sys.stderr, flush=True)
    # Multithreaded, so one sleeping fsync holds only its own request. kernel_cache: the
    # backing files change only through this mount, so cached pages stay valid (and mmap
    # readers such as bbolt see their own writes through the page cache).
    FUSE(
        ops,
        str(mount),
        foreground=True,
        nothreads=False,
        use_ino=True,
        big_writes=True,
        kernel_cache=True,
        fsname="slowfs",
    )


# -- mounts from Python ----------------------------------------------------------------


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point (read from /proc/self/mounts, which also lists
    a FUSE mount whose server has died)."""
    target = os.path.realpath(path)
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and _unescape(fields[1]) == target:
            return True
    return False


def _unescape(s: str) -> str:
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")


class SlowMount:
    """One slowfs process serving ``mount`` from ``backing`` (both created if missing).

    ``control`` defaults to ``<backing>.control``, ``log`` to ``<backing>.log``; both sit
    outside the mount. :meth:`start` waits until the mount is live; :meth:`close`
    unmounts (SIGTERM to the server; ``umount -l`` if it is gone but its mount is not).
    """

    def __init__(
        self,
        mount: Path,
        backing: Path,
        *,
        control: Path | None = None,
        log: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        self.mount = Path(mount)
        self.backing = Path(backing)
        self.control = control or self.backing.with_name(self.backing.name + ".control")
        self.log = log or self.backing.with_name(self.backing.name + ".log")
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SlowMount:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = 15.0) -> None:
        if is_mounted(self.mount):
            raise RuntimeError(f"{self.mount} is already a mount point")
        self.mount.mkdir(parents=True, exist_ok=True)
        self.backing.mkdir(parents=True, exist_ok=True)
        clear_delay(self.control)
        argv = [self.python, "-m", "harness.slowfs", "mount", str(self.mount)]
        argv += [str(self.backing), "--control", str(self.control)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env_with_root(),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mount):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"slowfs exited with {self.proc.returncode} before mounting {self.mount}: "
                    f"{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"slowfs did not mount {self.mount} within {timeout:.0f}s")
            time.sleep(0.02)

    def delay(self, seconds: float, duration: float) -> None:
        """Arm this mount's delay (see :func:`set_delay`)."""
        set_delay(self.control, seconds, duration)

    def clear(self) -> None:
        clear_delay(self.control)

    def delayed_calls(self) -> int:
        """How many sync calls this mount has delayed so far (from its log)."""
        try:
            return self.log.read_text(errors="replace").count(DELAY_MARK)
        except OSError:
            return 0

    def close(self, timeout: float = 10.0) -> None:
        """Unmount. Processes still using the mount should be stopped first."""
        with contextlib.suppress(OSError):
            clear_delay(self.control)
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if is_mounted(self.mount):
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True, check=False)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-600:]
        except OSError:
            return "(no log)"


# -- availability ----------------------------------------------------------------------

_probe_result: list[str | None] = []


def _libfuse_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "slowfs needs Linux"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import fuse  # noqa: F401
    except ImportError:
        return "fusepy is not installed (pip install fusepy; it is in the test extra)"
    except OSError as exc:
        return f"libfuse 2 not found ({exc}): apt-get install -y fuse libfuse2"
    return None


def ensure_libfuse(log: Any = print) -> str | None:
    """If libfuse 2 is missing and we are root with apt-get, install ``fuse libfuse2``.
    Returns why FUSE still cannot be used, or None."""
    reason = _libfuse_reason()
    if reason is None or "libfuse" not in reason:
        return reason
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return reason
    log("slowfs: installing libfuse 2 (apt-get install -y fuse libfuse2)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "fuse", "libfuse2"]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if p.returncode != 0:
            return f"{reason}; {' '.join(cmd)} failed: {p.stderr[-300:]}"
    sys.modules.pop("fuse", None)
    _probe_result.clear()
    return _libfuse_reason()


def fuse_unavailable() -> str | None:
    """Why a slowfs mount cannot work here, or None. Mounts a probe (once per process):
    write, fsync with a delay armed, read back, unmount."""
    if _probe_result:
        return _probe_result[0]
    reason = _libfuse_reason()
    if reason is None:
        reason = _probe_mount()
    _probe_result.append(reason)
    return reason


def _probe_mount() -> str | None:
    base = Path(tempfile.mkdtemp(prefix="slowfs-probe-"))
    m = SlowMount(base / "mnt", base / "backing")
    try:
        m.start(timeout=10.0)
        m.delay(0.01, 30.0)
        fd = os.open(m.mount / "probe", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"slowfs")
            os.fsync(fd)
        finally:
            os.close(fd)
        if (m.backing / "probe").read_bytes() != b"slowfs":
            return "slowfs probe: the backing file does not hold what was written"
        deadline = time.monotonic() + 5.0
        while m.delayed_calls() < 1:
            if time.monotonic() > deadline:
                return "slowfs probe: the armed delay was not applied to fsync"
            time.sleep(0.02)
        return None
    except (OSError, RuntimeError, TimeoutError) as exc:
        return f"cannot mount a FUSE filesystem here: {exc}"
    finally:
        m.close()
        shutil.rmtree(base, ignore_errors=True)


def fuse_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fuse_or_skip() -> None:
    """Test policy: return when slowfs works; else skip with the reason, or fail when
    ``RAFTD_REQUIRE_FUSE`` is truthy (so CI cannot go green by skipping)."""
    import pytest

    reason = fuse_unavailable()
    if reason is None:
        return
    if fuse_required():
        pytest.fail(f"{REQUIRE_ENV} is set but {reason}", pytrace=False)
    pytest.skip(reason)


# -- command line ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m harness.slowfs", description=__doc__.split("\n\n")[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mount", help="serve MOUNT from BACKING in the foreground")
    m.add_argument("mount", type=Path)
    m.add_argument("backing", type=Path)
    m.add_argument("--control", type=Path, default=None, help="control file (JSON)")
    d = sub.add_parser("delay", help="arm a delay in a control file")
    d.add_argument("control", type=Path)
    d.add_argument("seconds", type=float, help="sleep before each sync call")
    d.add_argument("--for", dest="duration", type=float, required=True, help="seconds armed")
    c = sub.add_parser("clear", help="disarm a control file")
    c.add_argument("control", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "mount":
        reason = _libfuse_reason()
        if reason is not None:
            print(f"slowfs: {reason}", file=sys.stderr)
            return 2
        if not args.backing.is_dir():
            ap.error(f"backing directory {args.backing} does not exist")
        args.mount.mkdir(parents=True, exist_ok=True)
        serve(args.mount, args.backing, args.control)
        return 0
    if args.cmd == "delay":
        set_delay(args.control, args.seconds, args.duration)
    else:
        clear_delay(args.control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
