"""Which inbound TCP ports an exit server needs, for every provider's firewall.

One answer for all clouds, so an EC2 security group, a DigitalOcean firewall and a
Hetzner one never disagree about what a tunnel server must accept.
"""

from __future__ import annotations

from providers.errors import InvalidSpec
from providers.models import ServerSpec, TunnelMode

__all__ = [
    "ANYWHERE",
    "allow_list",
    "http_ports",
    "inbound_ports",
    "inbound_ranges",
    "inbound_rules",
    "merge_ranges",
    "port_spec",
]

#: Every IPv4 and IPv6 source.
ANYWHERE: tuple[str, ...] = ("0.0.0.0/0", "::/0")


def allow_list(text: str) -> list[tuple[int, int]]:
    """The server's ``--allow-ports`` ranges, parsed by the engine that will enforce them."""
    from tunnel_core.errors import ConfigError
    from tunnel_core.ports import parse_port_ranges  # imported here: the engine is heavy

    try:
        return parse_port_ranges(text)
    except ConfigError as exc:
        raise InvalidSpec(exc.message, hint=exc.hint or None) from exc


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping and adjacent ranges joined, so each needs one rule."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def http_ports(server: ServerSpec) -> list[int]:
    """HTTP mode's public ports: the data port, or 80 and 443 where Caddy answers."""
    return [80, 443] if server.letsencrypt_domains else [server.data_port]


def _data_ranges(server: ServerSpec) -> list[tuple[int, int]]:
    if server.mode is TunnelMode.HTTP:
        return [(port, port) for port in http_ports(server)]
    if server.ports:
        return [(port, port) for port in server.ports]
    return allow_list(server.allow_ports)


def inbound_ranges(server: ServerSpec) -> list[tuple[int, int]]:
    """Merged (first, last) port ranges a client must reach: control plus data ports.

    TCP mode opens the ports the client asked for, or the server's whole
    allow-list when it did not say; HTTP mode opens the data port, or 80 and 443
    when Caddy answers for Let's Encrypt domains.
    """
    return merge_ranges([(server.control_port, server.control_port), *_data_ranges(server)])


def inbound_rules(server: ServerSpec) -> list[tuple[tuple[int, int], tuple[str, ...]]]:
    """(port range, source CIDRs) pairs: what each provider's firewall opens to whom.

    Without ``server.allow_ips`` every range in :func:`inbound_ranges` is open to
    :data:`ANYWHERE`. With it, the control port stays open to all (clients connect to
    it from wherever they are; the token and the pin guard it) and the data ports are
    open only to the allowed networks, as the engine's own ``--allow-ips`` is.
    """
    if not server.allow_ips:
        return [(r, ANYWHERE) for r in inbound_ranges(server)]
    control = (server.control_port, server.control_port)
    return [(control, ANYWHERE)] + [
        (r, tuple(server.allow_ips)) for r in merge_ranges(_data_ranges(server))
    ]


def port_spec(first: int, last: int) -> str:
    """A range as the port specs firewall APIs take: ``"8123"`` or ``"1024-65535"``."""
    return str(first) if first == last else f"{first}-{last}"


def inbound_ports(server: ServerSpec) -> list[str]:
    """The same ranges as the port specs firewall APIs take: ``"8123"`` or ``"1024-65535"``."""
    return [port_spec(a, b) for a, b in inbound_ranges(server)]
