"""Public ports a client asks for, shared by TCP and UDP mode.

A client's hello lists public ports; each must be inside the server's allow-list
(``--allow-ports``) and not served by another client, then the mode listens on it.
The first client to ask owns a port until its session ends; a second one is refused
with ``retry`` (the port may be freed, and a client killed with -9 is replaced at
once when its successor sends the same client id). :class:`PortPlane` is that
bookkeeping; a mode says only how to listen on one port.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from . import netaddr
from .errors import ConfigError, Refused
from .session import Session, Stream

__all__ = [
    "Listener",
    "PortPlane",
    "PortUpstreams",
    "address_text",
    "parse_port_map",
    "parse_port_ranges",
]

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


def address_text(name: object) -> str:
    """``IP:PORT`` of a socket name (IPv6 in brackets, IPv4-mapped as IPv4); "" if none."""
    if not isinstance(name, tuple) or len(name) < 2:
        return ""
    if ":" not in name[0]:  # IPv4 as the kernel wrote it: already plain (once per connection)
        return f"{name[0]}:{name[1]}"
    ip = netaddr.plain_ip(str(name[0]))
    return netaddr.host_port(str(ip) if ip is not None else str(name[0]), int(name[1]))


class Listener(Protocol):
    """What a mode listens with on one public port (an ``asyncio.Server``, a UDP port)."""

    def close(self) -> None: ...


class PortPlane:
    """The server's data plane of a port-forwarding mode, but for how it listens."""

    #: the mode's name, set by each subclass
    mode: str

    def __init__(
        self,
        bind: str,
        allow: list[tuple[int, int]],
        allow_ips: tuple[netaddr.Network, ...] | None = None,
    ) -> None:
        self.bind = bind
        self.allow = allow
        #: Sources that may reach the public ports; ``None``: everyone.
        self.allow_ips = allow_ips
        self._owners: dict[int, Session] = {}
        self._listeners: dict[Session, list[Listener]] = {}

    async def listen(self, session: Session, port: int) -> Listener:
        """Start serving ``port`` for ``session``; OSError if the port cannot be had."""
        raise NotImplementedError

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
        listeners: list[Listener] = []
        for port in ports:
            try:
                listeners.append(await self.listen(session, port))
            except OSError as exc:
                for listener in listeners:
                    listener.close()
                raise Refused(
                    f"the server cannot listen on {self.bind}:{port}/{self.mode}: "
                    f"{exc.strerror or exc}",
                    retry=True,
                ) from exc
        for port in ports:
            self._owners[port] = session
        self._listeners[session] = listeners
        log.info("listening on %s/%s for %s", _ports(ports), self.mode, session.peer)
        return {"ports": ports}

    def unregister(self, session: Session) -> None:
        for listener in self._listeners.pop(session, []):
            listener.close()
        for port in [p for p, s in self._owners.items() if s is session]:
            del self._owners[port]

    def on_stream(self, session: Session, stream: Stream) -> None:
        stream.reset(f"{self.mode.upper()} mode servers do not accept streams from clients")

    def health(self) -> dict[str, Any]:
        return {"ports": sorted(self._owners)}

    async def close(self) -> None:
        for session in list(self._listeners):
            self.unregister(session)


def _ports(ports: list[int]) -> str:
    return ", ".join(map(str, ports))


class PortUpstreams:
    """The client's data plane of a port-forwarding mode, but for how it connects.

    A stream's ``port`` (the public port) picks the upstream port (``--ports
    8000,2222:22``); each stream is connected in a task of its own, so one slow or
    refusing upstream holds up nothing else.
    """

    #: the mode's name, set by each subclass
    mode: str

    def __init__(self, host: str, ports: dict[int, int]) -> None:
        self.host = host
        self.ports = ports
        self._tasks: set[asyncio.Task[None]] = set()

    async def connect(self, stream: Stream, port: int) -> None:
        """Join ``stream`` to ``host:port``; reset it if that cannot be done."""
        raise NotImplementedError

    def hello(self) -> dict[str, Any]:
        return {"mode": self.mode, "ports": sorted(self.ports)}

    def on_stream(self, stream: Stream) -> None:
        port = stream.metadata.get("port")
        upstream = self.ports.get(port) if isinstance(port, int) else None
        if upstream is None:
            stream.reset(f"this client does not serve port {port}")
            return
        task = asyncio.get_running_loop().create_task(self.connect(stream, upstream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
