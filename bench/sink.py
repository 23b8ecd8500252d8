"""An upstream that greets each connection with one byte and then just holds it.

Run as its own process (`python -m bench.sink PORT`) so its 10,000 sockets count
against its own descriptor limit, not the load generator's. The greeting lets the
load generator prove that each connection went all the way through the tunnel.
"""

from __future__ import annotations

import asyncio
import resource
import signal
import sys

GREETING = b"!"


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(GREETING)
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_hold, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def raise_nofile() -> int:
    """Lift the soft descriptor limit to the hard one; returns the new limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


if __name__ == "__main__":
    raise_nofile()
    asyncio.run(serve(int(sys.argv[1])))
