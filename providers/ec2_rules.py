"""Which TCP ports an exit server's security group opens, as EC2 ``IpPermissions``.

Pure functions of the ServerSpec, so the rules can be checked without AWS. Each
port range is opened to 0.0.0.0/0 and ::/0: the tunnel authenticates with its
token and pinned certificate, and the data ports are public by design.
"""

from __future__ import annotations

from typing import Any

from providers.errors import InvalidSpec
from providers.models import ServerSpec
from providers.ports import inbound_ranges

#: AWS allows 60 inbound rules per group for IPv4 and 60 for IPv6.
MAX_RULES = 60


def open_ports(server: ServerSpec) -> list[tuple[int, int]]:
    """The shared inbound ranges, refused up front when they exceed one group's rules."""
    try:
        merged = inbound_ranges(server)
    except InvalidSpec as exc:
        raise InvalidSpec(f"ec2: {exc.message}", hint=exc.hint) from exc
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
