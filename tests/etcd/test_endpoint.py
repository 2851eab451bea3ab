"""The etcd endpoint as a process: TLS with required client certificates (etcdctl),
SIGTERM with a watch open (exit 0), and the start-up errors."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from raftd.testing.cluster import LocalCluster, wait_until
from tests.etcd.conftest import Etcdctl, etcdctl_path

pytestmark = pytest.mark.slow


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        b = b.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return b.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_pki(d: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("raftd-test-ca", ca_key, "raftd-test-ca", ca_key, ca=True)
    _write(d / "ca", ca, ca_key)
    for name, server in (("server", True), ("client", False)):
        k = ec.generate_private_key(ec.SECP256R1())
        _write(d / name, _cert(name, k, "raftd-test-ca", ca_key, server=server), k)


def test_tls_client_certs_and_sigterm(tmp_path: Path) -> None:
    binary = etcdctl_path()
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    tls = [
        "--etcd-cert-file",
        str(pki / "server.crt"),
        "--etcd-key-file",
        str(pki / "server.key"),
        "--etcd-trusted-ca-file",
        str(pki / "ca.crt"),
    ]
    with LocalCluster(1, base_dir=tmp_path / "c", etcd=True, extra_args=tls) as cluster:
        node = cluster.nodes[0]
        ep = node.etcd_endpoint
        good = Etcdctl(
            binary,
            [f"https://{ep}"],
            [
                f"--cacert={pki / 'ca.crt'}",
                f"--cert={pki / 'client.crt'}",
                f"--key={pki / 'client.key'}",
            ],
        )
        good.out("put", "secure", "yes")
        assert good.out("get", "secure").split() == ["secure", "yes"]
        members = good.json("member", "list")["members"]
        assert members[0]["clientURLs"] == [f"https://{ep}"]
        # Without a client certificate, and in plain text: refused.
        quick = ["--dial-timeout=1s", "--command-timeout=2s"]
        no_cert = Etcdctl(binary, [f"https://{ep}"], [f"--cacert={pki / 'ca.crt'}", *quick])
        no_cert.fails("get", "secure")
        Etcdctl(binary, [ep], quick).fails("get", "secure")
        # SIGTERM while a watch stream is open: clean shutdown, exit 0.
        watch = subprocess.Popen(
            good.argv("watch", "secure"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=good.env(),
        )
        try:
            wait_until(
                lambda: good.out("put", "secure", "again") and watch.poll() is None,
                10,
                what="watch running",
            )
            t0 = time.monotonic()
            assert node.terminate(timeout=30) == 0, node.log_tail(40)
            print(f"SIGTERM to exit: {time.monotonic() - t0:.2f}s")
        finally:
            watch.kill()
            watch.communicate(timeout=10)


def _run_daemon(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "raftd",
            "run",
            "--data-dir",
            str(tmp_path / "d"),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--discovery",
            "none",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_etcd_namespace_serves_the_named_namespace_only(tmp_path: Path) -> None:
    """``--etcd-namespace``: etcd clients read and write that namespace, not the first."""
    etcdctl = Etcdctl(etcdctl_path(), [])
    with LocalCluster(
        1,
        base_dir=tmp_path / "c",
        namespaces=("/raft/first", "/raft/second"),
        etcd=True,
        extra_args=["--etcd-namespace", "/raft/second"],
    ) as cluster:
        node = cluster.nodes[0]
        etcdctl.endpoints = [node.etcd_endpoint]
        etcdctl.out("put", "where", "second")
        with node.client(namespace="/raft/second") as c:
            kv = c.get("where")
            assert kv is not None and kv.value == b"second"
        with node.client(namespace="/raft/first") as c:
            assert c.get("where") is None
            c.put("only-first", "1")
        assert etcdctl.out("get", "only-first") == ""


def test_non_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    p = _run_daemon(tmp_path, "--etcd-listen", "0.0.0.0:2379")
    assert p.returncode == 2
    assert "0.0.0.0 is not a loopback address" in p.stderr and "needs TLS" in p.stderr


def test_port_in_use_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = _run_daemon(tmp_path, "--etcd-listen", f"127.0.0.1:{port}")
    assert p.returncode == 1
    assert f"etcd endpoint 127.0.0.1:{port}: cannot listen" in p.stderr
    assert "Traceback" not in p.stderr


def test_raftd_dev_prints_working_etcd_endpoints(tmp_path: Path) -> None:
    """``raftd dev`` starts an endpoint on every node and prints them; etcdctl works
    against what it printed; SIGINT stops it cleanly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftd", "dev", "--dir", str(tmp_path / "dev")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_until(
            lambda: any("Ctrl-C stops" in ln for ln in lines) or proc.poll() is not None,
            120,
            what="raftd dev up",
        )
        endpoints = [ln.split()[-1] for ln in lines if "etcd endpoint" in ln]
        assert len(endpoints) == 3, "\n".join(lines)
        hint = next(ln for ln in lines if "etcdctl --endpoints" in ln)
        assert ",".join(endpoints) in hint
        ctl = Etcdctl(etcdctl_path(), endpoints)
        members = ctl.json("member", "list")["members"]
        assert len(members) == 3
        ctl.out("put", "dev/k", "v")
        assert Etcdctl(etcdctl_path(), endpoints[2:]).out("get", "dev/k").split() == ["dev/k", "v"]
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
