"""The shared cluster key: loading, key ids, the rotation key ring, per-purpose subkeys.

Loading rule
============

A key comes from a file (``--key-file``) or from the value of an environment variable
(``RAFTD_KEY``). The bytes are interpreted by the first rule that matches:

1. **hex**: the content, with surrounding whitespace stripped and line breaks removed, is
   hex digits only, of even length >= 64 (32 bytes): the decoded bytes are the root key
   (``openssl rand -hex 32``, ``xxd -p -l 32 /dev/urandom``). Hex digits only but shorter
   (or odd) is refused: a truncated hex key or an all-digit passphrase, both too weak,
   which rule 2 would otherwise misread as base64.
2. **base64**: otherwise, if it is valid base64 (standard or URL-safe alphabet, padding
   optional) decoding to >= 32 bytes: the decoded bytes (``openssl rand -base64 32``).
3. **raw**: otherwise, if the *unstripped* content is >= 32 bytes and is not printable
   UTF-8 text: the raw bytes (``head -c 32 /dev/urandom``).
4. **passphrase**: otherwise the content must be UTF-8 text; surrounding whitespace is
   stripped, it is NFC-normalized and must be at least 12 characters long. It is stretched
   with scrypt (n=2**15, r=8, p=1, 32 bytes) under the fixed, namespace-independent salt
   :data:`PASSPHRASE_SALT` so every node derives the same root key.

A passphrase is much weaker than a random key: anyone who records one sealed frame or
stream header can run an offline guessing attack against it, slowed only by scrypt. Use a
random key (``openssl rand -hex 32 > key && chmod 600 key``) unless a human must type it.

Each rule only needs to be deterministic: every node reading the same file content derives
the same root. What matters for security is the entropy of the content.

Key files must not be accessible by group or others (``mode & 0o077 == 0``) and must be
owned by the current user or root; anything else is refused with
:class:`KeyFilePermissionError` naming the file and the fix. No error raised here ever
contains key material (exceptions are raised ``from None`` so no chained exception carries
the content either).

Key ids and rotation
====================

Every key has a short, non-secret id: the first 8 bytes of ``HMAC-SHA256(root,
b"raftd key id")`` as 16 hex digits. Stream headers name the key that sealed the stream
and list the ids the sender accepts. Rotation with a :class:`KeyRing`:

1. Distribute the new key as ``next`` on every node and reload (SIGHUP / ``raftd
   reload``). Every node now accepts both keys; streams to a peer whose accepted ids are
   not yet known are still sealed under ``current``.
2. Automatic, per peer: once a peer advertises (in a stream header) that it accepts the
   new key, :meth:`KeyRing.sealing_key` picks it for new streams to that peer. The
   operator checks that every node advertises the new id before going on.
3. Promote: the new key becomes ``current`` and the old one ``previous`` (still accepted,
   used only for a peer that accepts nothing newer), and reload.
4. Retire: drop ``previous`` and reload. The transport resets streams still running under
   a key the ring no longer accepts.

Subkeys
=======

The root key is never used directly: :func:`derive` makes one HKDF-SHA256 subkey per
purpose (``transport``, ``commands``, ``snapshot``) and namespace, so a frame of one Raft
group or stream kind can never be opened as another's.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import stat
import unicodedata
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from hashlib import sha256
from pathlib import Path
from typing import Final, Literal, NoReturn, get_args

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "KEY_ENV_VAR",
    "KEY_ID_INFO",
    "MAX_KEY_FILE_SIZE",
    "MIN_KEY_BYTES",
    "MIN_PASSPHRASE_CHARS",
    "PASSPHRASE_SALT",
    "PURPOSES",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "SUBKEY_BYTES",
    "Key",
    "KeyFilePermissionError",
    "KeyLoadError",
    "KeyRing",
    "KeySource",
    "NoCommonKey",
    "Purpose",
    "derive",
    "key_id",
    "load_key",
    "load_key_file",
    "parse_key_material",
]

#: Minimum length of a random key (after hex/base64 decoding), and of a raw key file.
MIN_KEY_BYTES: Final = 32
#: Minimum passphrase length, in Unicode code points after stripping and NFC.
MIN_PASSPHRASE_CHARS: Final = 12
#: A key file larger than this is certainly the wrong file.
MAX_KEY_FILE_SIZE: Final = 64 * 1024
#: Fixed scrypt salt: all nodes must derive the same root from the same passphrase, in
#: every namespace (namespaces are separated later, by :func:`derive`).
PASSPHRASE_SALT: Final = b"raftd/v1/passphrase"
SCRYPT_N: Final = 2**15
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
#: HMAC message whose MAC under the root key gives the key id.
KEY_ID_INFO: Final = b"raftd key id"
#: Length of every derived subkey (AES-256).
SUBKEY_BYTES: Final = 32
#: The environment variable a key value may come from.
KEY_ENV_VAR: Final = "RAFTD_KEY"

Purpose = Literal["transport", "commands", "snapshot", "pnet"]
PURPOSES: Final[tuple[Purpose, ...]] = get_args(Purpose)
KeySource = Literal["hex", "base64", "raw", "passphrase"]

_HEX_RE = re.compile(rb"[0-9A-Fa-f]+")
_B64_STD_RE = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_B64_URL_RE = re.compile(rb"[A-Za-z0-9_-]+={0,2}")


class KeyLoadError(ValueError):
    """The key could not be loaded. The message names the source, never the material."""


class KeyFilePermissionError(KeyLoadError):
    """The key file is accessible by group/others, or owned by another user."""


class NoCommonKey(LookupError):
    """:meth:`KeyRing.sealing_key`: the peer accepts none of this node's keys."""


def key_id(root: bytes) -> str:
    """The non-secret id of a root key: first 8 bytes of HMAC-SHA256(root, KEY_ID_INFO)."""
    return hmac.new(root, KEY_ID_INFO, sha256).digest()[:8].hex()


def derive(root: bytes, purpose: Purpose, namespace: str) -> bytes:
    """A 32-byte subkey of ``root`` for one purpose in one namespace.

    HKDF-SHA256 with ``salt = namespace`` (UTF-8) and ``info = b"raftd/v1/" + purpose``.
    Different (purpose, namespace) pairs give independent keys.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}; expected one of {PURPOSES}")
    if not namespace:
        raise ValueError("namespace must not be empty")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=SUBKEY_BYTES,
        salt=namespace.encode(),
        info=b"raftd/v1/" + purpose.encode(),
    )
    return hkdf.derive(root)


class Key:
    """One root key. ``repr``/``str`` show its id and origin, never its bytes.

    Two keys are equal when their roots are equal (compared in constant time).
    """

    __slots__ = ("_root", "id", "origin", "source")

    def __init__(self, root: bytes, *, origin: str, source: KeySource = "raw") -> None:
        if len(root) < MIN_KEY_BYTES:
            raise KeyLoadError(f"{origin}: a key needs at least {MIN_KEY_BYTES} bytes")
        self._root = bytes(root)
        #: The non-secret key id (16 hex digits) used in stream headers and logs.
        self.id: str = key_id(self._root)
        #: Where the key came from, e.g. ``"key file /etc/raftd/key"`` (for messages).
        self.origin = origin
        #: Which loading rule produced it; ``"passphrase"`` deserves a warning in logs.
        self.source: KeySource = source

    def derive(self, purpose: Purpose, namespace: str) -> bytes:
        """See :func:`derive`."""
        return derive(self._root, purpose, namespace)

    def __repr__(self) -> str:
        return f"Key(id={self.id!r}, source={self.source!r}, origin={self.origin!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Key):
            return NotImplemented
        return hmac.compare_digest(self._root, other._root)

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> NoReturn:
        # Keep key bytes out of pickles (and so out of multiprocessing, caches, ...).
        raise TypeError("Key objects cannot be pickled")


def _stretch(passphrase: str) -> bytes:
    kdf = Scrypt(salt=PASSPHRASE_SALT, length=SUBKEY_BYTES, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(passphrase.encode())


def _is_printable_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\n\r" for c in text)


def _try_base64(compact: bytes) -> bytes | None:
    if _B64_STD_RE.fullmatch(compact):
        altchars = None
    elif _B64_URL_RE.fullmatch(compact):
        altchars = b"-_"
    else:
        return None
    body = compact.rstrip(b"=")
    if len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body + b"=" * (-len(body) % 4), altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_key_material(data: bytes, *, origin: str) -> tuple[bytes, KeySource]:
    """Apply the loading rule (module docstring) to ``data``; return ``(root, source)``.

    ``origin`` names the source in error messages (``"key file /x"``, ``"$RAFTD_KEY"``).
    Raises :class:`KeyLoadError`; the message never contains any of ``data``.
    """
    if not data.strip():
        raise KeyLoadError(f"{origin} is empty")
    compact = b"".join(line.strip() for line in data.strip().splitlines())
    if _HEX_RE.fullmatch(compact):
        if len(compact) >= 2 * MIN_KEY_BYTES and len(compact) % 2 == 0:
            return bytes.fromhex(compact.decode("ascii")), "hex"
        # A short (or odd) run of hex digits is a truncated hex key or an all-digit
        # passphrase; both are too weak, and base64 would silently misread it.
        raise KeyLoadError(
            f"{origin}: holds {len(compact)} hex digits; a hex key needs an even number, "
            f"at least {2 * MIN_KEY_BYTES} (e.g. openssl rand -hex 32)"
        )
    decoded = _try_base64(compact)
    if decoded is not None and len(decoded) >= MIN_KEY_BYTES:
        return decoded, "base64"
    if not _is_printable_text(data):
        if len(data) >= MIN_KEY_BYTES:
            return bytes(data), "raw"
        raise KeyLoadError(
            f"{origin}: binary key of {len(data)} bytes is too short; a random key needs "
            f"at least {MIN_KEY_BYTES} bytes (e.g. openssl rand -hex 32)"
        )
    text = unicodedata.normalize("NFC", data.decode("utf-8").strip())
    if len(text) < MIN_PASSPHRASE_CHARS:
        raise KeyLoadError(
            f"{origin}: too short: not a hex key (>= 64 hex digits), not base64 of >= "
            f"{MIN_KEY_BYTES} bytes, and as a passphrase it has {len(text)} characters "
            f"(at least {MIN_PASSPHRASE_CHARS} required); generate a key with "
            "openssl rand -hex 32"
        )
    return _stretch(text), "passphrase"


def _check_file(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyLoadError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFilePermissionError(
            f"key file {path} is accessible by group or others (mode {mode:04o}); "
            f"restrict it with: chmod 600 {path}"
        )
    euid = os.geteuid()
    if st.st_uid not in (euid, 0):
        raise KeyFilePermissionError(
            f"key file {path} is owned by uid {st.st_uid}, not by this user (uid {euid}) "
            f"or root; fix it with: chown {euid} {path}"
        )
    if st.st_size > MAX_KEY_FILE_SIZE:
        raise KeyLoadError(
            f"key file {path} is {st.st_size} bytes, over the {MAX_KEY_FILE_SIZE}-byte "
            "limit: is it the right file?"
        )


def load_key_file(path: str | os.PathLike[str]) -> Key:
    """Load a key file, checking its type, permissions and owner before reading it.

    The checks use ``fstat`` on the opened descriptor, so they apply to the file actually
    read (the target of a symlink, as Kubernetes secret volumes use: give those
    ``defaultMode: 0400``).
    """
    p = Path(path)
    origin = f"key file {p}"
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise KeyLoadError(f"key file {p} does not exist") from None
    except OSError as exc:
        raise KeyLoadError(f"cannot open key file {p}: {exc.strerror}") from None
    try:
        _check_file(p, os.fstat(fd))
        chunks: list[bytes] = []
        total = 0
        while chunk := os.read(fd, 8192):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_KEY_FILE_SIZE:
                raise KeyLoadError(f"key file {p} is over the {MAX_KEY_FILE_SIZE}-byte limit")
    except OSError as exc:
        raise KeyLoadError(f"cannot read key file {p}: {exc.strerror}") from None
    finally:
        os.close(fd)
    root, source = parse_key_material(b"".join(chunks), origin=origin)
    return Key(root, origin=origin, source=source)


def load_key(
    path: str | os.PathLike[str] | None = None, *, env_value: str | None = None
) -> Key | None:
    """The node's key from ``--key-file`` (``path``) or ``$RAFTD_KEY`` (``env_value``).

    Returns ``None`` when neither is given (no encryption). Giving both is refused, so
    an operator never runs under a different key than the one they think.
    """
    if path is not None and env_value is not None:
        raise KeyLoadError(
            f"both --key-file and ${KEY_ENV_VAR} are set; configure exactly one of them"
        )
    if path is not None:
        return load_key_file(path)
    if env_value is not None:
        origin = f"${KEY_ENV_VAR}"
        # os.environ decodes with surrogateescape; undo it to get the original bytes.
        data = env_value.encode("utf-8", "surrogateescape")
        root, source = parse_key_material(data, origin=origin)
        return Key(root, origin=origin, source=source)
    return None


class KeyRing:
    """The keys a node holds: ``current``, plus optional ``next`` and ``previous``.

    All held keys are accepted on inbound streams. Preference, newest first, is
    ``next > current > previous``: :meth:`sealing_key` picks the newest key a peer accepts.
    A ring is immutable; a reload builds a new one and the transport swaps it in (and
    resets streams whose key the new ring no longer accepts).
    """

    __slots__ = ("_by_id", "current", "next", "previous")

    def __init__(self, current: Key, *, next: Key | None = None, previous: Key | None = None):
        keys = [k for k in (next, current, previous) if k is not None]
        by_id: dict[str, Key] = {}
        for k in keys:
            if k.id in by_id:
                raise KeyLoadError(
                    f"the same key (id {k.id}) is configured twice ({by_id[k.id].origin} "
                    f"and {k.origin})"
                )
            by_id[k.id] = k
        self.current = current
        self.next = next
        self.previous = previous
        self._by_id = by_id  # insertion order = preference order, newest first

    @classmethod
    def from_files(
        cls,
        current: str | os.PathLike[str],
        next: str | os.PathLike[str] | None = None,
        previous: str | os.PathLike[str] | None = None,
    ) -> KeyRing:
        """Load a ring from key files (at start and on every reload)."""
        return cls(
            load_key_file(current),
            next=None if next is None else load_key_file(next),
            previous=None if previous is None else load_key_file(previous),
        )

    @property
    def accepted_ids(self) -> tuple[str, ...]:
        """Ids of every key this node accepts, newest first (advertised in headers)."""
        return tuple(self._by_id)

    def __iter__(self) -> Iterator[Key]:
        """The held keys, newest first."""
        return iter(self._by_id.values())

    def accepts(self, key_id: str) -> bool:
        """Whether a stream sealed under ``key_id`` may be opened."""
        return key_id in self._by_id

    def get(self, key_id: str) -> Key | None:
        """The held key with this id, or ``None``."""
        return self._by_id.get(key_id)

    def sealing_key(self, peer_accepted_ids: AbstractSet[str] | None = None) -> Key:
        """The key to seal a new stream to a peer with: the newest one the peer accepts.

        ``peer_accepted_ids`` is what the peer last advertised in a stream header
        (:attr:`raftd.security.envelope.Opener.peer_accepts`), or ``None`` if unknown, in
        which case ``current`` is used (every node accepts every other node's ``current``
        in a correctly run rotation). Raises :class:`NoCommonKey` if the peer accepts
        none of the held keys.
        """
        if peer_accepted_ids is None:
            return self.current
        for k in self._by_id.values():
            if k.id in peer_accepted_ids:
                return k
        raise NoCommonKey(
            f"the peer accepts key ids {sorted(peer_accepted_ids)} but this node holds "
            f"{list(self._by_id)}; distribute a common key"
        )

    def __repr__(self) -> str:
        return f"KeyRing(current={self.current!r}, next={self.next!r}, previous={self.previous!r})"

    __str__ = __repr__


def load_psk(path: str | os.PathLike[str]) -> str:
    """The libp2p private-network key (64 hex digits) for ``--psk-file``.

    The file follows the same rules as ``--key-file`` (any accepted key format, the same
    permission checks); the 32-byte network key is derived from it with HKDF, so one
    random file can be generated with ``openssl rand -hex 32 > psk && chmod 600 psk``.
    Peers with a different file never complete a connection.
    """
    key = load_key_file(path)
    return key.derive("pnet", "/libp2p/pnet").hex()
