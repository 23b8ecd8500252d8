"""HTTP mode's data plane on the server, and its client-side counterpart.

The server plane owns the public data port: clients register the hosts they
serve (their hello's ``hosts``; ``null`` means "any host"), the router picks one
per request, and the request travels on a stream the server opens on that
client's session. The client plane answers each such stream by dialing its
upstream for the request's Host.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any

from tunnel_core.errors import Refused, TunnelError
from tunnel_core.metrics import CONTENT_TYPE, Metrics
from tunnel_core.session import Session, Stream
from tunnel_core.splice import Duplex, TunnelDuplex

from .proxy import HttpProxy
from .public import HttpError, Limits, PublicConnection, start_public_server
from .router import Router
from .upstream import Upstreams, serve_http_stream

__all__ = ["HttpClientPlane", "HttpServerPlane"]

log = logging.getLogger("tunnel_core")


class HttpServerPlane:
    """The public data port of ``tunnel-core http server``."""

    mode = "http"

    def __init__(self, bind: str, port: int, token: str, limits: Limits | None = None) -> None:
        self.bind = bind
        self.port = port
        self.token = token
        self.limits = limits = limits or Limits()
        self.router = Router()
        self.metrics = Metrics(mode="http")
        self.started = time.monotonic()
        self._since: dict[Session, float] = {}
        self._servers: list[asyncio.Server] = []
        self.proxy = HttpProxy(self.router, self._open_stream, self.metrics, limits)

    async def start(self, metrics_port: int | None = None) -> None:
        def count(n: int) -> None:
            self.metrics.connections_open = n

        public = await start_public_server(
            self.proxy.handle, self.bind, self.port, self.limits, count
        )
        self._servers.append(public)
        self.port = int(public.sockets[0].getsockname()[1])
        if metrics_port is not None:
            scrape = await start_public_server(
                self._serve_metrics, self.bind, metrics_port, Limits()
            )
            self._servers.append(scrape)

    async def _open_stream(self, client: object) -> Duplex:
        assert isinstance(client, Session)
        try:
            return TunnelDuplex(client.open_stream({"http": 1}))
        except TunnelError as exc:
            raise ConnectionResetError(exc.message) from exc

    async def register(self, session: Session, hello: dict[str, Any]) -> dict[str, Any]:
        hosts = hello.get("hosts")
        if not isinstance(hosts, list) or not hosts:
            raise Refused("the hello lists no hosts (give the client at least one --upstream)")
        if not all(h is None or (isinstance(h, str) and 0 < len(h) < 256) for h in hosts):
            raise Refused("the hello's hosts must be host names or null (the default)")
        self.router.register(session, hosts)
        self._since[session] = time.monotonic()
        self.metrics.clients_connected = len(self.router)
        return {"hosts": hosts}

    def unregister(self, session: Session) -> None:
        self.router.unregister(session)
        self._since.pop(session, None)
        self.metrics.clients_connected = len(self.router)

    def on_stream(self, session: Session, stream: Stream) -> None:
        stream.reset("HTTP mode servers do not accept streams from clients")

    def health(self) -> dict[str, Any]:
        return {}

    def status(self) -> dict[str, Any]:
        """What ``tunnel-core status`` shows; behind the token (it names client addresses)."""
        now = time.monotonic()
        return {
            "mode": self.mode,
            "uptime_seconds": round(now - self.started, 1),
            "clients": [
                {
                    "peer": session.peer,
                    "hosts": ["*" if h is None else h for h in self.router.hosts_of(session)],
                    "connected_seconds": round(now - since, 1),
                }
                for session, since in self._since.items()
            ],
        }

    def authorized(self, header: bytes | None) -> bool:
        expected = b"Bearer " + self.token.encode()
        return header is not None and hmac.compare_digest(header, expected)

    async def _serve_metrics(self, conn: PublicConnection) -> None:
        """``GET /metrics`` on ``--metrics-port``, behind the same Bearer token."""
        try:
            request = await conn.next_request()
            if request is None:
                return
            auth = dict(request.headers).get(b"authorization")
            if request.target.split(b"?")[0] != b"/metrics":
                raise HttpError(404, "not found")
            if not self.authorized(auth):
                raise HttpError(401, "send the token as Authorization: Bearer TOKEN")
            body = self.metrics.render().encode()
            conn.writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: " + CONTENT_TYPE.encode()
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await conn.writer.drain()
        except HttpError as error:
            await conn.refuse(error)

    async def close(self) -> None:
        for server in self._servers:
            server.close()


class HttpClientPlane:
    """``tunnel-core http client``: serves the streams the server opens."""

    def __init__(self, upstreams: Upstreams, connect_timeout: float = 10.0) -> None:
        self.upstreams = upstreams
        self.connect_timeout = connect_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    def hello(self) -> dict[str, Any]:
        return {"mode": "http", "hosts": self.upstreams.hosts}

    def on_stream(self, stream: Stream) -> None:
        duplex = TunnelDuplex(stream)
        task = asyncio.get_running_loop().create_task(
            serve_http_stream(duplex, self.upstreams, self.connect_timeout)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
