"""The control plane of the server: TLS listener, /healthz, token check, upgrade, hello.

Mode-specific work lives in a :class:`DataPlane` (TCP listeners, an HTTP Host router):
the control plane hands it each authenticated client's hello and session, and the
data plane opens streams on that session with :meth:`Session.open_stream`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import h11

from . import netaddr
from .errors import Refused, TunnelError
from .protocol import ws
from .protocol.mux import Event, GoAway, Hello, Role
from .session import SERVER_LIMITS, Session, SessionLimits, Stream, set_keepalive

log = logging.getLogger("tunnel_core")
PROTOCOL_VERSION = 1
#: Longest ``client_id`` a hello may carry.
MAX_CLIENT_ID = 128


class DataPlane(Protocol):
    """What a tunnel mode provides to the control plane."""

    mode: str

    async def register(self, session: Session, hello: dict[str, Any]) -> dict[str, Any]:
        """Start serving what ``hello`` asks for; return extra WELCOME fields or raise Refused."""
        ...

    def unregister(self, session: Session) -> None:
        """The client is gone: stop serving its ports/hosts."""
        ...

    def on_stream(self, session: Session, stream: Stream) -> None:
        """The client opened a stream (reset it if the mode has no use for that)."""
        ...

    def health(self) -> dict[str, Any]:
        """Extra, secret-free fields for /healthz."""
        ...

    async def close(self) -> None: ...


@dataclass
class ServerConfig:
    token: str
    ssl_context: ssl.SSLContext
    bind: str = "0.0.0.0"
    control_port: int = 8123
    handshake_timeout: float = 10.0
    initial_window: int | None = None
    #: Per-session limits (rates, what a client may make us buffer); see SessionLimits.
    limits: SessionLimits = SERVER_LIMITS
    #: Ping every client this often (seconds); TCP keepalive probes at the same pace.
    keepalive: float = 15.0
    #: Drop a client we heard nothing from (not even a PONG) for this long: its host may
    #: have vanished without a FIN, and it still holds its ports. 3 pings by default.
    keepalive_timeout: float = 45.0
    #: Extra GET routes on the control port (path -> JSON body factory), e.g. for status.
    routes: dict[str, Any] = field(default_factory=dict)
    #: GET routes behind the token (path -> () -> (body, content type)), e.g. /metrics.
    authorized_routes: dict[str, Callable[[], tuple[str, str]]] = field(default_factory=dict)


class TunnelServer:
    """Accepts clients on the control port and connects them to a data plane."""

    def __init__(self, config: ServerConfig, plane: DataPlane) -> None:
        self.config = config
        self.plane = plane
        self.sessions: set[Session] = set()
        #: Registered sessions by the ``client_id`` of their hello (when they sent one).
        self._by_id: dict[str, Session] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Handshake(self),
                netaddr.listen_host(self.config.bind),  # '::': IPv6 and IPv4
                self.config.control_port,
                ssl=self.config.ssl_context,
                ssl_handshake_timeout=self.config.handshake_timeout,
                reuse_address=True,
            )
        except OSError as exc:
            raise TunnelError(
                f"cannot listen on {self.config.bind}:{self.config.control_port}: "
                f"{exc.strerror or exc}",
                "pick another --control-port or stop what is using it",
            ) from exc

    async def close(self) -> None:
        """Stop accepting, say goodbye to every client, stop the data plane."""
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.close("server shutting down", 1001)
        await self.plane.close()
        for task in list(self._tasks):
            task.cancel()
        if self.sessions:
            await asyncio.wait([s.closed for s in self.sessions], timeout=2)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "mode": self.plane.mode, "clients": len(self.sessions)} | (
            self.plane.health()
        )

    def check_token(self, header: bytes | None) -> bool:
        expected = b"Bearer " + self.config.token.encode()
        return header is not None and hmac.compare_digest(header, expected)

    def upgraded(self, session: Session) -> None:
        """Wire a fresh session (synchronously: its first bytes may already be here)."""
        hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def on_event(event: Event) -> None:
            if isinstance(event, Hello) and not hello.done():
                hello.set_result(event.info)
            elif isinstance(event, GoAway):
                session.close_reason = event.reason

        session._on_event = on_event
        session._on_stream = lambda stream: self.plane.on_stream(session, stream)
        task = asyncio.get_running_loop().create_task(self._serve(session, hello))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, session: Session, hello: asyncio.Future[dict[str, Any]]) -> None:
        await asyncio.wait(
            (hello, session.closed),
            timeout=self.config.handshake_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not hello.done():
            session.close("no hello", 1002)
            return
        info = hello.result()
        try:
            if info.get("mode") != self.plane.mode:
                raise Refused(
                    f"this server runs {self.plane.mode} mode, the client asked for "
                    f"{info.get('mode')!r}"
                )
            client_id = info.get("client_id")
            if client_id is not None and not (
                isinstance(client_id, str) and 0 < len(client_id) <= MAX_CLIENT_ID
            ):
                raise Refused(f"the hello's client_id must be a string of 1-{MAX_CLIENT_ID}")
            if client_id is not None:
                self._take_over(client_id, session)
            extra = await self.plane.register(session, info)
        except Refused as exc:
            log.warning("refused %s: %s", session.peer, exc)
            session.mux.send_welcome({"ok": False, "error": exc.message, "retry": exc.retry})
            session.close("refused", 1008)
            return
        self.sessions.add(session)
        if client_id is not None:
            self._by_id[client_id] = session
        session.mux.send_welcome({"ok": True, "version": PROTOCOL_VERSION} | extra)
        session.schedule_flush()
        log.info("client %s connected (%s)", session.peer, _describe(info))
        pinging = asyncio.ensure_future(self._keepalive(session))
        try:
            await session.closed
        finally:
            pinging.cancel()
            if session in self.sessions:  # else a newer connection replaced it already
                self._unregister(session)
            log.info("client %s disconnected %s", session.peer, session.close_reason)

    def _unregister(self, session: Session) -> None:
        self.sessions.discard(session)
        for client_id in [k for k, v in self._by_id.items() if v is session]:
            del self._by_id[client_id]
        self.plane.unregister(session)

    def _take_over(self, client_id: str, session: Session) -> None:
        """A client that reconnects (same ``client_id``) replaces its old connection at
        once: the old one is presumed dead (its host vanished without a FIN, or the path
        broke), and waiting for the keepalive to notice would keep its ports taken."""
        old = self._by_id.get(client_id)
        if old is None or old is session:
            return
        self._unregister(old)
        old.drop(f"replaced by a new connection of the same client from {session.peer}")

    async def _keepalive(self, session: Session) -> None:
        """Ping the client; drop it once nothing came from it for ``keepalive_timeout``."""
        loop = asyncio.get_running_loop()
        interval, timeout = self.config.keepalive, self.config.keepalive_timeout
        while not session.closed.done():
            silent = loop.time() - session.last_received
            if silent >= timeout:
                session.drop(f"nothing received for {silent:.0f}s (keepalive_timeout)")
                return
            if silent >= interval:
                session.mux.ping()
                session.schedule_flush()
            await asyncio.wait((session.closed,), timeout=min(interval, timeout - silent))


def _describe(info: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in info.items() if k in ("mode", "ports", "hosts"))


class _Handshake(asyncio.Protocol):
    """HTTP/1.1 on the control port until the WebSocket upgrade (or one plain answer)."""

    def __init__(self, server: TunnelServer) -> None:
        self.server = server
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; the interface is the same.
        self.transport = tr = cast(asyncio.Transport, transport)
        peer = tr.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        config = self.server.config
        set_keepalive(tr, config.keepalive, config.keepalive_timeout)
        self._timer = asyncio.get_running_loop().call_later(
            self.server.config.handshake_timeout, tr.abort
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # answered already; ignore whatever else the peer sends
        self.conn.receive_data(data)
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError:
            self._answer(400, {"error": "bad request"})
            return
        if event is h11.NEED_DATA:
            return
        if not isinstance(event, h11.Request):
            self._answer(400, {"error": "bad request"})
            return
        self._route(event)

    def _route(self, request: h11.Request) -> None:
        headers = {k.lower(): v for k, v in request.headers}
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        if request.method != b"GET":
            self._answer(405, {"error": "method not allowed"})
        elif path == "/healthz":
            self._answer(200, self.server.health())
        elif path == "/readyz":  # for load balancers: a server without a client serves nothing
            health = self.server.health()
            self._answer(200 if health["clients"] else 503, health)
        elif path in self.server.config.routes:
            self._answer(200, self.server.config.routes[path]())
        elif path in self.server.config.authorized_routes:
            if self.server.check_token(headers.get(b"authorization")):
                body, content_type = self.server.config.authorized_routes[path]()
                self._send(200, body.encode(), content_type)
            else:
                self._answer(401, {"error": "unauthorized"})
        elif path != "/connect":
            self._answer(404, {"error": "not found"})
        elif not self.server.check_token(headers.get(b"authorization")):
            log.warning("rejected %s: missing or wrong token", self.peer)
            self._answer(401, {"error": "unauthorized"})
        elif headers.get(b"upgrade", b"").lower() != b"websocket" or b"sec-websocket-key" not in (
            headers
        ):
            self._answer(426, {"error": "upgrade to websocket required"})
        else:
            self._upgrade(headers[b"sec-websocket-key"].decode("latin-1"))

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        assert self.transport is not None
        out = self.conn.send(
            h11.Response(
                status_code=status,
                headers=[
                    ("content-type", content_type),
                    ("content-length", str(len(payload))),
                    ("connection", "close"),
                ],
            )
        )
        out = (out or b"") + (self.conn.send(h11.Data(data=payload)) or b"")
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.transport.write(out)
        self.transport.close()

    def _upgrade(self, key: str) -> None:
        assert self.transport is not None
        if self._timer is not None:
            self._timer.cancel()
        out = self.conn.send(
            h11.InformationalResponse(
                status_code=101,
                headers=[
                    ("upgrade", "websocket"),
                    ("connection", "Upgrade"),
                    ("sec-websocket-accept", ws.accept_key(key)),
                    ws.ZERO_KEY_HEADER,
                ],
            )
        )
        self.transport.write(out or b"")
        leftover = self.conn.trailing_data[0]
        session = Session(
            Role.SERVER,
            self.transport,
            on_stream=lambda stream: stream.reset("not ready"),
            on_event=lambda event: None,
            initial_window=self.server.config.initial_window,
            peer=self.peer,
            limits=self.server.config.limits,
        )
        self.transport.set_protocol(session)
        self.server.upgraded(session)
        if leftover:
            session.data_received(bytes(leftover))
