"""The server side of HTTP mode: public requests in, tunnel streams out.

Each public request is routed by its Host header to one tunnel client and
carried on a stream as plain HTTP/1.1, so the client side stays a dumb byte pipe
to its upstream; a stream only ever carries requests for one host. Both legs are parsed with h11
and bodies move as they arrive, in both directions, with backpressure: nothing
is buffered whole. Hop-by-hop headers (RFC 9110 section 7.6.1) never cross, the
X-Forwarded-* headers are set, and a WebSocket upgrade turns both legs into a raw
byte pipe once the upstream answered 101.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import h11

from tunnel_core.metrics import Metrics
from tunnel_core.splice import READ_SIZE, Duplex, StreamDuplex, splice

from .public import HttpError, Limits, PublicConnection, serve_requests
from .router import Router, normalize_host

__all__ = ["UPSTREAM_ERROR_HEADER", "HttpProxy", "OpenStream", "forwarded_request"]

#: Set by the tunnel client on the 502s it makes itself, stripped by the server.
UPSTREAM_ERROR_HEADER = b"x-tunnel-upstream-error"

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)


#: Request headers the proxy sets itself; whatever the public client sent is dropped.
_SET_HERE = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"expect"})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


#: End to end whatever Connection says: the fields that frame and route a message.
#: ``Connection: close, Host`` stripped Host (the client got 0 bytes) and
#: ``Connection: content-length`` the body; such tokens are ignored.
_NEVER_HOP_BY_HOP = frozenset({b"host", b"content-length", b"transfer-encoding"})


def _strip_hop_by_hop(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    named = {
        token.strip().lower()
        for key, value in headers
        if key == b"connection"
        for token in value.split(b",")
    } - _NEVER_HOP_BY_HOP
    return [(k, v) for k, v in headers if k not in _HOP_BY_HOP and k not in named]


def _is_websocket_upgrade(request: h11.Request) -> bool:
    upgrade = _header(list(request.headers), b"upgrade")
    connection = _header(list(request.headers), b"connection") or b""
    return (
        upgrade is not None
        and upgrade.strip().lower() == b"websocket"
        and b"upgrade" in [t.strip().lower() for t in connection.split(b",")]
    )


def _check_response_framing(response: h11.Response | h11.InformationalResponse) -> None:
    """Refuse a response head whose body length is ambiguous (RFC 9112 sections 6.1, 6.3).

    h11 refuses an invalid or conflicting Content-Length and codings other than
    ``chunked`` itself (a 502 as well). Both Transfer-Encoding and Content-Length, or
    Transfer-Encoding in an HTTP/1.0 response, are faulty framing that RFC 9112 says
    to handle as an error: forwarding the Content-Length with the re-chunked body
    truncated the response. We answer 502 rather than guess.
    """
    names = {name for name, _ in response.headers}
    if b"transfer-encoding" not in names:
        return
    if b"content-length" in names:
        raise _BadResponse("both Transfer-Encoding and Content-Length")
    if response.http_version == b"1.0":
        raise _BadResponse("Transfer-Encoding in an HTTP/1.0 response")


def forwarded_request(request: h11.Request, peer_ip: str, trusted: bool = False) -> h11.Request:
    """``request`` as the upstream gets it: hop-by-hop gone, X-Forwarded-* set.

    X-Forwarded-For appends the peer to the chain the client sent; X-Forwarded-Proto
    and X-Forwarded-Host are ours (the Host the request was routed by), unless the
    peer is a ``trusted`` front proxy (Caddy terminating HTTPS), whose values are kept.
    """
    original = list(request.headers)
    headers = _strip_hop_by_hop(original)
    chain = [v for k, v in original if k == b"x-forwarded-for" and v]
    headers = [(k, v) for k, v in headers if k not in _SET_HERE]
    headers.append((b"x-forwarded-for", b", ".join([*chain, peer_ip.encode()])))
    # Ours, never a public client's: a client could claim https or another host.
    proto = _header(original, b"x-forwarded-proto") if trusted else None
    headers.append((b"x-forwarded-proto", proto or b"http"))
    host = (_header(original, b"x-forwarded-host") if trusted else None) or _header(
        original, b"host"
    )
    if host is not None:
        headers.append((b"x-forwarded-host", host))
    if _header(original, b"transfer-encoding") is not None:
        # Never both (RFC 9112 section 6.3); the public side refused such requests already.
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers.append((b"transfer-encoding", b"chunked"))
    if _is_websocket_upgrade(request):
        headers += [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
    return h11.Request(
        method=request.method, target=request.target, headers=headers, http_version="1.1"
    )


def _public_fault(sender: asyncio.Future[bool]) -> HttpError | None:
    """The public client's error that ended the request body, if it did."""
    if not sender.done() or sender.cancelled():
        return None
    exc = sender.exception()
    return exc if isinstance(exc, HttpError) else None


class _UpstreamFailed(Exception):
    """The stream broke or answered garbage before a response head arrived."""


class _BadResponse(_UpstreamFailed):
    """The upstream broke HTTP (bad or ambiguous framing): never forwarded, never retried."""


class _StaleLeg(Exception):
    """A kept-alive leg was closed while idle; the request may go on a fresh one."""


@dataclass
class _Leg:
    """The tunnel side of a public connection: one stream to one client, for one host."""

    client: Hashable
    host: str
    stream: Duplex
    h11: h11.Connection


OpenStream = Callable[[Hashable], Awaitable[Duplex]]


@dataclass
class HttpProxy:
    """Serves public connections of the HTTP data port.

    ``open_stream(client)`` opens a tunnel stream to a client the router picked;
    it raises ConnectionError when that client is gone.
    """

    router: Router
    open_stream: OpenStream
    metrics: Metrics
    limits: Limits = Limits()
    response_timeout: float = 60.0
    _closing: set[asyncio.Future[None]] = field(default_factory=set, init=False, repr=False)

    async def handle(self, conn: PublicConnection) -> None:
        kept: list[_Leg] = []  # the previous request's leg, if it can carry the next one

        async def proxy(conn: PublicConnection, request: h11.Request) -> bool:
            return await self._proxy(conn, request, kept)

        try:
            await serve_requests(conn, proxy, self.metrics.count_request)
        finally:
            for leg in kept:
                await self._drop(leg)

    async def _open(self, client: Hashable, host: str) -> _Leg:
        try:
            stream = await self.open_stream(client)
        except ConnectionError:
            self.metrics.upstream_errors += 1
            raise HttpError(502, "the tunnel client went away") from None
        self.metrics.streams_open += 1
        return _Leg(client, host, stream, h11.Connection(h11.CLIENT))

    async def _drop(self, leg: _Leg) -> None:
        self.metrics.streams_open -= 1
        await leg.stream.close()

    async def _proxy(self, conn: PublicConnection, request: h11.Request, kept: list[_Leg]) -> bool:
        """Forward one request; ``False`` when the public connection must close.

        Keep-alive on the upstream leg: a request for the same host that the router
        sends to the same client reuses the previous request's stream, and so the
        client's upstream connection. If that idle leg turns out to be closed, a
        request without a body is retried once on a fresh one.
        """
        host = _header(list(request.headers), b"host")
        if host is None:
            raise HttpError(400, "a Host header is required")
        name = host.decode("latin-1")
        client = self.router.pick(name)
        if client is None:
            raise HttpError(503, f"no tunnel client serves host {name[:255]}")
        key = normalize_host(name)
        leg = kept.pop() if kept else None
        if leg is not None and (leg.client is not client or leg.host != key):
            await self._drop(leg)
            leg = None
        reused = leg is not None
        leg = leg or await self._open(client, key)
        keep = False
        try:
            try:
                keep = await self._exchange(conn, request, leg, retryable=reused)
            except _StaleLeg:
                await self._drop(leg)
                leg = await self._open(client, key)
                keep = await self._exchange(conn, request, leg, retryable=False, body_sent=True)
        finally:
            upstream = leg.h11
            if keep and upstream.our_state is h11.DONE and upstream.their_state is h11.DONE:
                upstream.start_next_cycle()
                kept.append(leg)
            else:
                await self._drop(leg)
        return keep

    async def _exchange(
        self,
        conn: PublicConnection,
        request: h11.Request,
        leg: _Leg,
        *,
        retryable: bool,
        body_sent: bool = False,
    ) -> bool:
        upstream, stream = leg.h11, leg.stream
        no_body = _header(list(request.headers), b"transfer-encoding") is None and _header(
            list(request.headers), b"content-length"
        ) in (None, b"0")
        try:
            trusted = conn.limits.trusts(conn.peer_ip)
            await stream.write(upstream.send(forwarded_request(request, conn.peer_ip, trusted)))
        except ConnectionError:
            if retryable and no_body:
                raise _StaleLeg() from None
            self.metrics.upstream_errors += 1
            raise HttpError(502, "the tunnel client went away") from None
        sender = asyncio.ensure_future(self._send_body(conn, upstream, stream, body_sent))
        sender.add_done_callback(lambda task: self._on_body_sent(task, stream))
        receiver = asyncio.ensure_future(
            asyncio.wait_for(self._response_head(upstream, stream), self.response_timeout)
        )
        try:
            await asyncio.wait((sender, receiver), return_when=asyncio.FIRST_COMPLETED)
            fault = _public_fault(sender)
            if fault is not None and (not receiver.done() or receiver.exception() is not None):
                raise fault  # 400/408 to the public client; the upstream saw no whole request
            try:
                head = await receiver
            except _BadResponse:
                self.metrics.upstream_errors += 1
                raise HttpError(502, "the upstream sent a malformed response") from None
            except (_UpstreamFailed, ConnectionError):
                if retryable and no_body:
                    await sender  # no body: it ends at once, leaving the public side ready
                    raise _StaleLeg() from None
                self.metrics.upstream_errors += 1
                raise HttpError(502, "the upstream did not answer") from None
            except asyncio.TimeoutError:
                self.metrics.upstream_errors += 1
                raise HttpError(502, "the upstream did not answer in time") from None
            if isinstance(head, h11.InformationalResponse):  # 101: now a raw pipe
                await conn.send(head)
                await self._pipe_upgraded(conn, upstream, stream, sender)
                return False
            await conn.send(head)
            intact = await self._response_body(conn, upstream, stream)
            if not intact:
                conn.abort()  # a reset, so no client takes a cut-off body for a whole one
        finally:
            for task in (sender, receiver):
                if not task.done():
                    task.cancel()
        return (
            intact
            and sender.done()
            and not sender.cancelled()
            and sender.exception() is None
            and sender.result()
        )

    def _on_body_sent(self, sender: asyncio.Future[bool], stream: Duplex) -> None:
        """A broken request body resets the leg at once, even mid-response, so the
        upstream sees an aborted request and an early response ends instead of
        stalling until the idle timeout."""
        if _public_fault(sender) is not None:
            closing = asyncio.ensure_future(stream.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _send_body(
        self, conn: PublicConnection, upstream: h11.Connection, stream: Duplex, body_sent: bool
    ) -> bool:
        """Copy the request body to the stream; ``True`` if it ended cleanly.

        Raises :class:`HttpError` when the public client broke the body (a bad chunk,
        too slow): the caller answers it, or resets the connection after a response head.

        ``body_sent``: a retry of a bodiless request whose end the public side
        already delivered; only the upstream leg still needs to hear it.
        """
        try:
            if body_sent:
                await stream.write(upstream.send(h11.EndOfMessage()))
                return True
            if conn.h11.they_are_waiting_for_100_continue:
                # We always want the body; answering here spares the client its wait.
                await conn.send(h11.InformationalResponse(status_code=100, headers=[]))
            while True:
                event = await conn.next_body_event()
                if isinstance(event, h11.Data):
                    self.metrics.bytes_in += len(event.data)
                await stream.write(upstream.send(event))
                if isinstance(event, h11.EndOfMessage):
                    return True
        except (ConnectionError, OSError, h11.LocalProtocolError):
            return False

    async def _receive(self, upstream: h11.Connection, stream: Duplex) -> h11.Event:
        closed = False
        while True:
            try:
                event = upstream.next_event()
            except h11.RemoteProtocolError as exc:
                if closed:  # it went away (perhaps a kept-alive leg closed while idle)
                    raise _UpstreamFailed(str(exc)) from exc
                raise _BadResponse(str(exc)) from exc
            if event is h11.NEED_DATA:
                data = await stream.read(READ_SIZE)
                closed = not data
                upstream.receive_data(data)
            elif isinstance(event, h11.Event):
                return event
            else:
                raise _UpstreamFailed("the upstream sent more than one response")

    async def _response_head(
        self, upstream: h11.Connection, stream: Duplex
    ) -> h11.Response | h11.InformationalResponse:
        while True:
            event = await self._receive(upstream, stream)
            if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                continue  # 100 Continue and friends: our public leg has no use for them
            if isinstance(event, h11.Response | h11.InformationalResponse):
                break
            raise _UpstreamFailed(f"unexpected {type(event).__name__}")
        original = list(event.headers)
        _check_response_framing(event)
        if event.status_code == 101:
            return h11.InformationalResponse(status_code=101, headers=original)
        headers = [(k, v) for k, v in _strip_hop_by_hop(original) if k != UPSTREAM_ERROR_HEADER]
        if _header(original, UPSTREAM_ERROR_HEADER) is not None:
            self.metrics.upstream_errors += 1
        self.metrics.count_request(event.status_code)
        return h11.Response(status_code=event.status_code, headers=headers, reason=event.reason)

    async def _response_body(
        self, conn: PublicConnection, upstream: h11.Connection, stream: Duplex
    ) -> bool:
        """Copy the response body to the public side; ``True`` if it ended cleanly."""
        while True:
            try:
                event = await asyncio.wait_for(
                    self._receive(upstream, stream), self.limits.idle_timeout
                )
            except (_UpstreamFailed, ConnectionError, asyncio.TimeoutError):
                self.metrics.upstream_errors += 1
                return False
            if isinstance(event, h11.Data):
                self.metrics.bytes_out += len(event.data)
                await conn.send(event)
            elif isinstance(event, h11.EndOfMessage):
                await conn.send(h11.EndOfMessage())
                return True
            else:
                self.metrics.upstream_errors += 1
                return False

    async def _pipe_upgraded(
        self,
        conn: PublicConnection,
        upstream: h11.Connection,
        stream: Duplex,
        sender: asyncio.Future[bool],
    ) -> None:
        await sender  # an upgrade request has no body, so this ends at once
        public_rest = bytes(conn.h11.trailing_data[0])
        upstream_rest = bytes(upstream.trailing_data[0])
        public = StreamDuplex(conn.reader, conn.writer)
        if public_rest:
            self.metrics.bytes_in += len(public_rest)
            await stream.write(public_rest)
        if upstream_rest:
            self.metrics.bytes_out += len(upstream_rest)
            await public.write(upstream_rest)

        def count_in(n: int) -> None:
            self.metrics.bytes_in += n

        def count_out(n: int) -> None:
            self.metrics.bytes_out += n

        await splice(public, stream, count_in, count_out)
