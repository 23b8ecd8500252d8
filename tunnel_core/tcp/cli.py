"""``tunnel-core tcp server|client``: parse flags, build the engine, run it."""

from __future__ import annotations

import argparse
import asyncio
import logging

from tunnel_core import netaddr, options
from tunnel_core.client import ClientConfig, run_client
from tunnel_core.runner import run
from tunnel_core.server import ServerConfig, TunnelServer
from tunnel_core.systemd import add_generate_arg, server_unit

from .plane import TcpServerPlane, TcpUpstreams, parse_port_map, parse_port_ranges

log = logging.getLogger("tunnel_core")


def register(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tcp = modes.add_parser("tcp", help="forward TCP ports")
    roles = tcp.add_subparsers(dest="role", required=True, metavar="{server,client}")
    server = roles.add_parser(
        "server",
        help="listen for clients and on the ports they ask for",
        description="Run on the public host: accepts tunnel clients on the TLS control port "
        "and listens on the TCP ports each client asks for (within --allow-ports).",
    )
    options.add_server_args(server)
    server.add_argument(
        "--allow-ports",
        default="1024-65535",
        metavar="RANGES",
        help="ports clients may ask for, e.g. 1024-65535 or 80,443,8000-9000 (1024-65535)",
    )
    options.add_allow_ips_arg(server, "the public ports")
    add_generate_arg(server)
    server.set_defaults(func=server_main)
    client = roles.add_parser(
        "client",
        help="connect to a server and forward its public ports to an upstream",
        description="Run next to the private service: connects to the server and forwards "
        "each connection on a public port to --upstream.",
    )
    options.add_client_args(client)
    client.add_argument(
        "--upstream", default="127.0.0.1", help="host of the private service (127.0.0.1)"
    )
    client.add_argument(
        "--ports",
        required=True,
        metavar="PORTS",
        help="public ports to forward, PORT or PUBLIC:UPSTREAM, comma-separated (8000,2222:22)",
    )
    client.add_argument(
        "--client-id",
        metavar="ID",
        help="identity sent to the server; a connection with the same id takes over the "
        "ports of an older one at once (default: random per process)",
    )
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
    allow_ips = options.allow_ips(args)  # a bad CIDR is a usage error before anything
    interval, silence = options.keepalive(args)
    if args.generate:
        print(server_unit("tcp", args), end="")
        return 0

    def build() -> tuple[ServerConfig, TcpServerPlane, str | None]:
        ctx, fingerprint = options.server_tls(args)
        config = ServerConfig(
            token=options.resolve_token(args),
            ssl_context=ctx,
            bind=args.bind,
            control_port=args.control_port,
            keepalive=interval,
            keepalive_timeout=silence,
        )
        plane = TcpServerPlane(args.bind, parse_port_ranges(args.allow_ports), allow_ips)
        return config, plane, fingerprint

    async def main(stop: asyncio.Event) -> int:
        config, plane, fingerprint = build()
        server = TunnelServer(config, plane)
        await server.start()
        log.info(
            "control port listening on %s (tcp mode)", netaddr.host_port(args.bind, server.port)
        )
        if fingerprint:
            options.announce(args, fingerprint, server.port, "--upstream 127.0.0.1 --ports PORTS")
        await stop.wait()
        log.info("shutting down")
        await server.close()
        return 0

    return run(main)


def client_main(args: argparse.Namespace) -> int:
    async def main(stop: asyncio.Event) -> int:
        upstreams = TcpUpstreams(args.upstream, parse_port_map(args.ports), args.proxy_protocol)
        config = ClientConfig(
            url=args.url,
            token=options.resolve_token(args),
            hello=upstreams.hello(),
            fingerprint=options.client_pin(args),
            insecure=args.insecure,
        )
        if args.client_id:
            config.client_id = args.client_id

        def connected(info: object) -> None:
            log.info("connected to %s; forwarding %s", args.url, args.ports)

        await run_client(config, upstreams.on_stream, stop, connected)
        return 0

    return run(main, role="client")
