"""HTTP mode end to end: real tunnel-core server and client processes over TLS on loopback.

Upstream services run in the test's own event loop (so they can report which
client a request came through); public requests are made with http.client,
curl and the websockets client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import websockets

from tests.conftest import Engine, EngineProcess, TunnelServerInfo, free_port, healthz, wait_for
from tests.tunnel_core.http.test_proxy import digest_of, echo_app, ws_echo

pytestmark = pytest.mark.network
DEADLINE = 30.0


@dataclass
class HttpServer:
    info: TunnelServerInfo
    port: int

    def get(self, host: str, path: str = "/") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
        try:
            conn.request("GET", path, headers={"Host": host})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def control(self, path: str, token: str | None) -> tuple[int, str]:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.info.control_port}{path}", headers=headers
        )
        try:
            with urllib.request.urlopen(request, context=ctx, timeout=DEADLINE) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()

    def wait_clients(self, n: int) -> None:
        wait_for(lambda: self.info.clients() == n, DEADLINE, f"{n} clients connected")


def http_server(engine: Engine, *extra: str) -> HttpServer:
    control, data = free_port(), free_port()
    token = os.urandom(16).hex()
    cert, key, fingerprint = engine.cert(f"http-{control}")
    process = engine.start(
        "http", "server", "--bind", "127.0.0.1", "--control-port", str(control),
        "--port", str(data), "--token-env", "TEST_TUNNEL_TOKEN",
        "--tls-cert", str(cert), "--tls-key", str(key), *extra,
        env={"TEST_TUNNEL_TOKEN": token},
    )  # fmt: skip
    wait_for(lambda: healthz(control) is not None or process.proc.poll() is not None)
    assert process.proc.poll() is None, process.stderr()
    return HttpServer(TunnelServerInfo(process, control, token, fingerprint, engine.tmp), data)


def http_client(engine: Engine, server: HttpServer, *upstreams: str) -> EngineProcess:
    args = [arg for spec in upstreams for arg in ("--upstream", spec)]
    return engine.start(
        "http", "client", "--url", server.info.url, "--token-env", "TEST_TUNNEL_TOKEN",
        "--tls-fingerprint", server.info.fingerprint, *args,
        env={"TEST_TUNNEL_TOKEN": server.info.token},
    )  # fmt: skip


@contextlib.asynccontextmanager
async def upstreams(*names: str) -> AsyncIterator[dict[str, str]]:
    """Echo services by name -> URL, closed on exit."""
    servers = []
    try:
        for name in names:
            servers.append(
                await asyncio.start_server(
                    lambda r, w, name=name: echo_app(name, r, w), "127.0.0.1", 0
                )
            )
        yield {
            name: f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}"
            for name, s in zip(names, servers, strict=True)
        }
    finally:
        for s in servers:
            s.close()


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 120))  # type: ignore[arg-type]


def who(server: HttpServer, host: str) -> str:
    status, body = server.get(host)
    assert status == 200, (status, body)
    return str(json.loads(body)["name"])


def test_three_clients_share_exactly_and_a_killed_one_leaves_at_once(engine: Engine) -> None:
    server = http_server(engine)

    async def main() -> None:
        async with upstreams("a", "b", "c") as urls:
            clients = {n: http_client(engine, server, f"app.test={u}") for n, u in urls.items()}
            await asyncio.to_thread(server.wait_clients, 3)
            names = [await asyncio.to_thread(who, server, "app.test") for _ in range(300)]
            assert {n: names.count(n) for n in "abc"} == {"a": 100, "b": 100, "c": 100}
            clients["b"].signal(signal.SIGKILL)
            await asyncio.to_thread(server.wait_clients, 2)
            after = [await asyncio.to_thread(who, server, "app.test") for _ in range(60)]
            assert sorted(set(after)) == ["a", "c"]

    run(main)


def test_requests_in_flight_on_a_dropped_client_get_502(engine: Engine) -> None:
    server = http_server(engine)

    def streams_open() -> int:
        text = server.control("/metrics", server.info.token)[1]
        line = next(x for x in text.splitlines() if x.startswith("tunnel_streams_open "))
        return int(line.split()[1])

    async def main() -> None:
        async with upstreams("a") as urls:
            client = http_client(engine, server, urls["a"])
            await asyncio.to_thread(server.wait_clients, 1)
            pending = asyncio.ensure_future(asyncio.to_thread(server.get, "app.test", "/hang"))
            await asyncio.to_thread(wait_for, lambda: streams_open() == 1, DEADLINE, "in flight")
            client.signal(signal.SIGKILL)
            status, _ = await asyncio.wait_for(pending, DEADLINE)
            assert status == 502
            await asyncio.to_thread(server.wait_clients, 0)
            assert (await asyncio.to_thread(server.get, "app.test"))[0] == 503

    run(main)


def test_host_routing_default_503_502_and_metrics(engine: Engine) -> None:
    metrics_port = free_port()
    server = http_server(engine, "--metrics-port", str(metrics_port))
    dead = free_port()  # nothing listens there

    async def main() -> None:
        async with upstreams("api", "web", "default") as urls:
            http_client(engine, server, f"api.test={urls['api']}", f"web.test={urls['web']}")
            fallback = http_client(
                engine, server, urls["default"], f"dead.test=http://127.0.0.1:{dead}"
            )
            await asyncio.to_thread(server.wait_clients, 2)
            for host, name in [("api.test", "api"), ("Web.Test:80", "web"), ("x.test", "default")]:
                assert await asyncio.to_thread(who, server, host) == name
            status, body = await asyncio.to_thread(server.get, "dead.test")
            assert status == 502 and b"refused" in body
            fallback.signal(signal.SIGTERM)
            assert fallback.wait_exit() == 0
            await asyncio.to_thread(server.wait_clients, 1)
            status, body = await asyncio.to_thread(server.get, "x.test")
            assert status == 503 and body.startswith(b"no tunnel client")

        status, text = server.control("/metrics", server.info.token)
        assert status == 200
        assert 'tunnel_http_requests_total{code="200"} 3' in text
        assert 'tunnel_http_requests_total{code="502"} 1' in text
        assert 'tunnel_http_requests_total{code="503"} 1' in text
        assert "tunnel_upstream_errors_total 1" in text
        assert 'tunnel_clients_connected{mode="http"} 1' in text
        assert server.control("/metrics", "wrong")[0] == 401
        assert server.info.token not in text
        scrape = urllib.request.Request(
            f"http://127.0.0.1:{metrics_port}/metrics",
            headers={"Authorization": f"Bearer {server.info.token}"},
        )
        with urllib.request.urlopen(scrape, timeout=DEADLINE) as r:
            assert "tunnel_http_requests_total" in r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=DEADLINE)
        refused.value.close()
        assert refused.value.code == 401

    run(main)


def test_status_command_lists_clients_and_hosts(engine: Engine) -> None:
    server = http_server(engine)

    async def main() -> None:
        async with upstreams("a") as urls:
            http_client(engine, server, f"api.test={urls['a']}", urls["a"])
            await asyncio.to_thread(server.wait_clients, 1)
            command = [
                sys.executable, "-m", "tunnel_core", "status", "--url", server.info.url,
                "--token-env", "TEST_TUNNEL_TOKEN", "--tls-fingerprint", server.info.fingerprint,
            ]  # fmt: skip
            env = {**os.environ, "TEST_TUNNEL_TOKEN": server.info.token}
            result = await asyncio.to_thread(
                subprocess.run, [*command, "--json"], capture_output=True, text=True,
                timeout=DEADLINE, env=env,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr
            document = json.loads(result.stdout)
            assert [c["hosts"] for c in document["clients"]] == [["api.test", "*"]]
            assert document["uptime_seconds"] >= 0
            text = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=DEADLINE, env=env
            )
            assert "clients: 1" in text.stdout and "hosts: api.test, *" in text.stdout
            bad = await asyncio.to_thread(
                subprocess.run, command, capture_output=True, text=True, timeout=DEADLINE,
                env={**env, "TEST_TUNNEL_TOKEN": "wrong"},
            )  # fmt: skip
            assert bad.returncode == 1 and "rejected the token" in bad.stderr
            assert "wrong" not in bad.stderr

    run(main)


def test_keep_alive_big_bodies_chunked_upload_and_websocket(engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = http_server(engine)
    size = 100 * 1024 * 1024

    async def main() -> None:
        async with (
            upstreams("a") as urls,
            websockets.serve(ws_echo, "127.0.0.1", 0, max_size=None) as ws_server,
        ):
            ws_port = ws_server.sockets[0].getsockname()[1]
            http_client(engine, server, urls["a"], f"ws.test=http://127.0.0.1:{ws_port}")
            await asyncio.to_thread(server.wait_clients, 1)

            def keep_alive_and_download() -> tuple[int, str]:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=DEADLINE)
                try:
                    for _ in range(3):
                        conn.request("GET", "/k", headers={"Host": "app.test"})
                        assert conn.getresponse().read()
                    sock = conn.sock
                    conn.request("GET", f"/download/{size}", headers={"Host": "app.test"})
                    result = digest_of(conn.getresponse())
                    assert conn.sock is sock  # all four on one connection
                    return result
                finally:
                    conn.close()

            block = bytes(range(256)) * 256
            expected = hashlib.sha256(block * (size // len(block))).hexdigest()
            assert await asyncio.to_thread(keep_alive_and_download) == (size, expected)

            upload = tmp_path / "upload.bin"
            with upload.open("wb") as fh:
                for i in range(100):
                    fh.write(hashlib.sha256(str(i).encode()).digest() * 32768)
            for extra in ([], ["-H", "Transfer-Encoding: chunked"]):
                out = await asyncio.to_thread(
                    subprocess.run,
                    ["curl", "-sS", "--max-time", "60", "-H", "Host: app.test", *extra,
                     "--data-binary", f"@{upload}", f"http://127.0.0.1:{server.port}/up"],
                    capture_output=True, timeout=90,
                )  # fmt: skip
                seen = json.loads(out.stdout)
                assert seen["size"] == upload.stat().st_size == size
                assert seen["sha256"] == hashlib.sha256(upload.read_bytes()).hexdigest()

            async with websockets.connect(
                "ws://ws.test/echo", host="127.0.0.1", port=server.port, max_size=None
            ) as ws:
                for message in ("hello", os.urandom(3 << 20), "bye"):
                    await ws.send(message)
                    assert await asyncio.wait_for(ws.recv(), DEADLINE) == message

    run(main)
