"""Run one coroutine until SIGTERM/SIGINT, then exit 0, on the loop measured best for its role.

``TUNNEL_CORE_LOOP`` chooses: ``auto`` (the default) runs servers on uvloop when it is
installed and clients on the stdlib loop; ``uvloop`` and ``asyncio`` force one. Why per
role, measured on a quiet machine with the session reading into its own buffer: a client
on uvloop spends less CPU but moves less, iperf3 539-668 MB/s towards the service and
570-613 from it against 750-778 and 737-759 on the stdlib loop, for 5% more
redis-benchmark GET c50 requests (45.8-47.6k against 43.5-45.3k req/s); a server on
uvloop spent 0.097-0.103 CPU-s per 10k requests there against 0.121-0.123 on the stdlib
loop, at the same bulk rates. The VMs run the pyz, which has no uvloop: servers there
are on the stdlib loop whatever this says.
"""

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


LOOP_ENV = "TUNNEL_CORE_LOOP"
LOOPS = ("auto", "uvloop", "asyncio")


def wants_uvloop(role: str, choice: str | None = None) -> bool:
    """Whether ``role`` ("server" or "client") runs on uvloop under ``TUNNEL_CORE_LOOP``."""
    choice = (os.environ.get(LOOP_ENV) or "auto") if choice is None else choice
    if choice not in LOOPS:
        raise ConfigError(f"{LOOP_ENV}={choice!r}: choose one of {', '.join(LOOPS)}")
    return choice == "uvloop" or (choice == "auto" and role == "server")


def run(main: Callable[[asyncio.Event], Awaitable[int]], role: str = "server") -> int:
    """``main(stop)`` returns an exit code; ``stop`` is set by SIGTERM or SIGINT."""

    async def wrapper() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    _raise_fd_limit()
    try:
        if wants_uvloop(role):
            try:
                import uvloop
            except ImportError:
                pass
            else:
                return int(uvloop.run(wrapper()))
        tune_allocator()
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


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap (glibc's default starts at 128 KiB).
MMAP_THRESHOLD = 1 << 20
#: Free memory at the top of the heap kept for the next reads (default: 128 KiB).
TRIM_THRESHOLD = 8 << 20


def tune_allocator() -> bool:
    """Keep the stdlib loop's read-sized blocks on the heap, and the heap from shrinking.

    On the stdlib loop every socket read and every TLS write of a busy connection makes
    a block of up to 256 KiB (the read size; the TLS transport's outgoing data), freed
    soon after. With glibc's defaults such a block is mmapped, or the heap grows for it
    and is trimmed back as soon as it is freed: page faults and brk calls per read. The
    engine on the stdlib loop (the pyz, on every VM) spent 1.53-1.59 CPU-s per GB as a
    server in bulk with the defaults and 1.05-1.09 with these thresholds; the heap keeps
    at most 8 MiB above what is in use. Not applied under uvloop, whose server measured
    1.00-1.06 with the defaults and 1.12-1.21 with these. Returns False where there is
    no glibc (musl, macOS): nothing changes there.
    """
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ImportError, OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def report(exc: TunnelError) -> None:
    print(f"tunnel-core: error: {exc.message}", file=sys.stderr)
    if exc.hint:
        print(f"tunnel-core: hint: {exc.hint}", file=sys.stderr)
