"""``tunnel-core udp server|client``: the port-forwarding CLI, plus flow limits."""

from __future__ import annotations

import argparse

from tunnel_core import netaddr, portmode
from tunnel_core.errors import ConfigError
from tunnel_core.ports import parse_port_map

from .plane import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, UdpServerPlane, UdpUpstreams


def register(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    udp = modes.add_parser("udp", help="forward UDP ports")
    roles = udp.add_subparsers(dest="role", required=True, metavar="{server,client}")
    server = roles.add_parser(
        "server",
        help="listen for clients and on the UDP ports they ask for",
        description="Run on the public host: accepts tunnel clients on the TLS control port "
        "and listens on the UDP ports each client asks for (within --allow-ports). Each "
        "public source address is a flow, carried as one stream to the client.",
    )
    portmode.add_server_args(server)
    server.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close a flow that carried no datagram either way for this long "
        f"({DEFAULT_IDLE_TIMEOUT:g})",
    )
    server.add_argument(
        "--max-flows",
        type=int,
        default=DEFAULT_MAX_FLOWS,
        metavar="N",
        help="flows one public port holds at once; datagrams from further source "
        f"addresses are dropped ({DEFAULT_MAX_FLOWS})",
    )
    server.set_defaults(func=server_main)
    client = roles.add_parser(
        "client",
        help="connect to a server and forward its public UDP ports to an upstream",
        description="Run next to the private service: connects to the server and forwards "
        "the datagrams of each public flow to --upstream, and the answers back.",
    )
    portmode.add_client_args(client)
    client.set_defaults(func=client_main)


def _plane(
    bind: str,
    allow: list[tuple[int, int]],
    allow_ips: tuple[netaddr.Network, ...] | None,
    args: argparse.Namespace,
) -> UdpServerPlane:
    if args.idle_timeout <= 0:
        raise ConfigError("--idle-timeout must be > 0 seconds")
    if args.max_flows < 1:
        raise ConfigError("--max-flows must be at least 1")
    return UdpServerPlane(bind, allow, allow_ips, args.idle_timeout, args.max_flows)


def server_main(args: argparse.Namespace) -> int:
    return portmode.server_main(args, _plane)


def client_main(args: argparse.Namespace) -> int:
    return portmode.client_main(
        args, lambda: UdpUpstreams(args.upstream, parse_port_map(args.ports))
    )
