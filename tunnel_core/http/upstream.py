"""The client side of HTTP mode: a tunnel stream in, the local service out.

The server sends HTTP/1.1 requests for a single host per stream, already cleaned
of hop-by-hop headers, so the client only needs the first request's Host header
to pick an upstream; after that it splices bytes, which also carries keep-alive
requests and WebSocket upgrades.
When the upstream refuses or does not accept in time, the client answers 502
itself, marked so the server counts it as an upstream error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tunnel_core.splice import Duplex, StreamDuplex, splice

from .proxy import UPSTREAM_ERROR_HEADER
from .public import simple_response
from .router import normalize_host

__all__ = ["Upstream", "Upstreams", "parse_upstream", "serve_http_stream"]

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Upstream:
    """One ``--upstream [HOST=]URL``; ``host`` ``None`` serves any Host."""

    host: str | None
    address: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


def parse_upstream(spec: str) -> Upstream:
    """Parse ``[HOST=]http://ADDR[:PORT]``; raises ValueError with the fix in it."""
    host, sep, url = spec.partition("=")
    if not sep:
        host, url = "", spec
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(
            f"--upstream {spec!r}: expected [HOST=]http://ADDRESS[:PORT], "
            "e.g. api.example.com=http://127.0.0.1:3000"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"--upstream {spec!r}: the port is not a number 1-65535") from None
    return Upstream(normalize_host(host) if host else None, parts.hostname, port)


class Upstreams:
    """The client's Host -> upstream table; the bare ``URL`` one is the default."""

    def __init__(self, upstreams: Iterable[Upstream]) -> None:
        self.by_host: dict[str | None, Upstream] = {}
        for upstream in upstreams:
            if upstream.host in self.by_host:
                raise ValueError(f"two --upstream values for host {upstream.host or '(default)'}")
            self.by_host[upstream.host] = upstream

    @property
    def hosts(self) -> list[str | None]:
        """What the client registers with the server."""
        return list(self.by_host)

    def pick(self, host: str | None) -> Upstream | None:
        if host is not None:
            found = self.by_host.get(normalize_host(host))
            if found is not None:
                return found
        return self.by_host.get(None)


def _host_of(head: bytes) -> str | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"host":
            return value.strip().decode("latin-1")
    return None


async def _read_head(stream: Duplex) -> bytes:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            return b""
        data = await stream.read(_MAX_HEAD)
        if not data:
            return b""
        buffer += data
    return buffer


async def serve_http_stream(
    stream: Duplex, upstreams: Upstreams, connect_timeout: float = 10.0
) -> None:
    """Serve one stream the server opened: dial the upstream for its Host and splice."""
    try:
        buffered = await _read_head(stream)
        if not buffered:
            return
        upstream = upstreams.pick(_host_of(buffered))
        if upstream is None:
            await stream.write(simple_response(502, "no upstream for this host\n"))
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(upstream.address, upstream.port), connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else "refused"
            marker = ((UPSTREAM_ERROR_HEADER.decode(), reason),)
            body = f"upstream {upstream.url} {reason}\n"
            await stream.write(simple_response(502, body, marker))
            return
        local = StreamDuplex(reader, writer)
        try:
            await local.write(buffered)
            await splice(stream, local, half_close=False)
        finally:
            await local.close()
    except (ConnectionError, OSError):
        pass  # the stream or the upstream broke; the server answers for us
    finally:
        await stream.close()
