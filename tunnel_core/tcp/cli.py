"""``tunnel-core tcp server|client``: the port-forwarding CLI, plus PROXY protocol."""

from __future__ import annotations

import argparse

from tunnel_core import portmode
from tunnel_core.ports import parse_port_map

from .plane import TcpServerPlane, TcpUpstreams


def register(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tcp = modes.add_parser("tcp", help="forward TCP ports")
    roles = tcp.add_subparsers(dest="role", required=True, metavar="{server,client}")
    server = roles.add_parser(
        "server",
        help="listen for clients and on the ports they ask for",
        description="Run on the public host: accepts tunnel clients on the TLS control port "
        "and listens on the TCP ports each client asks for (within --allow-ports).",
    )
    portmode.add_server_args(server)
    server.set_defaults(func=server_main)
    client = roles.add_parser(
        "client",
        help="connect to a server and forward its public ports to an upstream",
        description="Run next to the private service: connects to the server and forwards "
        "each connection on a public port to --upstream.",
    )
    portmode.add_client_args(client)
    client.add_argument(
        "--proxy-protocol",
        choices=["v1", "v2"],
        help="start every upstream connection with a PROXY protocol header (HAProxy's v1 "
        "text or v2 binary) carrying the public client's address and port and the "
        "server's public address and port; the upstream must expect it (nginx: listen "
        "... proxy_protocol)",
    )
    client.set_defaults(func=client_main)


def server_main(args: argparse.Namespace) -> int:
    return portmode.server_main(
        args, lambda bind, allow, allow_ips, _: TcpServerPlane(bind, allow, allow_ips)
    )


def client_main(args: argparse.Namespace) -> int:
    return portmode.client_main(
        args,
        lambda: TcpUpstreams(args.upstream, parse_port_map(args.ports), args.proxy_protocol),
    )
