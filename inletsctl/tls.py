"""The exit server's TLS identity, made on the user's machine before any VM exists.

No public CA is involved: the client pins the certificate's SHA-256, which is why the
certificate can be made here and shipped in the user-data, and why the server's IP
need not be known yet (it goes into the SAN when it is, else a fixed DNS name does).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: SAN used when the IP is not known before the VM exists; clients pin, not verify names.
FALLBACK_SAN = "inlets-exit-server"
VALID_DAYS = 3650


@dataclass(frozen=True)
class Identity:
    cert_pem: str
    key_pem: str = field(repr=False)
    fingerprint: str


def generate(ip: str = "", common_name: str = FALLBACK_SAN) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    sans: list[x509.GeneralName] = [x509.DNSName(FALLBACK_SAN)]
    if ip:
        sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    return Identity(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        fingerprint="sha256:" + hashlib.sha256(der).hexdigest(),
    )
