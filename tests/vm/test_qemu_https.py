"""HTTPS for real: Caddy in the VM gets certificates from Pebble, a real ACME server.

Pebble (RFC 8555) and its mock DNS (``pebble-challtestsrv``, which answers 127.0.0.1
for every name) run on the host's loopback. The guest reaches Pebble's directory at
``https://10.0.2.100:PORT/dir`` through qemu's guestfwd, trusting the root of the
certificate made here for Pebble's API (``--acme-ca-root``). Pebble validates each
name for real: its mock DNS sends it to 127.0.0.1, at the host ports that
``INLETSCTL_QEMU_FORWARDS`` pins to the guest's 80 (HTTP-01) and 443 (TLS-ALPN-01).
A client here then speaks HTTPS to both names through the tunnel, resolving them
itself to the forwarded port, and checks that each certificate chains to Pebble's
issuing root (from Pebble's management API, ``/roots/0``). Nothing leaves loopback.
"""

from __future__ import annotations

import datetime
import functools
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from providers.local import free_port
from providers.qemu import FORWARDS_ENV, GUESTFWD_ADDR
from tests.vm.conftest import serial_tail, wait_for
from tests.vm.test_qemu import (
    create,
    delete_and_check_gone,
    http_upstream,
    provider_host,
    tunnel_client,
    wait_client_connected,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

DOMAINS = ("a.test", "b.test")
#: Bound on Pebble and its DNS answering after they start.
PEBBLE_START_TIMEOUT_S = 30
#: Bound on Caddy holding a certificate for both names once the tunnel server is ready.
CERT_TIMEOUT_S = 300
#: Bound on one request over HTTPS or HTTP through the tunnel.
REQUEST_TIMEOUT_S = 30
#: Pebble's log lines that show how far the orders got, in order.
PEBBLE_STAGES = (
    ("There are now 1 accounts", "account registered"),
    ("Added order", "order placed"),
    ("Attempting to validate w/ HTTP", "HTTP-01 validation tried"),
    ("set VALID by completed challenge", "a name validated"),
    ("set INVALID by completed challenge", "a validation FAILED"),
    ("Issued certificate serial", "a certificate issued"),
)


@dataclass(frozen=True)
class Pebble:
    directory: str  # as the guest reaches it, through guestfwd
    api_root: Path  # the root of Pebble's own HTTPS certificate: --acme-ca-root
    management_port: int
    http_port: int  # where Pebble's HTTP-01 validation connects: forwarded to the guest's 80
    tls_port: int  # where TLS-ALPN-01 validation connects: forwarded to the guest's 443
    log: Path

    def issuing_root(self) -> str:
        """Pebble makes a new root each run; its management API hands it out."""
        ctx = ssl.create_default_context(cafile=str(self.api_root))
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.management_port, timeout=REQUEST_TIMEOUT_S, context=ctx
        )
        try:
            conn.request("GET", "/roots/0")
            resp = conn.getresponse()
            assert resp.status == 200, resp.status
            return resp.read().decode()
        finally:
            conn.close()

    def progress(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        reached = [label for needle, label in PEBBLE_STAGES if needle in text]
        tail = "\n".join(text.splitlines()[-25:])
        return f"Pebble reached: {', '.join(reached) or 'nothing'}\n--- pebble log ---\n{tail}"


def api_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A root and, signed by it, the certificate Pebble's API serves to the guest and to us.

    Debian's package ships no certificate for Pebble's API (upstream's minica test
    root is not in it), so the test makes one for the addresses it is reached at.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble API test root")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )  # fmt: skip
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    addresses = [ipaddress.ip_address(a) for a in (GUESTFWD_ADDR, "127.0.0.1")]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(a) for a in addresses]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "api-root.pem", directory / "api-cert.pem", directory / "api-key.pem")
    paths[0].write_bytes(ca.public_bytes(Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return paths


@contextmanager
def running(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    """A server process of this test, ended by its own PID."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})}, start_new_session=True,
        )  # fmt: skip
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def listening(port: int) -> bool | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return None


@pytest.fixture
def pebble(tmp_path: Path) -> Iterator[Pebble]:
    missing = [t for t in ("pebble", "pebble-challtestsrv") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{missing[0]} is not installed (Debian: apt-get install pebble; "
                    "`make test-vm` installs it as root)")  # fmt: skip
    root, cert, key = api_certificate(tmp_path)
    dns, dns_management, acme, management = (free_port() for _ in range(4))
    http_port, tls_port = free_port(), free_port()
    config = tmp_path / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{acme}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    mock_dns = [
        "pebble-challtestsrv", "-dns01", f"127.0.0.1:{dns}", "-http01", "", "-https01", "",
        "-tlsalpn01", "", "-management", f"127.0.0.1:{dns_management}",
        "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
    ]  # fmt: skip
    server = ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns}"]
    # No random sleep before validating, no nonces refused on purpose: no timing in play.
    quiet = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    log = tmp_path / "pebble.log"
    with running(mock_dns, tmp_path / "challtestsrv.log"), running(server, log, quiet):
        wait_for("pebble's mock DNS listening", lambda: listening(dns), PEBBLE_START_TIMEOUT_S)
        wait_for("pebble listening", lambda: listening(acme), PEBBLE_START_TIMEOUT_S)
        yield Pebble(
            directory=f"https://{GUESTFWD_ADDR}:{acme}/dir",
            api_root=root,
            management_port=management,
            http_port=http_port,
            tls_port=tls_port,
            log=log,
        )


class _NamesItsHost(BaseHTTPRequestHandler):
    """The upstream behind the tunnel: says which name each request was for."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = f"hello {self.headers['Host']} {self.path}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _To(http.client.HTTPSConnection):
    """HTTPS to ``host`` (SNI, Host header, the name checked) at 127.0.0.1:``port``.

    The name is resolved by this client alone, never by the system's resolver.
    """

    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(host, timeout=REQUEST_TIMEOUT_S, context=context)
        self.target = port
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.target), timeout=REQUEST_TIMEOUT_S)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.host)


def https_get(name: str, port: int, ctx: ssl.SSLContext, path: str) -> tuple[int, bytes, bytes]:
    """(status, body, the server's certificate as DER)."""
    conn = _To(name, port, ctx)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)
        return resp.status, resp.read(), der or b""
    finally:
        conn.close()


def http_get(name: str, port: int, path: str) -> tuple[int, str]:
    """Plain HTTP to the guest's port 80 for ``name``: (status, Location)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request("GET", path, headers={"Host": name})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Location", "")
    finally:
        conn.close()


def test_https_with_certificates_from_pebble_for_two_names_through_a_vm(
    state_dir: Path,
    vm_image: Path,
    guest_release: str,
    tmp_path: Path,
    pebble: Pebble,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(FORWARDS_ENV, f"{pebble.http_port}:80,{pebble.tls_port}:443")
    with http_upstream(_NamesItsHost) as site:
        summary = create(
            *(arg for d in DOMAINS for arg in ("--letsencrypt-domain", d)),
            "--letsencrypt-email", "ops@example.test",
            "--acme-directory", pebble.directory,
            "--acme-ca-root", str(pebble.api_root),
            "--upstream", f"http://127.0.0.1:{site}",
            release_url=guest_release,
        )  # fmt: skip
        host = provider_host(state_dir, vm_image, summary)
        try:
            trust = ssl.create_default_context(cadata=pebble.issuing_root())
            with tunnel_client(
                str(summary["client_command"]), str(summary["token"]), tmp_path / "client.log"
            ) as client:
                wait_client_connected(host, str(summary["tls_fingerprint"]), client)

                def served(name: str) -> tuple[int, bytes, bytes] | None:
                    try:
                        return https_get(name, pebble.tls_port, trust, "/hi?x=1")
                    except (OSError, ssl.SSLError, http.client.HTTPException):
                        return None  # no certificate yet, or not one Pebble issued

                for name in DOMAINS:
                    status, body, der = wait_for(
                        f"Caddy serving {name} with a certificate from Pebble",
                        functools.partial(served, name),
                        CERT_TIMEOUT_S,
                    )
                    assert (status, body) == (200, f"hello {name} /hi?x=1\n".encode())
                    cert = x509.load_der_x509_certificate(der)
                    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                    assert sans.value.get_values_for_type(x509.DNSName) == [name]
                    assert "Pebble" in cert.issuer.rfc4514_string(), cert.issuer
                    assert http_get(name, pebble.http_port, "/hi?x=1") == (
                        308,
                        f"https://{name}/hi?x=1",
                    ), "port 80 redirects to HTTPS"
            with pytest.raises(ssl.SSLCertVerificationError):
                https_get(DOMAINS[0], pebble.tls_port, ssl.create_default_context(), "/")
        except BaseException as exc:
            raise AssertionError(
                f"{exc}\n{pebble.progress()}\n--- serial console ---\n{serial_tail(host)}"
            ) from exc
    delete_and_check_gone(state_dir, host, str(summary["id"]))
