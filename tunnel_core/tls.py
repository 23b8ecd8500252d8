"""TLS without a public CA: self-signed certificates and SHA-256 fingerprint pinning.

The client does not verify a chain; it verifies that the server's DER certificate
hashes to the pinned fingerprint, right after the handshake and before it writes a
single byte (so a server with another certificate never sees the token).
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
import tempfile
from pathlib import Path

from .errors import ConfigError, FingerprintMismatch

_FINGERPRINT = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")


def fingerprint(der: bytes) -> str:
    """The printable pin of a DER certificate: ``sha256:<64 lowercase hex>``."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """Normalise a user's fingerprint; colons and upper case are accepted."""
    cleaned = text.strip().lower().removeprefix("sha256:").replace(":", "")
    match = _FINGERPRINT.match(cleaned)
    if not match:
        raise ConfigError(
            f"--tls-fingerprint {text!r} is not a SHA-256 fingerprint",
            "pass sha256:<64 hex digits> as printed by the server",
        )
    return "sha256:" + match.group(1)


def check_pin(der: bytes | None, expected: str) -> None:
    actual = fingerprint(der or b"")
    if der is None or actual != expected:
        raise FingerprintMismatch(
            f"the server's certificate {actual if der else '(none)'} does not match the pinned "
            f"{expected}; the token was not sent"
        )


def server_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate {cert_file} / key {key_file}: {exc}",
            "pass a PEM certificate and its unencrypted key, or use --auto-tls",
        ) from exc
    return ctx


def server_context_from_pem(cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """ssl only loads keys from files; use a private temporary directory, then remove it."""
    with tempfile.TemporaryDirectory(prefix="tunnel-core-") as tmp:
        cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert.write_text(cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key_pem)
        return server_context(cert, key)


def client_context() -> ssl.SSLContext:
    """No chain verification: trust comes from the pin checked after the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def self_signed(sans: list[str]) -> tuple[str, str, str]:
    """(cert PEM, key PEM, fingerprint) of a fresh P-256 certificate valid for ten years."""
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:  # the zipapp ships without it
        raise ConfigError(
            "--auto-tls needs the 'cryptography' package",
            "install it, or pass --tls-cert and --tls-key",
        ) from exc
    names: list[x509.GeneralName] = []
    for san in dict.fromkeys(["127.0.0.1", "::1", "localhost", *sans]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunnel-core")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return cert_pem, key_pem, fingerprint(cert.public_bytes(serialization.Encoding.DER))
