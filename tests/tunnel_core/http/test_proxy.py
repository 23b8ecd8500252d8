"""The HTTP data plane over real loopback sockets.

Each "tunnel client" here is a loopback listener that runs the real client-side
code (``serve_http_stream``) on every connection, and ``open_stream`` dials it: the
proxy logic, h11 on both legs and the upstream dialing are all real; only the
multiplexed transport is replaced by one TCP connection per stream. The same
scenarios through real tunnel processes live in test_tunnel.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h11
import pytest
import websockets

from tunnel_core.http.proxy import HttpProxy, forwarded_request
from tunnel_core.http.public import Limits, start_public_server
from tunnel_core.http.router import Router
from tunnel_core.http.upstream import Upstreams, parse_upstream, serve_http_stream
from tunnel_core.metrics import Metrics
from tunnel_core.splice import Duplex, StreamDuplex

pytestmark = pytest.mark.network
DEADLINE = 20.0
DEFAULT_LIMITS = Limits()


async def echo_app(name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream that answers with what it saw, hashing (not keeping) the body."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if not isinstance(event, h11.Request):
                return
            digest, size = hashlib.sha256(), 0
            while not isinstance(ev := conn.next_event(), h11.EndOfMessage):
                if ev is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(ev, h11.Data):
                    digest.update(ev.data)
                    size += len(ev.data)
            if event.target == b"/hang":  # never answers: a request stays in flight
                await asyncio.Event().wait()
            if event.target.startswith(b"/download/"):
                total = int(event.target.rsplit(b"/", 1)[1])
                writer.write(conn.send(h11.Response(status_code=200, headers=[])))
                block = bytes(range(256)) * 256
                sent = 0
                while sent < total:
                    piece = block[: min(len(block), total - sent)]
                    writer.write(conn.send(h11.Data(data=piece)))
                    await writer.drain()
                    sent += len(piece)
            else:
                body = json.dumps(
                    {
                        "name": name,
                        "target": event.target.decode(),
                        "headers": [[k.decode(), v.decode()] for k, v in event.headers],
                        "sha256": digest.hexdigest(),
                        "size": size,
                        "upstream_connection": writer.get_extra_info("peername")[1],
                    }
                ).encode()
                headers = [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Keep-Alive", "timeout=5"),
                    ("X-Private", "1"),
                    ("Connection", "X-Private"),
                ]
                writer.write(conn.send(h11.Response(status_code=200, headers=headers)))
                writer.write(conn.send(h11.Data(data=body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if event.target == b"/then-close":  # a keep-alive response, then gone while idle
                return
            conn.start_next_cycle()
    except (ConnectionError, h11.ProtocolError):
        pass
    finally:
        writer.close()


@dataclass
class Rig:
    router: Router = field(default_factory=Router)
    metrics: Metrics = field(default_factory=Metrics)
    clients: dict[str, asyncio.Server] = field(default_factory=dict)
    client_ports: dict[str, int] = field(default_factory=dict)
    servers: list[asyncio.Server] = field(default_factory=list)
    port: int = 0

    async def upstream(self, name: str) -> str:
        server = await asyncio.start_server(lambda r, w: echo_app(name, r, w), "127.0.0.1", 0)
        self.servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    async def client(self, name: str, *specs: str) -> None:
        upstreams = Upstreams(parse_upstream(s) for s in specs)

        async def on_stream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await serve_http_stream(StreamDuplex(r, w), upstreams, connect_timeout=5)

        server = await asyncio.start_server(on_stream, "127.0.0.1", 0)
        self.clients[name] = server
        self.client_ports[name] = server.sockets[0].getsockname()[1]
        self.router.register(name, upstreams.hosts)

    async def kill(self, name: str) -> None:
        self.router.unregister(name)
        server = self.clients.pop(name)
        server.close()
        await server.wait_closed()

    async def open_stream(self, client: object) -> Duplex:
        port = self.client_ports[str(client)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return StreamDuplex(reader, writer)

    async def start(self, limits: Limits = DEFAULT_LIMITS) -> None:
        proxy = HttpProxy(self.router, self.open_stream, self.metrics, limits)
        server = await start_public_server(proxy.handle, "127.0.0.1", 0, limits)
        self.servers.append(server)
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in [*self.servers, *self.clients.values()]:
            server.close()
        for server in [*self.servers, *self.clients.values()]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


@contextlib.asynccontextmanager
async def rig(limits: Limits = DEFAULT_LIMITS) -> AsyncIterator[Rig]:
    r = Rig()
    await r.start(limits)
    try:
        yield r
    finally:
        await r.close()


def get(port: int, path: str = "/", host: str = "app.test", **kw: object) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    try:
        conn.request("GET", path, headers={"Host": host, **kw})  # type: ignore[arg-type]
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def digest_of(response: http.client.HTTPResponse) -> tuple[int, str]:
    """Length and SHA-256 of a body, read in pieces so it is never held whole."""
    digest, total = hashlib.sha256(), 0
    while chunk := response.read(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    return total, digest.hexdigest()


def run(coro_fn: Callable[[], object]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), 60))  # type: ignore[arg-type]


def test_round_robin_is_exact_and_a_killed_client_leaves_the_rotation() -> None:
    async def main() -> None:
        async with rig() as r:
            for name in ("a", "b", "c"):
                await r.client(name, "app.test=" + await r.upstream(name))
            seen: dict[str, int] = {}
            for _ in range(30):
                status, body = await asyncio.to_thread(get, r.port)
                assert status == 200
                name = json.loads(body)["name"]
                seen[name] = seen.get(name, 0) + 1
            assert seen == {"a": 10, "b": 10, "c": 10}
            await r.kill("b")
            after = [
                json.loads((await asyncio.to_thread(get, r.port))[1])["name"] for _ in range(10)
            ]
            assert sorted(set(after)) == ["a", "c"]
            assert r.metrics.requests[200] == 40

    run(main)


def test_host_routing_with_default_and_503_without_client() -> None:
    async def main() -> None:
        async with rig() as r:
            status, body = await asyncio.to_thread(get, r.port, "/", "nobody.test")
            assert status == 503 and b"no tunnel client" in body
            await r.client(
                "x",
                "api.test=" + await r.upstream("api"),
                "web.test=" + await r.upstream("web"),
                await r.upstream("default"),
            )
            names = {
                h: json.loads((await asyncio.to_thread(get, r.port, "/", h))[1])["name"]
                for h in ("api.test", "WEB.test:8000", "other.test")
            }
            assert names == {"api.test": "api", "WEB.test:8000": "web", "other.test": "default"}
            assert r.metrics.requests[503] == 1

    run(main)


def test_dead_upstream_gives_502_and_counts_an_upstream_error() -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]  # bound, never listening: connection refused
            async with rig() as r:
                await r.client("a", f"http://127.0.0.1:{dead}")
                status, body = await asyncio.to_thread(get, r.port)
                assert status == 502 and b"refused" in body
                assert r.metrics.upstream_errors == 1 and r.metrics.requests[502] == 1

    run(main)


def test_headers_forwarded_and_hop_by_hop_removed_on_both_legs() -> None:
    async def main() -> None:
        async with rig() as r:
            await r.client("a", await r.upstream("a"))
            headers = {
                "Host": "app.test",
                "Connection": "keep-alive, X-Secret",
                "X-Secret": "hop",
                "Keep-Alive": "timeout=5",
                "X-Forwarded-For": "203.0.113.9",
            }

            def three_on_one_connection() -> list[dict[str, list[list[str]]]]:
                conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=DEADLINE)
                bodies = []
                try:
                    for _ in range(3):
                        conn.request("GET", "/h", headers=headers)
                        resp = conn.getresponse()
                        bodies.append(json.loads(resp.read()))
                        assert resp.getheader("X-Private") is None
                        assert resp.getheader("Keep-Alive") is None
                    assert conn.sock is not None  # never closed in between: keep-alive held
                finally:
                    conn.close()
                return bodies

            bodies = await asyncio.to_thread(three_on_one_connection)
            # The upstream leg kept alive too: one upstream connection served all three.
            assert len({b["upstream_connection"] for b in bodies}) == 1
            seen = {k.lower(): v for k, v in bodies[0]["headers"]}
            assert "x-secret" not in seen and "keep-alive" not in seen
            assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
            assert seen["x-forwarded-proto"] == "http"
            assert seen["x-forwarded-host"] == "app.test"
            assert r.metrics.requests[200] == 3

    run(main)


def test_chunked_upload_is_streamed_intact_with_curl() -> None:
    async def main() -> None:
        async with rig() as r:
            await r.client("a", await r.upstream("a"))
            payload = bytes(range(256)) * 40_000  # ~10 MB
            proc = await asyncio.create_subprocess_exec(
                "curl",
                "-sS",
                "--max-time",
                "30",
                "-H",
                "Host: app.test",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                "@-",
                f"http://127.0.0.1:{r.port}/upload",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                out, _ = await asyncio.wait_for(proc.communicate(payload), DEADLINE)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            seen = json.loads(out)
            assert seen["size"] == len(payload)
            assert seen["sha256"] == hashlib.sha256(payload).hexdigest()
            assert ["transfer-encoding", "chunked"] in [[k.lower(), v] for k, v in seen["headers"]]
            assert r.metrics.bytes_in == len(payload)

    run(main)


def test_large_download_is_streamed_intact() -> None:
    async def main() -> None:
        async with rig() as r:
            await r.client("a", await r.upstream("a"))
            size = 20 * 1024 * 1024  # the 100 MB run goes through real processes

            def fetch() -> tuple[int, str]:
                conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=DEADLINE)
                conn.request("GET", f"/download/{size}", headers={"Host": "app.test"})
                result = digest_of(conn.getresponse())
                conn.close()
                return result

            total, digest = await asyncio.to_thread(fetch)
            block = bytes(range(256)) * 256
            expected = hashlib.sha256(block * (size // len(block))).hexdigest()
            assert (total, digest) == (size, expected)
            assert r.metrics.bytes_out == size

    run(main)


async def ws_echo(ws: websockets.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def test_websocket_upgrade_passes_through() -> None:
    async def main() -> None:
        async with rig() as r, websockets.serve(ws_echo, "127.0.0.1", 0) as ws_server:
            ws_port = ws_server.sockets[0].getsockname()[1]
            await r.client("a", f"ws.test=http://127.0.0.1:{ws_port}")
            # The URI names the tunnel's public host; the socket goes to our loopback port.
            async with websockets.connect("ws://ws.test/chat", host="127.0.0.1", port=r.port) as ws:
                for message in ("hello", "x" * 200_000, b"\x00\x01binary"):
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), DEADLINE) == message
            assert r.metrics.requests.get(101) is None  # upgrades are not "answered" requests

    run(main)


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: app.test\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\n" + b"X-N: 1\r\n" * 150 + b"\r\n", b"431"),
        (b"GET / HTTP/1.1\r\nHost: app.test\r\nbroken header\r\n\r\n", b"400"),
        (b"GET / HTTP/1.1\r\n\r\n", b"400"),
    ],
)
def test_limits_answer_with_the_right_status(request_bytes: bytes, status: bytes) -> None:
    async def main() -> None:
        async with rig() as r:
            await r.client("a", await r.upstream("a"))
            answer = await asyncio.to_thread(_raw, r.port, request_bytes)
            assert answer.split(b" ", 2)[1] == status
            assert r.metrics.requests[int(status)] == 1

    run(main)


def test_slowloris_does_not_starve_others_and_is_cut_off() -> None:
    async def main() -> None:
        limits = Limits(header_timeout=2.0, max_connections=64)
        async with rig(limits) as r:
            await r.client("a", await r.upstream("a"))
            slow = []
            for _ in range(40):
                reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
                writer.write(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
                await writer.drain()
                slow.append((reader, writer))
            try:
                status, _ = await asyncio.to_thread(get, r.port)
                assert status == 200  # served while 40 half-sent requests are held open
                for reader, _ in slow:  # every slow connection gets a 408 and is closed
                    answer = await asyncio.wait_for(reader.read(), DEADLINE)
                    assert answer.startswith(b"HTTP/1.1 408 ")
            finally:
                for _, writer in slow:
                    writer.close()

    run(main)


def test_connection_cap_refuses_extra_connections_with_503() -> None:
    async def main() -> None:
        async with rig(Limits(max_connections=2)) as r:
            await r.client("a", await r.upstream("a"))
            held = [await asyncio.open_connection("127.0.0.1", r.port) for _ in range(2)]
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
                answer = await asyncio.wait_for(reader.read(), DEADLINE)
                writer.close()
                assert answer.startswith(b"HTTP/1.1 503 ")
            finally:
                for _, w in held:
                    w.close()

    run(main)


def test_forwarded_request_sets_chunked_framing_for_chunked_input() -> None:
    request = h11.Request(
        method="POST",
        target="/",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c")],
    )
    out = dict(forwarded_request(request, "192.0.2.1").headers)
    assert out[b"transfer-encoding"] == b"chunked"
    assert b"upgrade" not in out


def test_parse_upstream_rejects_what_it_cannot_dial() -> None:
    assert parse_upstream("API.test=http://127.0.0.1:3000").host == "api.test"
    assert parse_upstream("http://localhost").port == 80
    for bad in ("ftp://x", "api=127.0.0.1:80", "http://x:99999"):
        with pytest.raises(ValueError, match="--upstream"):
            parse_upstream(bad)


def test_expect_100_continue_is_answered_by_the_server() -> None:
    async def main() -> None:
        async with rig() as r:
            await r.client("a", await r.upstream("a"))
            reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
            try:
                writer.write(
                    b"POST /e HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n"
                    b"Expect: 100-continue\r\n\r\n"
                )
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
                assert interim.startswith(b"HTTP/1.1 100 ")  # before any body byte was sent
                writer.write(b"hello")
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
                assert head.startswith(b"HTTP/1.1 200 ")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                seen = json.loads(await reader.readexactly(length))
            finally:
                writer.close()
            assert seen["size"] == 5
            assert "expect" not in {k.lower() for k, _ in seen["headers"]}

    run(main)


def test_an_upstream_leg_closed_while_idle_is_replaced_for_the_next_request() -> None:
    async def main() -> None:
        async with rig() as r:
            await r.client("a", await r.upstream("a"))

            def two_requests() -> list[tuple[int, int]]:
                conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=DEADLINE)
                out = []
                try:
                    for path in ("/then-close", "/next"):
                        conn.request("GET", path, headers={"Host": "app.test"})
                        resp = conn.getresponse()
                        out.append((resp.status, json.loads(resp.read())["upstream_connection"]))
                finally:
                    conn.close()
                return out

            (first, a), (second, b) = await asyncio.to_thread(two_requests)
            assert (first, second) == (200, 200) and a != b
            assert r.metrics.upstream_errors == 0

    run(main)
