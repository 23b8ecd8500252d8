"""The exit server's TLS identity, made on the user's machine before any VM exists.

No public CA is involved: the client pins the certificate's SHA-256, which is why the
certificate can be made here and shipped in the user-data, and why the server's IP
need not be known yet (it goes into the SAN when it is, else a fixed DNS name does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunnel_core.tls import self_signed

#: SAN used when the IP is not known before the VM exists; clients pin, not verify names.
FALLBACK_SAN = "inlets-exit-server"


@dataclass(frozen=True)
class Identity:
    cert_pem: str
    key_pem: str = field(repr=False)
    fingerprint: str


def generate(ip: str = "") -> Identity:
    """The engine's own generator, so `--auto-tls` and `create` make the same kind of cert."""
    cert_pem, key_pem, fingerprint = self_signed([FALLBACK_SAN, ip] if ip else [FALLBACK_SAN])
    return Identity(cert_pem=cert_pem, key_pem=key_pem, fingerprint=fingerprint)
