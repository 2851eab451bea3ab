"""Images for scripts/docker-test, made without any image registry.

- :func:`ensure_base_image`: a Debian bookworm base (``debootstrap --variant=minbase``
  with python3, its venv module and CA certificates), pruned of apt's caches, docs, man
  pages, locales and iconv modules, and ``docker import``-ed under a name. Kept by that
  name: a later run reuses it.
- :func:`make_wheelhouse`: every dependency of raftd as a wheel (``pip wheel`` on this
  host, into ``wheelhouse/``), plus setuptools and wheel to build raftd itself.
- :func:`build_image`: the Dockerfile built offline from that wheelhouse, with BuildKit
  and no network at all during the build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .engine import Docker, log

REPO = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
PRUNE = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/lib/x86_64-linux-gnu/gconv",
)
IMPORT_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/bin/bash"]',
)


def image_exists(d: Docker, name: str) -> bool:
    return d.run("image", "inspect", name, check=False).returncode == 0


def ensure_base_image(d: Docker, name: str) -> bool:
    """Make ``name`` unless it exists; True when it was made now."""
    if image_exists(d, name):
        log(f"base image {name}: cached")
        return False
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    with tempfile.TemporaryDirectory(prefix="raftd-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"base image {name}: debootstrap {SUITE} into {root}")
        cp = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(root),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if cp.returncode != 0:
            tail = (cp.stdout + cp.stderr).strip().splitlines()[-10:]
            raise RuntimeError("debootstrap failed:\n" + "\n".join(tail))
        for pattern in PRUNE:
            for p in root.glob(pattern):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        for p in (root / "usr/share/doc").rglob("*"):
            if p.is_file() and p.name != "copyright":
                p.unlink()
        changes = [a for c in IMPORT_CHANGES for a in ("--change", c)]
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(
            [d.docker, "import", *changes, "-", name],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imp.returncode != 0:
            raise RuntimeError(f"docker import {name} failed: {imp.stderr.strip()}")
    return True


def base_python(d: Docker, image: str) -> str:
    """``MAJOR.MINOR`` of the image's python3."""
    cp = d.run(
        "run",
        "--rm",
        "--network=none",
        image,
        "python3",
        "-c",
        "import sys; print('%d.%d' % sys.version_info[:2])",
    )
    return cp.stdout.strip()


def make_wheelhouse(python: str = sys.executable) -> Path:
    """``pip wheel`` raftd's dependencies (and the build backend) into wheelhouse/."""
    wh = REPO / "wheelhouse"
    wh.mkdir(exist_ok=True)
    cp = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--wheel-dir",
            str(wh),
            str(REPO),
            "setuptools>=68",
            "wheel",
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if cp.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{cp.stderr.strip()[-3000:]}")
    for own in wh.glob("raftd-*.whl"):  # the image builds raftd from its own context
        own.unlink()
    return wh


def build_image(d: Docker, tag: str, base: str) -> None:
    """Build the Dockerfile with BuildKit and no network: it must take the offline way
    (wheelhouse/ filled); the package-index way would fail here."""
    cp = subprocess.run(
        [
            d.docker,
            "build",
            "--network=none",
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            "-t",
            tag,
            str(REPO),
        ],
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if cp.returncode != 0:
        raise RuntimeError(f"docker build failed:\n{cp.stderr.strip()[-4000:]}")


def build_image_online(d: Docker, tag: str, base: str, ca_bundle: Path) -> None:
    """Build the Dockerfile the default way, from the package index: a copy of the
    committed build context with an empty wheelhouse/, the host's network, and
    ``ca_bundle`` handed to pip as the ``ca-bundle`` BuildKit secret."""
    with tempfile.TemporaryDirectory(prefix="raftd-context-", dir="/var/tmp") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        wheels = list(Path(tmp, "wheelhouse").glob("*.whl"))
        if wheels:
            raise RuntimeError(f"committed wheels in wheelhouse/: {wheels}")
        cp = subprocess.run(
            [
                d.docker,
                "build",
                "--network=host",
                "--secret",
                f"id=ca-bundle,src={ca_bundle}",
                "--build-arg",
                f"PYTHON_IMAGE={base}",
                "-t",
                tag,
                tmp,
            ],
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
    if cp.returncode != 0:
        raise RuntimeError(f"docker build (package index) failed:\n{cp.stderr.strip()[-4000:]}")


def image_info(d: Docker, tag: str) -> dict[str, object]:
    """``docker image inspect`` of ``tag`` (the first record)."""
    info: list[dict[str, object]] = json.loads(d.run("image", "inspect", tag).stdout)
    return info[0]


def timed(label: str, t0: float) -> float:
    dt = time.monotonic() - t0
    log(f"{label}: {dt:.1f}s")
    return dt
