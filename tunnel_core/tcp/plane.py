"""TCP mode's data plane: the server listens on the client's ports; the client dials.

Server: each client's hello lists public ports; each must be inside the allow-list
and not served by another client, then we listen on it. A connection from a source
outside ``--allow-ips`` is closed at accept (no stream is opened, so no byte of it
reaches a client). Every accepted connection opens a stream with metadata
``{"port": P, "remote": "IP:PORT", "local": "IP:PORT"}``: the public peer and the
server address it connected to (IPv6 in brackets, ``[::1]:8000``).

Client: a stream's ``port`` picks the upstream port (``--ports 8000,2222:22`` means
public 2222 goes to upstream 22); an upstream that refuses the connection resets only
that stream, so the public connection closes and the tunnel stays up. With
``--proxy-protocol v1|v2`` the client writes a PROXY header (from ``remote`` and
``local``) before any other byte on each upstream connection.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from tunnel_core import netaddr
from tunnel_core.errors import ConfigError, Refused, TunnelError
from tunnel_core.session import Session, Stream
from tunnel_core.splice import SpliceProtocol

from .proxy_protocol import VERSIONS, header as proxy_header

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

    def __init__(
        self,
        bind: str,
        allow: list[tuple[int, int]],
        allow_ips: tuple[netaddr.Network, ...] | None = None,
    ) -> None:
        self.bind = bind
        self.allow = allow
        #: Sources that may connect to the public ports; ``None``: everyone.
        self.allow_ips = allow_ips
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
                        lambda port=port: _Public(session, port, self.allow_ips),
                        netaddr.listen_host(self.bind),
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

    def __init__(
        self, session: Session, port: int, allow_ips: tuple[netaddr.Network, ...] | None = None
    ) -> None:
        super().__init__()
        self.session = session
        self.port = port
        self.allow_ips = allow_ips

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        remote = _address(peer)
        if not netaddr.allowed(remote[0] if remote else "", self.allow_ips):
            log.debug("port %d: refused %s (not in --allow-ips)", self.port, _text(remote))
            cast(asyncio.Transport, transport).abort()
            return
        try:
            stream = self.session.open_stream(
                {"port": self.port, "remote": _text(remote), "local": _text(_address(local))}
            )
        except TunnelError:  # the control connection went away meanwhile
            cast(asyncio.Transport, transport).abort()
            return
        self.stream = stream
        super().connection_made(transport)


def _address(name: object) -> tuple[str, int] | None:
    """(plain IP, port) of a socket name; an IPv4-mapped IPv6 address as IPv4."""
    if not isinstance(name, tuple) or len(name) < 2:
        return None
    ip = netaddr.plain_ip(str(name[0]))
    return (str(ip) if ip is not None else str(name[0])), int(name[1])


def _text(address: tuple[str, int] | None) -> str:
    return netaddr.host_port(*address) if address else ""


class _ProxiedUpstream(SpliceProtocol):
    """An upstream connection that starts with a PROXY protocol header."""

    def __init__(self, stream: Stream, header: bytes) -> None:
        super().__init__(stream)
        self.header = header

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.header)  # before any stream byte
        super().connection_made(transport)


class TcpUpstreams:
    """The client side: dial ``host:upstream_port`` for every stream the server opens.

    ``proxy_protocol`` (``"v1"``/``"v2"``) prefixes each upstream connection with a
    PROXY header naming the public client and the server's public address.
    """

    def __init__(self, host: str, ports: dict[int, int], proxy_protocol: str | None = None) -> None:
        if proxy_protocol is not None and proxy_protocol not in VERSIONS:
            raise ConfigError(f"--proxy-protocol must be v1 or v2, not {proxy_protocol!r}")
        self.host = host
        self.ports = ports
        self.proxy_protocol = proxy_protocol
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

    def _protocol(self, stream: Stream) -> SpliceProtocol:
        if self.proxy_protocol is None:
            return SpliceProtocol(stream)
        meta = stream.metadata
        remote, local = meta.get("remote"), meta.get("local")
        src = netaddr.split_host_port(remote) if isinstance(remote, str) else None
        dst = netaddr.split_host_port(local) if isinstance(local, str) else None
        return _ProxiedUpstream(stream, proxy_header(self.proxy_protocol, src, dst))

    async def _dial(self, stream: Stream, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self._protocol(stream), self.host, port)
        except OSError as exc:
            log.warning("upstream %s:%s unreachable: %s", self.host, port, exc.strerror or exc)
            stream.reset(f"upstream {self.host}:{port} unreachable")
