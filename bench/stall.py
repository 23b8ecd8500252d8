"""Memory while one tunnelled reader is stalled and its sender pushes 1 GB.

Per-stream credit is what keeps a slow reader from growing a buffer, so the test
runs two streams over one tunnel. Phases, with RSS of server and client sampled
every 100 ms in each: `stalled`, the first stream's reader does not read while its
sender tries to push 1 GB, until the sender is stuck; `stalled_live`, a second
stream moves 1 GB at full speed meanwhile (one stream must not block another, and
the stuck sender must get no further); `draining`, the stalled reader reads and
must receive all of its 1 GB.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import BenchError, Procs, free_port, rss_bytes
from bench.tunnel import start_tunnel

MB = 1024 * 1024
CHUNK = memoryview(b"\x5a" * MB)


@dataclass
class _Stream:
    """One tunnelled connection, seen as sender and reader for the chosen direction."""

    sender: asyncio.StreamWriter
    reader: asyncio.StreamReader
    others: tuple[asyncio.StreamWriter, ...]
    sent: int = 0
    received: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, total: int) -> None:
        while self.sent < total:
            self.sender.write(CHUNK[: min(MB, total - self.sent)])
            await self.sender.drain()
            self.sent += min(MB, total - self.sent)

    async def drain(self, total: int) -> None:
        while self.received < total:
            data = await self.reader.read(MB)
            if not data:
                raise BenchError(f"stream closed after {self.received} of {total} bytes")
            self.received += len(data)
        self.done.set()

    def close(self) -> None:
        self.sender.close()
        for w in self.others:
            w.close()


class _Sampler:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.phase = "before"
        self.peaks: dict[tuple[str, str], int] = {}

    def sample(self) -> None:
        for name, pid in self.pids.items():
            key = (name, self.phase)
            self.peaks[key] = max(self.peaks.get(key, 0), rss_bytes(pid))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.1)


async def _settled(count: Callable[[], int], quiet: float = 1.0, limit: float = 15.0) -> int:
    """Wait until `count()` has not moved for `quiet` seconds (at most `limit`); return it.

    The stalled sender stops once the windows and socket buffers on its way are
    full; how much it got rid of until then is what the tunnel buffers for it.
    """
    deadline = time.monotonic() + limit
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if count() != last:
            last, since = count(), time.monotonic()
    return last


async def _measure(
    procs: Procs, work: Path, engine: list[str], direction: str, total: int
) -> dict[str, object]:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    port = free_port()
    upstream = await asyncio.start_server(on_upstream, "127.0.0.1", port)
    tunnel = await asyncio.to_thread(
        start_tunnel, procs, work, engine, [port], f"stall-{direction}"
    )
    streams: list[_Stream] = []
    try:

        async def connect() -> _Stream:
            pub_r, pub_w = await asyncio.open_connection("127.0.0.1", tunnel.public[port])
            up_r, up_w = await asyncio.wait_for(accepted.get(), 30)
            if direction == "upload":
                stream = _Stream(pub_w, up_r, (up_w,))
            else:
                stream = _Stream(up_w, pub_r, (pub_w,))
            streams.append(stream)
            return stream

        stalled, live = await connect(), await connect()
        sampler = _Sampler({"server": tunnel.server.pid, "client": tunnel.client.pid})
        sampler.sample()
        sampler.phase = "stalled"
        sampling = asyncio.create_task(sampler.run())
        pushing = asyncio.create_task(stalled.send(total))
        in_flight = await _settled(lambda: stalled.sent)
        sampler.phase = "stalled_live"
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(live.send(total), live.drain(total)), 300)
        live_seconds = time.monotonic() - started
        in_flight_after = stalled.sent
        sampler.phase = "draining"
        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(pushing, stalled.drain(total)), 300)
        drain_seconds = time.monotonic() - started
        sampling.cancel()
        sampler.sample()
    finally:
        for s in streams:
            s.close()
        upstream.close()
        procs.stop(tunnel.client)
        procs.stop(tunnel.server)

    def mb(name: str, phase: str) -> float:
        return round(sampler.peaks[(name, phase)] / MB, 1)

    return {
        "test": "stalled_reader",
        "direction": direction,
        "bytes": total,
        "stalled_sender_accepted_MB": round(in_flight / MB, 1),
        "stalled_sender_accepted_MB_after_live": round(in_flight_after / MB, 1),
        "live_stream_MBps_during_stall": round(total / MB / live_seconds, 1),
        "drain_MBps": round(total / MB / drain_seconds, 1),
    } | {
        f"{name}_rss_MB_{phase}": mb(name, phase)
        for name in ("server", "client")
        for phase in ("before", "stalled", "stalled_live", "draining")
    }


def stalled_reader(
    procs: Procs, work: Path, engine: list[str], direction: str, total: int
) -> dict[str, object]:
    """`direction` is "upload" (public side sends, upstream reader stalls) or "download"."""
    return asyncio.run(_measure(procs, work, engine, direction, total))
