"""DNS records for ``create --letsencrypt-domain D --dns P``: A/AAAA records that point
the domains at the new host, removed with it.

The providers are named here rather than registered as entry points: they are
part of inletsctl's own lifecycle (made after the VM's IP is known, removed before
the VM), not plugins. Each module imports its SDK lazily, so importing this
package costs nothing.
"""

from __future__ import annotations

import importlib

from providers.dns.base import DnsConfig, DnsProvider, Record, Zone
from providers.errors import ProviderNotFound

__all__ = ["NAMES", "SAME_ACCOUNT", "DnsConfig", "DnsProvider", "Record", "Zone", "open_dns"]

#: ``--dns`` value -> "module:class"
_PROVIDERS = {
    "route53": "providers.dns.route53:Route53Dns",
    "digitalocean": "providers.dns.digitalocean:DigitalOceanDns",
    "hetzner": "providers.dns.hetzner:HetznerDns",
}
NAMES = tuple(_PROVIDERS)
#: the VM providers whose ``--access-token``/``--profile`` flags are the same account's
SAME_ACCOUNT = {"route53": ("ec2", "aws"), "digitalocean": ("digitalocean",), "hetzner": ()}


def open_dns(name: str, config: DnsConfig) -> DnsProvider:
    if name not in _PROVIDERS:
        raise ProviderNotFound(f"no DNS provider {name!r}", hint=f"Pass --dns {', '.join(NAMES)}.")
    module, _, cls = _PROVIDERS[name].partition(":")
    provider: type[DnsProvider] = getattr(importlib.import_module(module), cls)
    return provider(config)
