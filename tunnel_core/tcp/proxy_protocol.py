"""PROXY protocol headers (HAProxy's proxy-protocol.txt, versions 1 and 2), sans-I/O.

The TCP client writes one before any other byte on each upstream connection it dials
(``--proxy-protocol v1|v2``), so an upstream that speaks it (nginx ``listen ...
proxy_protocol``, HAProxy ``accept-proxy``, Postfix, ...) sees the public client's
address instead of the tunnel client's. Source is the public client, destination the
server's public address and port, both from the stream's OPEN metadata.
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["V2_SIGNATURE", "VERSIONS", "header"]

VERSIONS = ("v1", "v2")
#: The 12-byte signature every version 2 header starts with (section 2.2).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL = 0x20  # version 2, command LOCAL (no addresses)
_TCP4, _TCP6 = 0x11, 0x21  # AF_INET / AF_INET6, SOCK_STREAM

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(ip: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _pair(src: str, dst: str) -> tuple[_Address, _Address] | None:
    """Both addresses in one family (IPv4 in IPv6 as ``::ffff:a.b.c.d`` when mixed)."""
    a, b = _parse(src), _parse(dst)
    if a is None or b is None:
        return None
    if a.version != b.version:
        a, b = (ipaddress.IPv6Address(f"::ffff:{x}") if x.version == 4 else x for x in (a, b))
    return a, b


def _text(address: _Address) -> str:
    """The v1 spelling; IPv4 in IPv6 as ``::ffff:a.b.c.d`` whatever Python's version."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


def header(version: str, src: tuple[str, int] | None, dst: tuple[str, int] | None) -> bytes:
    """The header for a connection from ``src`` (ip, port) to ``dst``.

    Without both addresses (an older server that did not send them) the header says so:
    ``PROXY UNKNOWN`` (v1) or the LOCAL command (v2), and the upstream uses the real
    connection's addresses.
    """
    if version not in VERSIONS:
        raise ValueError(f"PROXY protocol version must be v1 or v2, not {version!r}")
    pair = _pair(src[0], dst[0]) if src and dst else None
    if pair is None or src is None or dst is None:
        if version == "v1":
            return b"PROXY UNKNOWN\r\n"
        return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, 0x00, 0)
    (a, b), sport, dport = pair, src[1], dst[1]
    if not (0 <= sport <= 65535 and 0 <= dport <= 65535):
        raise ValueError(f"port out of range: {sport}, {dport}")
    if version == "v1":
        proto = "TCP4" if a.version == 4 else "TCP6"
        return f"PROXY {proto} {_text(a)} {_text(b)} {sport} {dport}\r\n".encode("ascii")
    family = _TCP4 if a.version == 4 else _TCP6
    body = a.packed + b.packed + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(body)) + body
