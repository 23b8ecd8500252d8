"""Provider access from CLI flags: config (never stored) and the provider instance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from inletsctl.errors import UsageError, map_provider_errors
from providers import registry
from providers.base import Provider
from providers.dns.base import DnsConfig
from providers.models import ProviderConfig


@dataclass(frozen=True)
class Access:
    """Credential and endpoint flags as given; files are read only when used."""

    access_token: str = ""
    access_token_file: Path | None = None
    secret_key: str = ""
    secret_key_file: Path | None = None
    session_token: str = ""
    profile: str = ""
    endpoint_url: str = ""
    region: str = ""


def _secret(value: str, path: Path | None, flag: str) -> str:
    if value and path is not None:
        raise UsageError(f"pass either {flag} or {flag}-file, not both")
    if path is None:
        return value
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read {flag}-file {path}: {exc.strerror}") from exc


def config(access: Access, state_dir: Path) -> ProviderConfig:
    return ProviderConfig(
        region=access.region,
        access_token=_secret(access.access_token, access.access_token_file, "--access-token"),
        secret_key=_secret(access.secret_key, access.secret_key_file, "--secret-key"),
        session_token=access.session_token,
        profile=access.profile,
        endpoint_url=access.endpoint_url,
        state_dir=str(state_dir),
    )


def dns_config(access: Access, provider: str, dns: str) -> DnsConfig:
    """The credential flags are the VM cloud's; they reach the DNS API only when both are
    one account's (``--provider aws --dns route53``). Otherwise the DNS provider reads
    its own variables. ``--endpoint-url`` is the VM API's, never passed on."""
    from providers.dns import SAME_ACCOUNT

    if provider not in SAME_ACCOUNT.get(dns, ()):
        return DnsConfig()
    return DnsConfig(
        token=_secret(access.access_token, access.access_token_file, "--access-token"),
        secret_key=_secret(access.secret_key, access.secret_key_file, "--secret-key"),
        session_token=access.session_token,
        profile=access.profile,
    )


def provider_class(name: str) -> type[Provider]:
    with map_provider_errors():
        return registry.load(name)


def open_provider(name: str, access: Access, state_dir: Path) -> Provider:
    cls = provider_class(name)
    cfg = config(access, state_dir)
    with map_provider_errors():
        return cls(cfg)


def opener(access: Access, state_dir: Path) -> Callable[[str, str], Provider]:
    """Opens a provider for one region: create tries several, delete and prune use each
    host's own (EC2's client, and so its purge, belongs to one region)."""

    def open_in(name: str, region: str) -> Provider:
        return open_provider(name, replace(access, region=region), state_dir)

    return open_in
