"""``tunnel-core``: one subcommand per mode; each mode module registers its own flags."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from . import config, status
from .errors import ConfigError, TunnelError
from .http import cli as http_cli
from .runner import report, setup_logging
from .tcp import cli as tcp_cli
from .udp import cli as udp_cli

#: Each mode module has ``register(subparsers)`` that sets ``func`` on its parsers.
MODES = [tcp_cli.register, udp_cli.register, http_cli.register, status.register]


def engine_version() -> str:
    """The release this engine is: the pyz carries its own metadata, an install inletsctl's."""
    for dist in ("tunnel-core", "inletsctl"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunnel-core",
        description="TCP, UDP and HTTP tunnels over a TLS WebSocket.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"tunnel-core {engine_version()}")
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for register in MODES:
        register(modes)
    config.add_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = config.resolve(build_parser, argv)  # --config FILE under the command line
    except ConfigError as exc:
        report(exc)
        return 2
    if args.print_config:
        print(config.format_toml(build_parser(), args), end="")
        return 0
    setup_logging(args.verbose)
    try:
        code: int = args.func(args)
    except ConfigError as exc:  # checked before anything started (e.g. --generate)
        report(exc)
        return 2
    except TunnelError as exc:
        report(exc)
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
