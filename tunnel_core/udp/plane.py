"""UDP mode's data plane: a flow per public source address, each one a tunnel stream.

Server: for each port a client owns (:class:`~tunnel_core.ports.PortPlane`) one UDP
socket. The first datagram from a source address opens a stream to the client with
metadata ``{"port": P, "remote": "IP:PORT", "local": "IP:PORT"}`` (as in TCP mode);
its datagrams go down that stream and the answers come back to that address. A flow
that has carried nothing either way for ``idle_timeout`` seconds is closed, and a
port holds at most ``max_flows`` flows at once (a source that spoofs addresses cannot
make the server open streams without end). Datagrams from outside ``--allow-ips``
are dropped before a stream exists.

Client: each stream gets a UDP socket connected to ``upstream:port``; what the
upstream answers goes back up the stream. When the server closes the flow, the
socket is closed.

Datagrams are framed on the stream (:mod:`tunnel_core.protocol.datagrams`) so their
boundaries survive. UDP may lose datagrams and a tunnel must not make memory grow
instead: while a stream has no credit (its peer is not keeping up) or the control
connection's buffer is full, new datagrams are dropped and counted, never queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from tunnel_core import netaddr
from tunnel_core.errors import TunnelError
from tunnel_core.ports import Listener, PortPlane, PortUpstreams, address_text
from tunnel_core.protocol.datagrams import MAX_DATAGRAM, DatagramReader, encode
from tunnel_core.session import Session, Stream

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_MAX_FLOWS", "UdpServerPlane", "UdpUpstreams"]

log = logging.getLogger("tunnel_core")

#: Seconds a flow may be silent both ways before it is closed (DNS and game clients
#: come and go; 60 s is what conntrack gives an unreplied UDP flow, a bit more).
DEFAULT_IDLE_TIMEOUT = 60.0
#: Flows one public port holds at once; datagrams from further sources are dropped.
DEFAULT_MAX_FLOWS = 4096


class Flow:
    """One stream carrying datagrams both ways; the stream's sink.

    ``deliver`` sends a datagram that came down the stream (to the public address on
    the server, to the upstream on the client); ``closed`` runs once when the stream
    ends or is reset.
    """

    __slots__ = ("stream", "deliver", "closed", "last_active", "_reader", "_paused")

    def __init__(
        self,
        stream: Stream,
        deliver: Callable[[bytes], None],
        closed: Callable[[Flow], None],
    ) -> None:
        self.stream = stream
        self.deliver = deliver
        self.closed = closed
        self.last_active = asyncio.get_running_loop().time()
        self._reader = DatagramReader()
        self._paused = False

    def send(self, datagram: bytes) -> bool:
        """Into the stream; False if dropped because the stream cannot take it now."""
        self.last_active = asyncio.get_running_loop().time()
        if self._paused or self.stream.paused or len(datagram) > MAX_DATAGRAM:
            return False
        self.stream.write(encode(datagram))
        return True

    # StreamSink ------------------------------------------------------------------

    def stream_data(self, data: bytes) -> None:
        self.last_active = asyncio.get_running_loop().time()
        for datagram in self._reader.feed(data):
            self.deliver(datagram)
        self.stream.consumed(len(data))  # a UDP socket never pushes back: credit at once

    def stream_eof(self) -> None:
        self.stream.write_eof()
        self.closed(self)

    def stream_reset(self, reason: str) -> None:
        self.closed(self)

    def pause_producing(self) -> None:
        self._paused = True

    def resume_producing(self) -> None:
        self._paused = False


class _PublicPort(asyncio.DatagramProtocol):
    """The server's socket on one public UDP port, owned by one client session."""

    def __init__(self, plane: UdpServerPlane, session: Session, port: int) -> None:
        self.plane = plane
        self.session = session
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[Any, Flow] = {}
        #: datagrams not sent down a stream: no flow for them (allow-list, max_flows) or
        #: its stream could not take them
        self.dropped = 0
        self._sweeper: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._schedule_sweep()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr) or self._open(addr)
        if flow is None or not flow.send(data):
            self.dropped += 1

    def _open(self, addr: Any) -> Flow | None:
        remote = address_text(addr)
        if not netaddr.allowed(str(addr[0]), self.plane.allow_ips):
            log.debug("port %d/udp: dropped %s (not in --allow-ips)", self.port, remote)
            return None
        if len(self.flows) >= self.plane.max_flows:
            log.debug("port %d/udp: dropped %s (%d flows open)", self.port, remote, len(self.flows))
            return None
        assert self.transport is not None
        local = address_text(self.transport.get_extra_info("sockname"))
        try:
            stream = self.session.open_stream({"port": self.port, "remote": remote, "local": local})
        except TunnelError:  # the control connection went away meanwhile
            return None
        transport = self.transport
        flow = Flow(stream, lambda datagram: transport.sendto(datagram, addr), self._forget)
        self.flows[addr] = flow
        stream.set_sink(flow)
        return flow

    def _forget(self, flow: Flow) -> None:
        for addr, known in list(self.flows.items()):
            if known is flow:
                del self.flows[addr]

    def _schedule_sweep(self) -> None:
        interval = max(0.05, self.plane.idle_timeout / 4)
        self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close the flows idle for longer than the timeout (checked four times a period)."""
        deadline = asyncio.get_running_loop().time() - self.plane.idle_timeout
        for addr, flow in list(self.flows.items()):
            if flow.last_active < deadline:
                del self.flows[addr]
                flow.stream.close()
        self._schedule_sweep()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors about datagrams we sent (a public client that went away): UDP
        # has no connection to drop, so there is nothing to do but note it.
        log.debug("port %d/udp: %s", self.port, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    def close(self) -> None:
        """Stop serving the port: its socket and every flow on it."""
        if self.transport is not None:
            self.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        flows, self.flows = self.flows, {}
        for flow in flows.values():
            flow.stream.reset("the port is closed")


class UdpServerPlane(PortPlane):
    mode = "udp"

    def __init__(
        self,
        bind: str,
        allow: list[tuple[int, int]],
        allow_ips: tuple[netaddr.Network, ...] | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_flows: int = DEFAULT_MAX_FLOWS,
    ) -> None:
        super().__init__(bind, allow, allow_ips)
        self.idle_timeout = idle_timeout
        self.max_flows = max_flows
        self._ports: dict[int, _PublicPort] = {}

    async def listen(self, session: Session, port: int) -> Listener:
        # "::" is every address, IPv6 and IPv4 (Linux makes the socket dual-stack).
        host = self.bind.removeprefix("[").removesuffix("]") or "0.0.0.0"
        _, public = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _PublicPort(self, session, port), local_addr=(host, port)
        )
        self._ports[port] = public
        return public

    def unregister(self, session: Session) -> None:
        for port in [p for p, public in self._ports.items() if public.session is session]:
            del self._ports[port]
        super().unregister(session)

    def health(self) -> dict[str, Any]:
        ports = self._ports.values()
        return super().health() | {
            "flows": sum(len(public.flows) for public in ports),
            "dropped": sum(public.dropped for public in ports),
        }


class _UpstreamSocket(asyncio.DatagramProtocol):
    """The client's socket to the upstream for one flow."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.flow: Flow | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.flow is not None:
            self.flow.send(data)

    def error_received(self, exc: Exception) -> None:
        # Most often ICMP port unreachable: nothing listens upstream (yet). UDP gives
        # the sender no answer then, and neither do we; the flow stays until idle.
        log.debug("upstream %s: %s", self.upstream, exc)


class UdpUpstreams(PortUpstreams):
    """The client side: a socket to ``host:upstream_port`` for every flow the server opens."""

    mode = "udp"

    async def connect(self, stream: Stream, port: int) -> None:
        loop = asyncio.get_running_loop()
        name = netaddr.host_port(self.host, port)
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UpstreamSocket(name), remote_addr=(self.host, port)
            )
        except OSError as exc:
            log.warning("upstream %s unusable: %s", name, exc.strerror or exc)
            stream.reset(f"upstream {name} unusable")
            return

        def closed(flow: Flow) -> None:
            transport.close()

        flow = Flow(stream, transport.sendto, closed)
        protocol.flow = flow
        stream.set_sink(flow)  # delivers what arrived while the socket was being made
