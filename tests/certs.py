"""A throwaway self-signed certificate for tests that need a real ServerSpec."""

from __future__ import annotations

import datetime
import hashlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from providers.models import ServerSpec, TunnelMode


def self_signed(cn: str = "127.0.0.1") -> tuple[str, str, str]:
    """(cert_pem, key_pem, fingerprint) for a P-256 certificate valid for a day."""
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem, "sha256:" + hashlib.sha256(der).hexdigest()


def server_spec(mode: TunnelMode = TunnelMode.TCP, ports: tuple[int, ...] = (8080,)) -> ServerSpec:
    cert, key, fp = self_signed()
    return ServerSpec(
        mode=mode,
        token=secrets.token_urlsafe(32),
        tls_cert_pem=cert,
        tls_key_pem=key,
        tls_fingerprint=fp,
        ports=ports,
    )
