"""A throwaway self-signed certificate for tests that need a real ServerSpec."""

from __future__ import annotations

import secrets

from providers.models import ServerSpec, TunnelMode
from tunnel_core.tls import self_signed as _engine_self_signed


def self_signed(cn: str = "127.0.0.1") -> tuple[str, str, str]:
    """(cert_pem, key_pem, fingerprint) of a fresh certificate with ``cn`` among its SANs."""
    return _engine_self_signed([cn])


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
