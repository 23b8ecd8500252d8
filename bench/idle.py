"""Server memory with 10,000 idle tunnelled connections.

Each connection is opened from the public side, crosses the tunnel and reaches a
holding upstream (bench.sink), which greets it; a connection counts only once the
greeting came back. RSS is read from /proc while all of them sit idle.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from bench.procs import BenchError, Procs, free_port, is_listening, rss_bytes, wait_for
from bench.sink import GREETING, raise_nofile
from bench.tunnel import start_tunnel

MB = 1024 * 1024


async def _open_all(
    port: int, count: int, concurrency: int, timeout: float
) -> list[asyncio.StreamWriter]:
    gate = asyncio.Semaphore(concurrency)
    opened: list[asyncio.StreamWriter] = []

    async def one() -> None:
        async with gate:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened.append(writer)
            if await reader.readexactly(len(GREETING)) != GREETING:
                raise BenchError("the upstream's greeting came back altered")

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), timeout)
    return opened


async def _settled_rss(pid: int, seconds: float = 1.0) -> int:
    """The largest of a few RSS samples, so a brief dip does not flatter us."""
    end, peak = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        peak = max(peak, rss_bytes(pid))
        await asyncio.sleep(0.1)
    return peak


async def _measure(server_pid: int, client_pid: int, port: int, count: int) -> dict[str, object]:
    base_server, base_client = await _settled_rss(server_pid), await _settled_rss(client_pid)
    started = time.monotonic()
    writers = await _open_all(port, count, 200, 300)
    opened_in = time.monotonic() - started
    try:
        server, client = await _settled_rss(server_pid, 2.0), await _settled_rss(client_pid, 2.0)
    finally:
        for w in writers:
            w.close()
    return {
        "test": "idle_connections",
        "connections": count,
        "open_seconds": round(opened_in, 2),
        "server_rss_MB_before": round(base_server / MB, 1),
        "server_rss_MB": round(server / MB, 1),
        "server_KB_per_connection": round((server - base_server) / count / 1024, 2),
        "client_rss_MB_before": round(base_client / MB, 1),
        "client_rss_MB": round(client / MB, 1),
    }


def idle_connections(procs: Procs, work: Path, engine: list[str], count: int) -> dict[str, object]:
    limit = raise_nofile()
    if limit < count + 100:
        raise BenchError(
            f"the descriptor limit {limit} is below {count} connections; raise `ulimit -Hn`"
        )
    sink_port = free_port()
    sink = procs.start("sink", [sys.executable, "-m", "bench.sink", str(sink_port)])
    try:
        wait_for("the holding upstream", lambda: is_listening(sink_port))
        tunnel = start_tunnel(procs, work, engine, [sink_port], "idle")
        try:
            return asyncio.run(
                _measure(tunnel.server.pid, tunnel.client.pid, tunnel.public[sink_port], count)
            )
        finally:
            procs.stop(tunnel.client)
            procs.stop(tunnel.server)
    finally:
        procs.stop(sink)
