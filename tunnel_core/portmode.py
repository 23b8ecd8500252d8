"""The CLI of the port-forwarding modes (``tcp``, ``udp``): the flags and mains they share.

Both forward public ports to one upstream host, so they take the same flags and run
the same way; a mode adds its own options and says how to build its data planes.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable

from . import netaddr, options
from .client import ClientConfig, run_clients
from .ports import PortPlane, PortUpstreams, parse_port_ranges
from .runner import run
from .server import ServerConfig, TunnelServer
from .systemd import add_generate_arg, server_unit

__all__ = ["add_client_args", "add_server_args", "client_main", "server_main"]

log = logging.getLogger("tunnel_core")

#: (``--bind``, ``--allow-ports`` ranges, ``--allow-ips``, all flags) -> the server plane
PlaneFactory = Callable[
    [str, list[tuple[int, int]], "tuple[netaddr.Network, ...] | None", argparse.Namespace],
    PortPlane,
]


def add_server_args(server: argparse.ArgumentParser) -> None:
    options.add_server_args(server)
    server.add_argument(
        "--allow-ports",
        default="1024-65535",
        metavar="RANGES",
        help="ports clients may ask for, e.g. 1024-65535 or 80,443,8000-9000 (1024-65535)",
    )
    options.add_allow_ips_arg(server, "the public ports")
    add_generate_arg(server)


def add_client_args(client: argparse.ArgumentParser) -> None:
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


def server_main(args: argparse.Namespace, make_plane: PlaneFactory) -> int:
    allow_ips = options.allow_ips(args)  # a bad CIDR is a usage error before anything
    interval, silence = options.keepalive(args)
    allow = parse_port_ranges(args.allow_ports)
    plane = make_plane(args.bind, allow, allow_ips, args)  # checks the mode's own flags
    if args.generate:
        print(server_unit(args.mode, args), end="")
        return 0

    async def main(stop: asyncio.Event) -> int:
        ctx, fingerprint = options.server_tls(args)
        config = ServerConfig(
            token=options.resolve_token(args),
            ssl_context=ctx,
            bind=args.bind,
            control_port=args.control_port,
            keepalive=interval,
            keepalive_timeout=silence,
        )
        server = TunnelServer(config, plane)
        await server.start()
        log.info(
            "control port listening on %s (%s mode)",
            netaddr.host_port(args.bind, server.port),
            args.mode,
        )
        if fingerprint:
            options.announce(args, fingerprint, server.port, "--upstream 127.0.0.1 --ports PORTS")
        await stop.wait()
        log.info("shutting down")
        await server.close()
        return 0

    return run(main)


def client_main(args: argparse.Namespace, make_upstreams: Callable[[], PortUpstreams]) -> int:
    async def main(stop: asyncio.Event) -> int:
        upstreams = make_upstreams()
        configs = options.client_configs(args, upstreams.hello())

        def connected(config: ClientConfig, info: object) -> None:
            log.info("connected to %s; forwarding %s/%s", config.url, args.ports, args.mode)

        await run_clients(configs, upstreams.on_stream, stop, connected)
        return 0

    return run(main, role="client")
