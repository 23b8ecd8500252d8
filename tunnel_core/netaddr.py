"""Addresses: source allow-lists (``--allow-ips``), listen hosts, ``IP:PORT`` text.

Pure functions over :mod:`ipaddress`, shared by the TCP and HTTP data planes.
"""

from __future__ import annotations

import ipaddress

from .errors import ConfigError

__all__ = [
    "Network",
    "allowed",
    "host_port",
    "listen_host",
    "parse_cidrs",
    "plain_ip",
    "split_host_port",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_cidrs(flag: str, text: str | None) -> tuple[Network, ...]:
    """``10.0.0.0/8,2001:db8::/32,192.0.2.7`` -> networks (a bare address is a /32 or /128).

    Raises :class:`ConfigError` naming ``flag`` and the bad entry; an empty list too,
    since a server that lets nobody in is a mistake, not a configuration.
    """
    networks: list[Network] = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=True))
        except ValueError as exc:
            raise ConfigError(
                f"{flag}: {part!r} is not a CIDR ({exc})",
                f"e.g. {flag} 203.0.113.0/24,2001:db8::/32 (host bits must be zero)",
            ) from None
    if not networks:
        raise ConfigError(f"{flag} is empty", f"e.g. {flag} 203.0.113.0/24")
    return tuple(networks)


def plain_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``ip`` parsed, an IPv4-mapped IPv6 address as IPv4, a zone id dropped; None if not an IP."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def allowed(ip: str, networks: tuple[Network, ...] | None) -> bool:
    """Whether a peer at ``ip`` may connect: ``None`` (no allow-list) lets everyone in."""
    if networks is None:
        return True
    address = plain_ip(ip)
    return address is not None and any(address in network for network in networks)


def listen_host(bind: str) -> str | None:
    """The host to give asyncio's ``create_server`` for ``--bind``.

    ``::`` means every address, IPv6 and IPv4, as in Go (asyncio would bind a v6-only
    socket); ``None`` makes asyncio bind ``0.0.0.0`` and ``::`` on the same port, so
    IPv4 peers keep their plain addresses. Anything else is used as given.
    """
    return None if bind in ("::", "[::]") else bind.removeprefix("[").removesuffix("]")


def host_port(host: str, port: int) -> str:
    """``IP:PORT``, with an IPv6 address in brackets (``[::1]:8123``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(text: str) -> tuple[str, int] | None:
    """``1.2.3.4:80``, ``[::1]:80`` or ``::1:80`` -> (host, port); None if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.removeprefix("[").removesuffix("]")
    return (host, int(port)) if host else None
