"""A throwaway self-signed certificate for tests that need a real ServerSpec."""

from __future__ import annotations

from providers.testing.conformance import make_server_spec as server_spec
from tunnel_core.tls import self_signed as _engine_self_signed


def self_signed(cn: str = "127.0.0.1") -> tuple[str, str, str]:
    """(cert_pem, key_pem, fingerprint) of a fresh certificate with ``cn`` among its SANs."""
    return _engine_self_signed([cn])


__all__ = ["self_signed", "server_spec"]
