"""TCP mode's data plane: the server listens on the client's ports; the client dials.

Server: a listener on each port the client owns (:class:`~tunnel_core.ports.PortPlane`
decides which it may have). A connection from a source
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
import errno
import logging
import os
import socket
from typing import cast

from tunnel_core import netaddr
from tunnel_core.errors import ConfigError, TunnelError
from tunnel_core.ports import Listener, PortPlane, PortUpstreams, address_text
from tunnel_core.session import Session, Stream
from tunnel_core.splice import SpliceProtocol

from .proxy_protocol import VERSIONS, header as proxy_header

log = logging.getLogger("tunnel_core")


class TcpServerPlane(PortPlane):
    mode = "tcp"

    async def listen(self, session: Session, port: int) -> Listener:
        return await asyncio.get_running_loop().create_server(
            lambda: _Public(session, port, self.allow_ips),
            netaddr.listen_host(self.bind),
            port,
            reuse_address=True,
        )


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
        remote = address_text(peer)
        if not netaddr.allowed(str(peer[0]) if peer else "", self.allow_ips):
            log.debug("port %d: refused %s (not in --allow-ips)", self.port, remote)
            cast(asyncio.Transport, transport).abort()
            return
        local = address_text(transport.get_extra_info("sockname"))
        try:
            stream = self.session.open_stream({"port": self.port, "remote": remote, "local": local})
        except TunnelError:  # the control connection went away meanwhile
            cast(asyncio.Transport, transport).abort()
            return
        self.stream = stream
        super().connection_made(transport)


class _ProxiedUpstream(SpliceProtocol):
    """An upstream connection that starts with a PROXY protocol header."""

    def __init__(self, stream: Stream, header: bytes) -> None:
        super().__init__(stream)
        self.header = header

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.header)  # before any stream byte
        super().connection_made(transport)


class TcpUpstreams(PortUpstreams):
    """The client side: dial ``host:upstream_port`` for every stream the server opens.

    ``proxy_protocol`` (``"v1"``/``"v2"``) prefixes each upstream connection with a
    PROXY header naming the public client and the server's public address.
    """

    mode = "tcp"

    def __init__(self, host: str, ports: dict[int, int], proxy_protocol: str | None = None) -> None:
        if proxy_protocol is not None and proxy_protocol not in VERSIONS:
            raise ConfigError(f"--proxy-protocol must be v1 or v2, not {proxy_protocol!r}")
        super().__init__(host, ports)
        self.proxy_protocol = proxy_protocol
        ip = netaddr.plain_ip(host)
        #: the address family of an IP literal host (dialled without a resolver round)
        self._family = (
            None if ip is None else (socket.AF_INET6 if ip.version == 6 else socket.AF_INET)
        )
        self._host_bytes = host.encode()  # an IP literal is ASCII

    def _protocol(self, stream: Stream) -> SpliceProtocol:
        if self.proxy_protocol is None:
            return SpliceProtocol(stream)
        meta = stream.metadata
        remote, local = meta.get("remote"), meta.get("local")
        src = netaddr.split_host_port(remote) if isinstance(remote, str) else None
        dst = netaddr.split_host_port(local) if isinstance(local, str) else None
        return _ProxiedUpstream(stream, proxy_header(self.proxy_protocol, src, dst))

    async def connect(self, stream: Stream, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._family is None:  # a host name: resolved on every dial, as it may move
                await loop.create_connection(lambda: self._protocol(stream), self.host, port)
            else:
                sock = await _connected(loop, self._family, (self._host_bytes, port))
                await loop.create_connection(lambda: self._protocol(stream), sock=sock)
        except OSError as exc:
            log.warning("upstream %s:%s unreachable: %s", self.host, port, exc.strerror or exc)
            stream.reset(f"upstream {self.host}:{port} unreachable")


async def _connected(
    loop: asyncio.AbstractEventLoop, family: int, address: tuple[bytes, int]
) -> socket.socket:
    """A non-blocking socket connected to an IP address (``address``'s host as bytes).

    ``create_connection(host, port)`` costs about 50 us more per connection than this
    (it resolves the literal, and walks its list of candidates), and so does
    ``sock_connect`` under uvloop, which hands every address to getaddrinfo on its
    thread pool (py-spy, hey without keep-alive: 13% of the client waking that pool);
    a host given as bytes also skips the socket module's IDNA codec. A tunnel that
    opens a connection per public request pays all of it every time.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex(address)
        if error == errno.EINPROGRESS:
            await _writable(loop, sock.fileno())
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    """Until ``fd`` is writable: a non-blocking connect has finished, or failed."""
    done: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not done.done():  # it may fire again before the waiter has run
            done.set_result(None)

    loop.add_writer(fd, ready)
    try:
        await done
    finally:
        loop.remove_writer(fd)
