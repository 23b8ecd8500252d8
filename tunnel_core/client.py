"""The client's control plane: connect, pin, authenticate, register, reconnect.

Order matters for security: TLS handshake, then the certificate pin is checked, and
only then is the upgrade request (carrying the token) written.

Refusals: a server that refuses our ports because they are outside its allow-list
will refuse them again, so that ends the client (exit 1, the server's message on
stderr); a port taken by another client may be freed, so that is retried with
backoff, printing the message each time. A wrong token or pin also ends the client.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast
from urllib.parse import urlsplit

import h11

from . import netaddr, tls
from .errors import (
    AuthRejected,
    ConfigError,
    ConnectError,
    FingerprintMismatch,
    ProtocolError,
    Refused,
)
from .protocol import ws
from .protocol.mux import Event, GoAway, Role, Welcome
from .session import Session, SessionLimits, Stream, set_keepalive

log = logging.getLogger("tunnel_core")


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with "equal jitter": half fixed, half random."""

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        base = min(self.cap, self.initial * self.factor ** min(attempt, 64))
        return base / 2 + base / 2 * self.jitter()


@dataclass
class ClientConfig:
    url: str
    token: str
    hello: dict[str, Any]
    fingerprint: str | None = None  # None only with insecure=True
    insecure: bool = False
    connect_timeout: float = 10.0
    #: Ping this often; a connection silent for three intervals is dead (no FIN came).
    keepalive: float = 25.0
    backoff: Backoff = field(default_factory=Backoff)
    initial_window: int | None = None
    #: What the server may make us buffer; no rate limits (the server opens the streams).
    limits: SessionLimits = field(default_factory=SessionLimits)
    #: Sent in every hello; a connection with the same id replaces an older one on the
    #: server at once (the old one may be dead without the server knowing yet). Random
    #: per process by default; give a replacement client the same id to take over.
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("wss", "https") or not parts.hostname:
            raise ConfigError(
                f"--url {self.url!r} is not a wss:// URL", "use wss://HOST:8123 (the control port)"
            )
        if self.fingerprint is None and not self.insecure:
            raise ConfigError(
                "the server's certificate must be pinned",
                "pass --tls-fingerprint sha256:... as printed by the server (or --insecure)",
            )

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8123


async def connect(
    config: ClientConfig,
    on_stream: Callable[[Stream], None],
    on_event: Callable[[Event], None] = lambda event: None,
) -> tuple[Session, dict[str, Any]]:
    """One attempt: returns the registered session and the server's WELCOME fields."""
    loop = asyncio.get_running_loop()
    upgraded: asyncio.Future[Session] = loop.create_future()
    try:
        await asyncio.wait_for(
            loop.create_connection(
                lambda: _Handshake(config, upgraded, on_stream, on_event),
                config.host,
                config.port,
                ssl=tls.client_context(),
                server_hostname=config.host,
                ssl_handshake_timeout=config.connect_timeout,
            ),
            config.connect_timeout,
        )
        session = await asyncio.wait_for(upgraded, config.connect_timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        if upgraded.done() and not upgraded.cancelled():
            upgraded.exception()  # already reported through exc
        raise ConnectError(f"cannot connect to {config.url}: {exc or 'timed out'}") from exc
    welcome: asyncio.Future[dict[str, Any]] = loop.create_future()

    def events(event: Event) -> None:
        if isinstance(event, Welcome) and not welcome.done():
            welcome.set_result(event.info)
        elif isinstance(event, GoAway):
            session.close_reason = event.reason
        on_event(event)

    session._on_event = events
    if session.transport.is_closing():  # dropped on its first bytes already
        raise ConnectError(f"{config.url} broke the protocol: {session.close_reason}")
    session.mux.send_hello({"client_id": config.client_id} | config.hello)
    session.schedule_flush()
    await asyncio.wait(
        (welcome, session.closed),
        timeout=config.connect_timeout,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if not welcome.done():
        session.close("no welcome")
        raise ConnectError(f"{config.url} did not answer the hello")
    info = welcome.result()
    if info.get("ok") is not True:  # the mux made sure "ok" is a bool
        session.close("refused")
        raise Refused(
            f"the server refused: {info.get('error', 'no reason given')}",
            retry=bool(info.get("retry")),
        )
    return session, info


class _Handshake(asyncio.Protocol):
    def __init__(
        self,
        config: ClientConfig,
        upgraded: asyncio.Future[Session],
        on_stream: Callable[[Stream], None],
        on_event: Callable[[Event], None],
    ) -> None:
        self.config = config
        self.upgraded = upgraded
        self.on_stream = on_stream
        self.on_event = on_event
        self.conn = h11.Connection(h11.CLIENT)
        self.key = ws.new_key()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; the interface is the same.
        self.transport = tr = cast(asyncio.Transport, transport)
        set_keepalive(tr, self.config.keepalive, 3 * self.config.keepalive)
        if self.config.fingerprint is not None:
            der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            try:
                tls.check_pin(der, self.config.fingerprint)
            except FingerprintMismatch as exc:
                self._fail(exc)
                return
        host = netaddr.host_port(self.config.host, self.config.port)  # [::1]:8123
        request = h11.Request(
            method="GET",
            target="/connect",
            headers=[
                ("host", host),
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-key", self.key),
                ("sec-websocket-version", "13"),
                ("authorization", f"Bearer {self.config.token}"),
                ("user-agent", "tunnel-core"),
            ],
        )
        tr.write(self.conn.send(request) or b"")

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        try:
            event = self.conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._fail(ConnectError(f"bad HTTP answer from {self.config.url}: {exc}"))
            return
        if event is h11.NEED_DATA:
            return
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            headers = {k.lower(): v for k, v in event.headers}
            # Compared as bytes: a header value need not be UTF-8 (h11 allows obs-text).
            if headers.get(b"sec-websocket-accept") != ws.accept_key(self.key).encode():
                self._fail(ProtocolError("the server's WebSocket accept key is wrong"))
                return
            name, value = ws.ZERO_KEY_HEADER
            self._switch(zero_key=headers.get(name.encode()) == value.encode())
        elif isinstance(event, h11.Response) and event.status_code == 401:
            self._fail(AuthRejected(f"{self.config.url} rejected the token (HTTP 401)"))
        elif isinstance(event, h11.Response | h11.InformationalResponse):
            self._fail(ConnectError(f"{self.config.url} answered HTTP {event.status_code}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectError(f"{self.config.url} closed the connection"))

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        assert self.transport is not None
        self.transport.abort()

    def _switch(self, zero_key: bool) -> None:
        assert self.transport is not None
        leftover = self.conn.trailing_data[0]
        session = Session(
            Role.CLIENT,
            self.transport,
            on_stream=self.on_stream,
            on_event=self.on_event,
            initial_window=self.config.initial_window,
            peer=self.config.url,
            limits=self.config.limits,
            zero_key=zero_key,
        )
        self.transport.set_protocol(session)
        self.upgraded.set_result(session)
        if leftover:
            session.data_received(bytes(leftover))


async def run_client(
    config: ClientConfig,
    on_stream: Callable[[Stream], None],
    stop: asyncio.Event,
    on_connected: Callable[[dict[str, Any]], None] = lambda info: None,
) -> None:
    """Stay connected until ``stop`` is set; raises only errors that retrying cannot fix."""
    attempt = 0
    while not stop.is_set():
        try:
            session, info = await connect(config, on_stream)
        except Refused as exc:
            if not exc.retry:
                raise
            log.warning("%s", exc)
        except (ConnectError, ProtocolError) as exc:
            log.warning("%s", exc)
        else:
            attempt = 0
            on_connected(info)
            stopping = asyncio.ensure_future(stop.wait())
            pinging = asyncio.ensure_future(_keepalive(session, config.keepalive))
            await asyncio.wait((session.closed, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            pinging.cancel()
            if stop.is_set():
                session.close("client shutting down", 1001)
                await asyncio.wait((session.closed,), timeout=2)
                return
            log.warning("connection to %s lost %s", config.url, session.close_reason)
        delay = config.backoff.delay(attempt)
        attempt += 1
        log.info("reconnecting in %.1fs", delay)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except asyncio.TimeoutError:
            pass


async def run_clients(
    configs: list[ClientConfig],
    on_stream: Callable[[Stream], None],
    stop: asyncio.Event,
    on_connected: Callable[[ClientConfig, dict[str, Any]], None] = lambda config, info: None,
) -> None:
    """:func:`run_client` to every server at once (``--url`` given more than once).

    Each server gets a session of its own and reconnects on its own, so a public
    request reaching any of them (behind a load balancer) finds this client. An error
    that retrying cannot fix at one server ends them all: the same token and pin are
    sent to every one, so it would recur.
    """
    everyone = asyncio.Event()
    failed: list[BaseException] = []

    async def one(config: ClientConfig) -> None:
        try:
            await run_client(config, on_stream, everyone, partial(on_connected, config))
        except Exception as exc:
            failed.append(exc)
            everyone.set()

    relay = asyncio.ensure_future(_relay(stop, everyone))
    try:
        await asyncio.gather(*(one(config) for config in configs))
    finally:
        relay.cancel()
    if failed:
        raise failed[0]


async def _relay(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()


async def _keepalive(session: Session, interval: float) -> None:
    loop = asyncio.get_running_loop()
    while not session.closed.done():
        await asyncio.wait((session.closed,), timeout=interval)
        if session.closed.done():
            return
        if loop.time() - session.last_received > 3 * interval:
            session.close_reason = f"no answer for {3 * interval:.0f}s"
            session.transport.abort()
            return
        session.mux.ping()
        session.schedule_flush()
