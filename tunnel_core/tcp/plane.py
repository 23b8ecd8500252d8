"""TCP mode's data plane: the server listens on the client's ports; the client dials.

Server: each client's hello lists public ports; each must be inside the allow-list
and not served by another client, then we listen on it. Every accepted connection
opens a stream with metadata ``{"port": P, "remote": "IP:PORT"}``.

Client: a stream's ``port`` picks the upstream port (``--ports 8000,2222:22`` means
public 2222 goes to upstream 22); an upstream that refuses the connection resets only
that stream, so the public connection closes and the tunnel stays up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from tunnel_core.errors import ConfigError, Refused, TunnelError
from tunnel_core.session import Session, Stream
from tunnel_core.splice import SpliceProtocol

log = logging.getLogger("tunnel_core")


def parse_port_ranges(text: str) -> list[tuple[int, int]]:
    """``1024-65535,80`` -> [(1024, 65535), (80, 80)]."""
    ranges: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ConfigError(f"--allow-ports: {part!r} is not a port or a range") from None
        if not 1 <= first <= last <= 65535:
            raise ConfigError(f"--allow-ports: {part!r} is outside 1-65535 or reversed")
        ranges.append((first, last))
    if not ranges:
        raise ConfigError("--allow-ports is empty", "for example --allow-ports 1024-65535")
    return ranges


def parse_port_map(text: str) -> dict[int, int]:
    """``8000,2222:22`` -> {8000: 8000, 2222: 22} (public port -> upstream port)."""
    mapping: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        public, _, upstream = part.partition(":")
        try:
            pub, up = int(public), int(upstream or public)
        except ValueError:
            raise ConfigError(
                f"--ports: {part!r} is not PORT or PUBLIC:UPSTREAM", "e.g. --ports 8000,2222:22"
            ) from None
        if not (1 <= pub <= 65535 and 1 <= up <= 65535):
            raise ConfigError(f"--ports: {part!r} is outside 1-65535")
        if pub in mapping:
            raise ConfigError(f"--ports: public port {pub} given twice")
        mapping[pub] = up
    if not mapping:
        raise ConfigError("--ports is empty", "e.g. --ports 8000,2222:22")
    return mapping


class TcpServerPlane:
    mode = "tcp"

    def __init__(self, bind: str, allow: list[tuple[int, int]]) -> None:
        self.bind = bind
        self.allow = allow
        self._owners: dict[int, Session] = {}
        self._listeners: dict[Session, list[asyncio.Server]] = {}

    def allowed(self, port: int) -> bool:
        return any(low <= port <= high for low, high in self.allow)

    async def register(self, session: Session, hello: dict[str, Any]) -> dict[str, Any]:
        ports = hello.get("ports")
        if not isinstance(ports, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) for p in ports
        ):
            raise Refused("the hello has no list of ports")
        allow = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in self.allow)
        outside = [p for p in ports if not self.allowed(p)]
        if outside:
            raise Refused(f"port(s) {_ports(outside)} outside the server's allow-list {allow}")
        taken = [p for p in ports if p in self._owners]
        if taken:
            raise Refused(f"port(s) {_ports(taken)} already served by another client", retry=True)
        loop = asyncio.get_running_loop()
        servers: list[asyncio.Server] = []
        for port in ports:
            try:
                servers.append(
                    await loop.create_server(
                        lambda port=port: _Public(session, port),  # type: ignore[misc]
                        self.bind,
                        port,
                        reuse_address=True,
                    )
                )
            except OSError as exc:
                for server in servers:
                    server.close()
                raise Refused(
                    f"the server cannot listen on {self.bind}:{port}: {exc.strerror}", retry=True
                ) from exc
        for port in ports:
            self._owners[port] = session
        self._listeners[session] = servers
        log.info("listening on %s for %s", _ports(ports), session.peer)
        return {"ports": ports}

    def unregister(self, session: Session) -> None:
        for server in self._listeners.pop(session, []):
            server.close()
        for port in [p for p, s in self._owners.items() if s is session]:
            del self._owners[port]

    def on_stream(self, session: Session, stream: Stream) -> None:
        stream.reset("TCP mode servers do not accept streams from clients")

    def health(self) -> dict[str, Any]:
        return {"ports": sorted(self._owners)}

    async def close(self) -> None:
        for session in list(self._listeners):
            self.unregister(session)


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, ports))


class _Public(SpliceProtocol):
    """A connection to a public port: opens a stream to the client that owns the port."""

    def __init__(self, session: Session, port: int) -> None:
        super().__init__()
        self.session = session
        self.port = port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        try:
            stream = self.session.open_stream(
                {"port": self.port, "remote": f"{peer[0]}:{peer[1]}" if peer else ""}
            )
        except TunnelError:  # the control connection went away meanwhile
            cast(asyncio.Transport, transport).abort()
            return
        self.stream = stream
        super().connection_made(transport)


class TcpUpstreams:
    """The client side: dial ``host:upstream_port`` for every stream the server opens."""

    def __init__(self, host: str, ports: dict[int, int]) -> None:
        self.host = host
        self.ports = ports
        self._tasks: set[asyncio.Task[None]] = set()

    def hello(self) -> dict[str, Any]:
        return {"mode": "tcp", "ports": sorted(self.ports)}

    def on_stream(self, stream: Stream) -> None:
        port = stream.metadata.get("port")
        upstream = self.ports.get(port) if isinstance(port, int) else None
        if upstream is None:
            stream.reset(f"this client does not serve port {port}")
            return
        task = asyncio.get_running_loop().create_task(self._dial(stream, upstream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dial(self, stream: Stream, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: SpliceProtocol(stream), self.host, port)
        except OSError as exc:
            log.warning("upstream %s:%s unreachable: %s", self.host, port, exc.strerror or exc)
            stream.reset(f"upstream {self.host}:{port} unreachable")
