"""Which inbound TCP ports an exit server needs, for every provider's firewall.

One answer for all clouds, so a DigitalOcean firewall and a Hetzner one never
disagree about what a tunnel server must accept.
"""

from __future__ import annotations

from providers.models import ServerSpec, TunnelMode

__all__ = ["inbound_ports"]


def inbound_ports(server: ServerSpec) -> list[str]:
    """Port specs (``"8123"`` or ``"1024-65535"``) to open, control port first.

    TCP mode opens the ports the client asked for, or the server's whole
    allow-list when it did not say; HTTP mode opens the data port, or 80 and 443
    when Caddy answers for Let's Encrypt domains.
    """
    if server.mode is TunnelMode.TCP:
        data = [str(p) for p in server.ports] or [server.allow_ports]
    elif server.letsencrypt_domains:
        data = ["80", "443"]
    else:
        data = [str(server.data_port)]
    ports = [str(server.control_port)]
    ports.extend(p for p in data if p not in ports)
    return ports
