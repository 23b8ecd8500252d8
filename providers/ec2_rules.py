"""Which TCP ports an exit server's security group opens, as EC2 ``IpPermissions``.

Pure functions of the ServerSpec, so the rules can be checked without AWS. Each
port range is opened to 0.0.0.0/0 and ::/0: the tunnel authenticates with its
token and pinned certificate, and the data ports are public by design.
"""

from __future__ import annotations

from typing import Any

from providers.errors import InvalidSpec
from providers.models import ServerSpec, TunnelMode

#: AWS allows 60 inbound rules per group for IPv4 and 60 for IPv6.
MAX_RULES = 60


def allow_list(text: str) -> list[tuple[int, int]]:
    """The server's ``--allow-ports`` ranges, parsed by the engine that will enforce them."""
    from tunnel_core.errors import ConfigError
    from tunnel_core.tcp import parse_port_ranges  # imported here: the engine is heavy

    try:
        return parse_port_ranges(text)
    except ConfigError as exc:
        raise InvalidSpec(f"ec2: {exc.message}", hint=exc.hint or None) from exc


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping and adjacent ranges joined, so each needs one rule."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def open_ports(server: ServerSpec) -> list[tuple[int, int]]:
    """The port ranges a client must reach: control port plus the data ports."""
    ranges = [(server.control_port, server.control_port)]
    if server.mode is TunnelMode.HTTP:
        data = [80, 443] if server.letsencrypt_domains else [server.data_port]
        ranges += [(port, port) for port in data]
    elif server.ports:
        ranges += [(port, port) for port in server.ports]
    else:
        ranges += allow_list(server.allow_ports)
    merged = merge_ranges(ranges)
    if len(merged) > MAX_RULES:
        raise InvalidSpec(
            f"ec2: {len(merged)} separate port ranges do not fit one security group "
            f"(at most {MAX_RULES})",
            hint="Ask for fewer ports, or for a range such as 9000-9100.",
        )
    return merged


def ip_permissions(server: ServerSpec) -> list[dict[str, Any]]:
    """``IpPermissions`` for AuthorizeSecurityGroupIngress: one TCP entry per range."""
    return [
        {
            "IpProtocol": "tcp",
            "FromPort": first,
            "ToPort": last,
            "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "inletsctl tunnel"}],
            "Ipv6Ranges": [{"CidrIpv6": "::/0", "Description": "inletsctl tunnel"}],
        }
        for first, last in open_ports(server)
    ]
