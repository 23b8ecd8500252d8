"""Run one coroutine under uvloop (when installed) until SIGTERM/SIGINT, then exit 0."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from .errors import ConfigError, TunnelError

log = logging.getLogger("tunnel_core")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s tunnel-core %(levelname)s %(message)s",
    )


def run(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """``main(stop)`` returns an exit code; ``stop`` is set by SIGTERM or SIGINT.

    Set ``TUNNEL_CORE_LOOP=asyncio`` to use the stdlib loop even when uvloop is installed.
    """

    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    _raise_fd_limit()
    try:
        if os.environ.get("TUNNEL_CORE_LOOP") != "asyncio":
            try:
                import uvloop
            except ImportError:
                pass
            else:
                return int(uvloop.run(wrapper()))
        return asyncio.run(wrapper())
    except ConfigError as exc:
        report(exc)
        return 2
    except TunnelError as exc:
        report(exc)
        return 1


def _raise_fd_limit() -> None:
    """Every tunnelled connection costs a descriptor; 1024 is a common, too low default."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.debug("could not raise the descriptor limit from %d", soft)


def report(exc: TunnelError) -> None:
    print(f"tunnel-core: error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"tunnel-core: hint: {exc.hint}", file=sys.stderr)
