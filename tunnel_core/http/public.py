"""One public HTTP/1.1 connection: parsing with limits and deadlines.

Shared by the HTTP data port and the fileserver, the two places where strangers
on the internet talk HTTP to us. Everything a peer can make us hold is bounded:
the request line (414), the header block and header count (431), malformed input
and ambiguous framing or Host (400), the time to send the first request's headers
counted from accept and a later one's from its first byte (408; a slowloris client
only ever holds its own connection), the rate of a request body (408), the idle time
between keep-alive requests, and the connections open at once, in all (503) and per
source address (429).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11

from tunnel_core import netaddr

from .router import valid_host

__all__ = [
    "HttpError",
    "Limits",
    "PublicConnection",
    "serve_requests",
    "simple_response",
    "source_of",
    "start_public_server",
]

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    429: "Too Many Requests",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


log = logging.getLogger("tunnel_core")

_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


@dataclass(frozen=True)
class Limits:
    """Bounds for a public HTTP listener (bytes, seconds, connections).

    ``header_timeout`` counts from accept for a connection's first request (a
    connection that sends nothing is closed then) and from the first byte of each
    later one; ``idle_timeout`` is the wait for a keep-alive request to start and
    for any read of a body. ``max_connections_per_ip`` bounds the connections one
    source (an IPv4 address, an IPv6 /64) holds at once; more get 429 (0: no limit,
    e.g. behind a load balancer whose address every client shares). A request body
    must arrive at ``min_body_rate`` bytes/s on average over each ``body_rate_window``
    seconds spent waiting for it, else 408 (0: no minimum). ``trusted_proxies`` are
    front proxies on the exit server (Caddy for HTTPS, on loopback): many clients
    share their address, so no per-source limit counts them, and the X-Forwarded-Proto
    and -Host they set are kept. ``allow_ips`` (``--allow-ips``), when set, are the only
    sources served at all: any other connection is closed at accept, unanswered.
    """

    max_request_line: int = 8 * 1024
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    max_connections: int = 1024
    max_connections_per_ip: int = 64
    min_body_rate: float = 500.0
    body_rate_window: float = 10.0
    read_size: int = 64 * 1024
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allow_ips: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None

    def trusts(self, ip: str) -> bool:
        """Whether ``ip`` is one of ``trusted_proxies``."""
        if not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted_proxies)


class HttpError(Exception):
    """A request we refuse; ``status`` is what the peer gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def simple_response(
    status: int, body: str, headers: tuple[tuple[str, str], ...] = (), *, close: bool = True
) -> bytes:
    """A complete short plain-text response, for answers that need no h11 state."""
    data = body.encode()
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    head += [f"{name}: {value}" for name, value in headers]
    head += ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(data)}"]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


def _check_framing(request: h11.Request) -> None:
    """Refuse a body whose length two parsers could read differently (RFC 9112 section 6.3).

    h11 already refuses differing Content-Length values and any Transfer-Encoding but
    ``chunked``. With both Transfer-Encoding and Content-Length, h11 would follow the
    former; an upstream that trusts the latter would read the rest of the body as a
    second request, one that bypassed routing and X-Forwarded-For. RFC 9112 lets an
    intermediary drop Content-Length instead, but such a request is an attack or a
    broken client, so it gets 400 and the connection closes.
    """
    names = {name for name, _ in request.headers}
    if b"transfer-encoding" in names:
        if b"content-length" in names:
            raise HttpError(400, "both Transfer-Encoding and Content-Length")
        if request.http_version == b"1.0":  # section 6.1: the framing is faulty
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")


_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)


def _checked_target(request: h11.Request) -> h11.Request:
    """``request`` with a valid Host that agrees with its target (RFC 9112 section 3.2).

    An absolute-form target (``GET http://a/x``) wins over the Host field (section
    3.2.2): the result has target ``/x`` and ``Host: a``, so routing, the upstream and
    X-Forwarded-Host all see the same host. An invalid Host or authority is a 400
    (h11 already refuses two Host fields).
    """
    absolute = _ABSOLUTE.fullmatch(request.target)
    if absolute is None:
        for name, value in request.headers:
            if name == b"host" and not valid_host(value):
                raise HttpError(400, "invalid Host header")
        return request
    scheme, authority, rest = absolute.groups()
    if scheme.lower() not in (b"http", b"https"):
        raise HttpError(400, "the target's scheme is not http")
    if not valid_host(authority):
        raise HttpError(400, "invalid host in the target")
    if b"#" in rest:
        raise HttpError(400, "a fragment in the target")
    target = rest if rest.startswith(b"/") else b"/" + rest
    headers = [(b"host", authority), *((k, v) for k, v in request.headers if k != b"host")]
    return h11.Request(
        method=request.method, target=target, headers=headers, http_version=request.http_version
    )


class PublicConnection:
    """An h11 server connection over an asyncio stream pair, with limits applied."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        peer = writer.get_extra_info("peername")
        self.peer_ip: str = peer[0] if isinstance(peer, tuple) else ""
        self.accepted = asyncio.get_running_loop().time()
        self._served = 0  # requests so far: the first one's header deadline runs from accept
        self._body_waited = 0.0  # seconds spent waiting for body bytes in this rate window
        self._body_bytes = 0  # body bytes received in this rate window

    async def _receive(self, timeout: float) -> None:
        data = await asyncio.wait_for(self.reader.read(self.limits.read_size), timeout)
        self.h11.receive_data(data)

    def _check_request_line(self) -> None:
        buffered, _ = self.h11.trailing_data
        limit = self.limits.max_request_line
        if len(buffered) > limit and b"\n" not in buffered[: limit + 1]:
            raise HttpError(414, "request line too long")

    async def next_request(self) -> h11.Request | None:
        """The next request head, or ``None`` when the peer left or idled out.

        Raises :class:`HttpError` for a request we refuse.
        """
        loop = asyncio.get_running_loop()
        deadline = self.accepted + self.limits.header_timeout if self._served == 0 else None
        while True:
            try:
                self._check_request_line()
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                status = 431 if exc.error_status_hint == 431 else 400
                raise HttpError(status, str(exc) or "malformed request") from exc
            if isinstance(event, h11.Request):
                _check_framing(event)
                event = _checked_target(event)
                if len(event.headers) > self.limits.max_headers:
                    raise HttpError(431, "too many header fields")
                # One read can bring a whole oversized head that h11 never saw incomplete.
                if (
                    sum(len(k) + len(v) + 4 for k, v in event.headers)
                    > self.limits.max_header_bytes
                ):
                    raise HttpError(431, "header fields too large")
                self._served += 1
                self._body_waited, self._body_bytes = 0.0, 0
                return event
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            buffered = bool(self.h11.trailing_data[0])
            if deadline is None and buffered:
                deadline = loop.time() + self.limits.header_timeout
            timeout = (
                self.limits.idle_timeout if deadline is None else max(0.0, deadline - loop.time())
            )
            try:
                await self._receive(timeout)
            except asyncio.TimeoutError:
                if not self.h11.trailing_data[0]:
                    return None  # not a byte of a request: just close
                raise HttpError(408, "request headers not received in time") from None
            if deadline is None and self.h11.trailing_data[0]:
                deadline = loop.time() + self.limits.header_timeout

    async def next_body_event(self) -> h11.Data | h11.EndOfMessage:
        """The next piece of the request body; the idle timeout bounds each wait and
        the body must keep up ``min_body_rate`` (408 otherwise)."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise HttpError(400, str(exc) or "malformed body") from exc
            if isinstance(event, h11.Data | h11.EndOfMessage):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise HttpError(400, "connection closed in the middle of the body")
            await self._receive_body()

    async def _receive_body(self) -> None:
        """One read of the body. Only time spent waiting for the client counts toward
        the rate, so an upstream that is slow to take the body never makes it 408."""
        limits = self.limits
        rate, window = limits.min_body_rate, limits.body_rate_window
        timeout = limits.idle_timeout
        if rate > 0:
            timeout = min(timeout, window - self._body_waited)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            data = await asyncio.wait_for(self.reader.read(limits.read_size), timeout)
        except asyncio.TimeoutError:
            data = None
        if rate > 0:
            self._body_waited += loop.time() - started
            self._body_bytes += len(data or b"")
            if self._body_waited >= window:
                if self._body_bytes < rate * self._body_waited:
                    raise HttpError(408, "request body too slow")
                self._body_waited, self._body_bytes = 0.0, 0
        if data is None:
            if rate > 0 and timeout < limits.idle_timeout:
                return  # the rate window ended, the body kept up: wait on
            raise HttpError(408, "request body stalled")
        self.h11.receive_data(data)

    async def send(self, event: h11.Event) -> None:
        data = self.h11.send(event)
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def refuse(self, error: HttpError) -> None:
        """Answer ``error`` and mark the connection for closing."""
        self.writer.write(simple_response(error.status, error.message + "\n"))
        await self.writer.drain()

    def abort(self) -> None:
        """Reset the connection (RST): the peer must not take what it got for complete.

        A transport's ``abort()`` alone closes with a FIN, which a client reading up to
        the close (HTTP/1.0) takes for the end of the body; a zero linger sends RST.
        """
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.writer.transport.abort()

    def reusable(self) -> bool:
        """Start the next keep-alive cycle if both sides finished cleanly."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def serve_requests(
    conn: PublicConnection,
    serve_one: Callable[[PublicConnection, h11.Request], Awaitable[bool]],
    refused: Callable[[int], None] = lambda status: None,
) -> None:
    """The keep-alive loop: serve requests until one ends the connection.

    ``serve_one`` returns ``False`` when the connection cannot carry another request;
    an :class:`HttpError` from it or from parsing is answered, reported to ``refused``
    (for metrics) and closes the connection.
    """
    while True:
        try:
            request = await conn.next_request()
            if request is None or not await serve_one(conn, request):
                return
        except HttpError as error:
            refused(error.status)
            await conn.refuse(error)
            return
        if not conn.reusable():
            return


async def start_public_server(
    handler: Callable[[PublicConnection], Awaitable[None]],
    host: str,
    port: int,
    limits: Limits,
    on_count: Callable[[int], None] | None = None,
) -> asyncio.Server:
    """Listen on ``host:port`` and run ``handler`` per connection, at most
    ``limits.max_connections`` at once (the rest get 503) and at most
    ``limits.max_connections_per_ip`` from one source (the rest get 429); refused
    connections are closed at once."""
    open_count = 0
    per_source: dict[str, int] = {}

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_count
        conn = PublicConnection(reader, writer, limits)
        if not netaddr.allowed(conn.peer_ip, limits.allow_ips):
            log.debug("port %d: refused %s (not in --allow-ips)", port, conn.peer_ip)
            writer.transport.abort()
            return
        source = source_of(conn.peer_ip)
        held = per_source.get(source, 0)
        refusal = None
        if open_count >= limits.max_connections:
            refusal = HttpError(503, "too many connections")
        elif 0 < limits.max_connections_per_ip <= held and not limits.trusts(conn.peer_ip):
            refusal = HttpError(429, "too many connections from your address")
        if refusal is not None:
            with contextlib.suppress(ConnectionError, OSError):
                await conn.refuse(refusal)
            await conn.close()
            return
        open_count += 1
        per_source[source] = held + 1
        if on_count is not None:
            on_count(open_count)
        try:
            await handler(conn)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, h11.ProtocolError):
            pass  # the peer left, or an upstream broke HTTP: only this connection ends
        finally:
            open_count -= 1
            if per_source[source] > 1:
                per_source[source] -= 1
            else:
                del per_source[source]
            if on_count is not None:
                on_count(open_count)
            await conn.close()

    return await asyncio.start_server(
        accept, netaddr.listen_host(host), port, limit=limits.read_size
    )


def source_of(ip: str) -> str:
    """The key per-source limits count by: an IPv4 address, or an IPv6 address's /64
    (one host usually holds a whole /64); IPv4-mapped IPv6 counts as the IPv4 address."""
    if ":" not in ip:
        return ip
    try:
        address = ipaddress.IPv6Address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))
