"""Which TCP ports an exit server's security group opens, as EC2 ``IpPermissions``.

Pure functions of the ServerSpec, so the rules can be checked without AWS. Each
port range is opened to 0.0.0.0/0 and ::/0: the tunnel authenticates with its
token and pinned certificate, and the data ports are public by design, unless
``--allow-ips`` names the only networks the data ports serve.
"""

from __future__ import annotations

from typing import Any

from providers.errors import InvalidSpec
from providers.models import ServerSpec
from providers.ports import ANYWHERE, inbound_rules, merge_ranges

#: AWS allows 60 inbound rules per group for IPv4 and 60 for IPv6.
MAX_RULES = 60


def open_rules(server: ServerSpec) -> list[tuple[tuple[int, int], tuple[str, ...]]]:
    """The shared inbound rules, refused up front when they exceed one group's rules.

    AWS counts one rule per port range and CIDR, separately for IPv4 and IPv6.
    """
    try:
        rules = inbound_rules(server)
    except InvalidSpec as exc:
        raise InvalidSpec(f"ec2: {exc.message}", hint=exc.hint) from exc
    for family in (4, 6):
        count = sum(sum(1 for c in sources if _version(c) == family) for _, sources in rules)
        if count > MAX_RULES:
            raise InvalidSpec(
                f"ec2: {count} IPv{family} rules (port ranges times --allow-ips networks) "
                f"do not fit one security group (at most {MAX_RULES})",
                hint="Ask for fewer ports (or a range such as 9000-9100), or fewer networks.",
            )
    return rules


def open_ports(server: ServerSpec) -> list[tuple[int, int]]:
    """The port ranges of :func:`open_rules`."""
    return [ports for ports, _ in open_rules(server)]


def _version(cidr: str) -> int:
    return 6 if ":" in cidr else 4


def _permission(first: int, last: int, sources: tuple[str, ...]) -> dict[str, Any]:
    permission: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": first, "ToPort": last}
    v4 = [{"CidrIp": c, "Description": "inletsctl tunnel"} for c in sources if ":" not in c]
    v6 = [{"CidrIpv6": c, "Description": "inletsctl tunnel"} for c in sources if ":" in c]
    if v4:
        permission["IpRanges"] = v4
    if v6:
        permission["Ipv6Ranges"] = v6
    return permission


def ip_permissions(server: ServerSpec) -> list[dict[str, Any]]:
    """``IpPermissions`` for AuthorizeSecurityGroupIngress: one TCP entry per range."""
    return [_permission(first, last, sources) for (first, last), sources in open_rules(server)]


def load_balancer_permissions(server: ServerSpec, ports: list[int]) -> list[dict[str, Any]]:
    """The load balancer's group: its listener ports, to everyone or ``--allow-ips``."""
    sources = server.allow_ips or ANYWHERE
    return [
        _permission(first, last, sources) for first, last in merge_ranges([(p, p) for p in ports])
    ]


def member_permissions(
    server: ServerSpec, data_ports: list[int], load_balancer_group: str
) -> list[dict[str, Any]]:
    """A group member's group: the control port to all (every client connects to every
    member), the data ports only to the load balancer's group, so nobody goes around it.

    AWS documents that a rule naming the NLB's group admits its traffic even with client
    IP preservation on (what instance targets have by default).
    """
    control = _permission(server.control_port, server.control_port, ANYWHERE)
    data = [
        {
            "IpProtocol": "tcp",
            "FromPort": first,
            "ToPort": last,
            "UserIdGroupPairs": [
                {"GroupId": load_balancer_group, "Description": "inletsctl load balancer"}
            ],
        }
        for first, last in merge_ranges([(p, p) for p in data_ports])
    ]
    return [control, *data]
