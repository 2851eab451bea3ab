"""Key loading (rule, permissions, no leaks), key ids, HKDF separation, the KeyRing."""

from __future__ import annotations

import base64
import hmac
import os
import pickle
import traceback
import unicodedata
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from raftd.security import keys
from raftd.security.keys import (
    PASSPHRASE_SALT,
    PURPOSES,
    Key,
    KeyFilePermissionError,
    KeyLoadError,
    KeyRing,
    NoCommonKey,
    derive,
    key_id,
    load_key,
    load_key_file,
    parse_key_material,
)

# 0xff never occurs in UTF-8, so this is "binary" whatever the random tail is.
RAW = b"\xff" + bytes.fromhex("8c1e5d0a7f3b9e2c4d6a81f0b5c3e7d9a2f4b6c8e0d1f3a5b7c9e1d3f5a7b9")
SECRET_HEX = "5f1c9a2e7b3d8f04c6a1e9d7b5f3a2c8e0d4b6f8a1c3e5d7f9b2a4c6e8d0f1a3"
PASSPHRASE = "correct horse battery staple"


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def scrypt(passphrase: str) -> bytes:
    return Scrypt(salt=PASSPHRASE_SALT, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())


def assert_no_leak(exc: BaseException, *secrets: bytes | str) -> None:
    """Neither the message, the repr, the traceback nor a chained exception shows a secret."""
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    for secret in secrets:
        forms = (
            [secret, secret.encode()]
            if isinstance(secret, str)
            else [secret.hex(), repr(secret), base64.b64encode(secret).decode()]
        )
        for form in forms:
            for text in texts:
                assert str(form) not in text


# ------------------------------------------------------------------- loading rule


def test_raw_binary_key_uses_every_byte_unstripped(tmp_path: Path) -> None:
    data = b"\n " + RAW + b"\n"  # leading/trailing whitespace bytes are key bytes here
    key = load_key_file(write(tmp_path / "k", data))
    assert key.source == "raw"
    assert key == Key(data, origin="x")


def test_hex_key(tmp_path: Path) -> None:
    key = load_key_file(write(tmp_path / "k", SECRET_HEX.encode() + b"\n"))
    assert key.source == "hex"
    assert key == Key(bytes.fromhex(SECRET_HEX), origin="x")
    upper = load_key_file(write(tmp_path / "u", SECRET_HEX.upper().encode()))
    assert upper == key


def test_hex_key_wrapped_like_xxd(tmp_path: Path) -> None:
    wrapped = (SECRET_HEX[:60] + "\n" + SECRET_HEX[60:] + "\n").encode()
    assert load_key_file(write(tmp_path / "k", wrapped)) == Key(
        bytes.fromhex(SECRET_HEX), origin="x"
    )


@pytest.mark.parametrize(
    "encode",
    [
        lambda b: base64.b64encode(b) + b"\n",  # openssl rand -base64 32
        lambda b: base64.urlsafe_b64encode(b).rstrip(b"="),  # URL-safe, unpadded
        lambda b: base64.encodebytes(b),  # wrapped at 76 columns
    ],
)
def test_base64_key(tmp_path: Path, encode: Callable[[bytes], bytes]) -> None:
    raw = bytes(range(200, 248))  # 48 bytes: the base64 spans two lines when wrapped
    key = load_key_file(write(tmp_path / "k", encode(raw)))
    assert key.source == "base64"
    assert key == Key(raw, origin="x")


def test_passphrase_is_stretched_with_fixed_salt(tmp_path: Path) -> None:
    key = load_key_file(write(tmp_path / "k", PASSPHRASE.encode() + b"\n"))
    assert key.source == "passphrase"
    assert key == Key(scrypt(PASSPHRASE), origin="x")
    # Any node, any file name, trailing whitespace or not: the same root.
    again = load_key(env_value="  " + PASSPHRASE)
    assert again is not None and again.id == key.id


def test_passphrase_is_nfc_normalized() -> None:
    composed = "caf\u00e9 au lait, s'il vous pla\u00eet"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    a, _ = parse_key_material(composed.encode(), origin="x")
    b, _ = parse_key_material(decomposed.encode(), origin="x")
    assert a == b


def test_long_printable_text_is_a_passphrase_not_raw(tmp_path: Path) -> None:
    text = b"this is a rather long printable sentence, used as a passphrase!"
    assert len(text) >= 32
    assert load_key_file(write(tmp_path / "k", text)).source == "passphrase"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty"),
        (b"  \n\n", "empty"),
        (b"short pass\n", "passphrase"),  # 10 characters
        (b"\xff" * 31, "binary key of 31 bytes"),
        (SECRET_HEX[:62].encode(), "62 hex digits"),  # truncated hex key
        (SECRET_HEX[:63].encode() + b"\n", "63 hex digits"),  # odd
        (b"123456789012345", "hex digits"),  # all-digit passphrase: too weak
    ],
)
def test_too_short_or_weak_is_refused(tmp_path: Path, data: bytes, fragment: str) -> None:
    path = write(tmp_path / "k", data)
    with pytest.raises(KeyLoadError, match=fragment) as info:
        load_key_file(path)
    assert str(path) in str(info.value)
    if data.strip():
        assert_no_leak(info.value, data.strip(), data.strip().decode("latin-1"))


def test_minimum_passphrase_length_is_accepted() -> None:
    _, source = parse_key_material(b"twelve chars", origin="x")
    assert source == "passphrase"


# ------------------------------------------------------------ permissions, owner


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o610])
def test_group_or_world_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = write(tmp_path / "key", SECRET_HEX.encode(), mode)
    with pytest.raises(KeyFilePermissionError) as info:
        load_key_file(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"chmod 600 {path}" in msg
    assert f"{mode:04o}" in msg
    assert_no_leak(info.value, SECRET_HEX, bytes.fromhex(SECRET_HEX))


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    assert load_key_file(write(tmp_path / "k", SECRET_HEX.encode(), mode)).source == "hex"


def test_file_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "k", SECRET_HEX.encode())
    if os.geteuid() == 0:
        os.chown(path, 12345, -1)  # as root: a real foreign owner
    else:
        me = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: me + 1)
    with pytest.raises(KeyFilePermissionError, match="owned by uid") as info:
        load_key_file(path)
    assert str(path) in str(info.value)
    assert_no_leak(info.value, SECRET_HEX)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root-owned file")
def test_root_owned_file_is_accepted_by_any_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "k", SECRET_HEX.encode())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert load_key_file(path).source == "hex"


def test_symlink_is_checked_on_its_target(tmp_path: Path) -> None:
    target = write(tmp_path / "target", SECRET_HEX.encode(), 0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert load_key_file(link).source == "hex"
    target.chmod(0o644)
    with pytest.raises(KeyFilePermissionError):
        load_key_file(link)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="does not exist"):
        load_key_file(tmp_path / "nope")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyLoadError, match="not a regular file"):
        load_key_file(d)


def test_huge_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyLoadError, match="limit"):
        load_key_file(write(tmp_path / "k", b"\xff" * (keys.MAX_KEY_FILE_SIZE + 1)))


# ---------------------------------------------------------------- load_key, env


def test_load_key_sources(tmp_path: Path) -> None:
    assert load_key() is None
    path = write(tmp_path / "k", SECRET_HEX.encode())
    from_file = load_key(path)
    from_env = load_key(env_value=SECRET_HEX)
    assert from_file is not None and from_env is not None
    assert from_file == from_env
    assert from_env.origin == "$RAFTD_KEY"
    with pytest.raises(KeyLoadError, match="exactly one") as info:
        load_key(path, env_value=SECRET_HEX)
    assert_no_leak(info.value, SECRET_HEX)


def test_env_value_too_short_does_not_leak() -> None:
    secret = "hunter" + "2pass"  # not spelled out: traceback source lines show this file
    with pytest.raises(KeyLoadError, match=r"\$RAFTD_KEY") as info:
        load_key(env_value=secret)
    assert_no_leak(info.value, secret)


def test_env_value_with_undecodable_bytes() -> None:
    # os.environ hands such bytes over as surrogate escapes; they are raw key bytes.
    value = os.fsdecode(RAW)
    key = load_key(env_value=value)
    assert key is not None and key == Key(RAW, origin="x")


# ------------------------------------------------------------------- Key object


def test_key_never_shows_its_bytes() -> None:
    root = bytes.fromhex(SECRET_HEX)
    key = Key(root, origin="key file /k", source="hex")
    for text in (repr(key), str(key), f"{key}", repr(KeyRing(key))):
        assert SECRET_HEX not in text and SECRET_HEX.upper() not in text
        assert repr(root) not in text
        assert key.id in text
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_key_id_is_truncated_hmac() -> None:
    root = bytes.fromhex(SECRET_HEX)
    expected = hmac.new(root, b"raftd key id", sha256).digest()[:8].hex()
    assert key_id(root) == expected == Key(root, origin="x").id
    assert len(expected) == 16
    assert key_id(RAW) != expected


def test_key_equality_and_short_root() -> None:
    assert Key(RAW, origin="a") == Key(RAW, origin="b")
    assert Key(RAW, origin="a") != Key(bytes(32), origin="a")
    assert hash(Key(RAW, origin="a")) == hash(Key(RAW, origin="b"))
    with pytest.raises(KeyLoadError):
        Key(b"\x01" * 31, origin="x")


# ------------------------------------------------------------------------- HKDF


def test_derive_matches_hkdf_definition() -> None:
    root = bytes.fromhex(SECRET_HEX)
    expected = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"/raft/cron", info=b"raftd/v1/transport"
    ).derive(root)
    assert derive(root, "transport", "/raft/cron") == expected
    assert Key(root, origin="x").derive("transport", "/raft/cron") == expected


def test_derive_separates_purposes_and_namespaces() -> None:
    root = bytes.fromhex(SECRET_HEX)
    namespaces = ["/raft/cron", "/raft/cron2", "/raft/a", "/raft/a/b"]
    derived = {(p, ns): derive(root, p, ns) for p in PURPOSES for ns in namespaces}
    assert len(set(derived.values())) == len(derived)
    assert all(len(k) == 32 for k in derived.values())
    assert derive(RAW, "transport", "/raft/cron") != derived[("transport", "/raft/cron")]
    with pytest.raises(ValueError):
        derive(root, "bogus", "/raft/cron")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        derive(root, "transport", "")


# ---------------------------------------------------------------------- KeyRing


def make_key(seed: int) -> Key:
    return Key(sha256(bytes([seed])).digest(), origin=f"test key {seed}")


def test_ring_order_acceptance_and_sealing_choice() -> None:
    old, new, older = make_key(1), make_key(2), make_key(3)
    ring = KeyRing(old, next=new, previous=older)
    assert ring.accepted_ids == (new.id, old.id, older.id)  # newest first
    assert [k.id for k in ring] == list(ring.accepted_ids)
    assert all(ring.accepts(i) for i in ring.accepted_ids)
    assert not ring.accepts(make_key(4).id)
    assert ring.get(new.id) is new and ring.get("00" * 8) is None
    assert ring.sealing_key(None) is old  # peer unknown: current
    assert ring.sealing_key({old.id}) is old
    assert ring.sealing_key({old.id, new.id}) is new
    assert ring.sealing_key({older.id, "ffffffffffffffff"}) is older
    with pytest.raises(NoCommonKey):
        ring.sealing_key(set())
    with pytest.raises(NoCommonKey):
        ring.sealing_key({make_key(4).id})


def test_rotation_steps_on_one_ring() -> None:
    k1, k2 = make_key(1), make_key(2)
    stage0 = KeyRing(k1)
    stage1 = KeyRing(k1, next=k2)  # distributed and reloaded everywhere
    stage3 = KeyRing(k2, previous=k1)  # promoted
    stage4 = KeyRing(k2)  # retired
    assert stage0.accepted_ids == (k1.id,)
    assert stage1.sealing_key(None) is k1  # still send under current
    assert stage1.sealing_key(set(stage0.accepted_ids)) is k1  # peer not reloaded yet
    assert stage1.sealing_key(set(stage1.accepted_ids)) is k2  # peer accepts next
    assert stage3.sealing_key(None) is k2
    assert stage3.sealing_key(set(stage0.accepted_ids)) is k1  # grace for a laggard
    assert stage3.accepts(k1.id)
    assert not stage4.accepts(k1.id)
    with pytest.raises(NoCommonKey):
        stage4.sealing_key(set(stage0.accepted_ids))


def test_ring_refuses_the_same_key_twice() -> None:
    with pytest.raises(KeyLoadError, match="twice"):
        KeyRing(make_key(1), next=make_key(1))


def test_ring_from_files(tmp_path: Path) -> None:
    cur = write(tmp_path / "cur", SECRET_HEX.encode())
    nxt = write(tmp_path / "next", RAW)
    ring = KeyRing.from_files(cur, nxt)
    assert ring.current.source == "hex" and ring.next is not None and ring.previous is None
    assert ring.accepted_ids == (key_id(RAW), key_id(bytes.fromhex(SECRET_HEX)))
    prev = write(tmp_path / "prev", PASSPHRASE.encode())
    assert KeyRing.from_files(cur, previous=prev).previous is not None
    nxt.chmod(0o644)
    with pytest.raises(KeyFilePermissionError, match="next"):
        KeyRing.from_files(cur, nxt)
