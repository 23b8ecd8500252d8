"""HTTP mode: --allow-ips on the data port and IPv6, with real processes over TLS."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from tests.conftest import Engine
from tests.tunnel_core.http.test_tunnel import http_client, http_server, run, upstreams
from tests.tunnel_core.tcp.test_features import ipv6

pytestmark = pytest.mark.network
DEADLINE = 30.0


def get(source: str, port: int, host: str = "127.0.0.1") -> bytes:
    """A GET for Host app.test from ``source``; the whole answer (b"" if closed unanswered)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as conn:
        conn.settimeout(DEADLINE)
        conn.bind((source, 0))
        conn.connect((host, port))
        data = bytearray()
        try:
            conn.sendall(b"GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            while chunk := conn.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        return bytes(data)


def body(response: bytes) -> dict[str, object]:
    assert response.startswith(b"HTTP/1.1 200"), response
    return dict(json.loads(response.split(b"\r\n\r\n", 1)[1]))


def test_allow_ips_on_the_data_port(engine: Engine) -> None:
    server = http_server(engine, "--allow-ips", "127.0.0.5/32")

    async def main() -> None:
        async with upstreams("a") as urls:
            http_client(engine, server, f"app.test={urls['a']}")
            await asyncio.to_thread(server.wait_clients, 1)
            answer = body(await asyncio.to_thread(get, "127.0.0.5", server.port))
            assert answer["name"] == "a"
            assert await asyncio.to_thread(get, "127.0.0.6", server.port) == b""
            # the control port stays open to all: the client above connected from 127.0.0.1
            assert server.info.clients() == 1

    run(main)


def test_allow_ips_refusal_is_a_debug_line_and_reaches_no_upstream(engine: Engine) -> None:
    server = http_server(engine, "--allow-ips", "::1/128,127.0.0.5")
    requests: list[bytes] = []

    async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.read(65536))
        writer.close()

    async def main() -> None:
        listener = await asyncio.start_server(counting, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with listener:
            http_client(engine, server, f"http://127.0.0.1:{port}")
            await asyncio.to_thread(server.wait_clients, 1)
            assert await asyncio.to_thread(get, "127.0.0.6", server.port) == b""
            await asyncio.to_thread(get, "127.0.0.5", server.port)
            assert len(requests) == 1 and b"127.0.0.5" in requests[0]  # X-Forwarded-For

    run(main)


def forwarded_for(answer: dict[str, object]) -> str:
    headers = answer["headers"]
    assert isinstance(headers, list)
    return next(v for k, v in headers if k == "x-forwarded-for")


@ipv6
def test_ipv6_bind_url_and_public_clients(engine: Engine) -> None:
    """``--bind ::`` serves v6 and v4 on both ports; the client dials ``wss://[::1]``."""
    server = http_server(engine, "--bind", "::")

    async def main() -> None:
        async with upstreams("a") as urls:
            engine.start(
                "http", "client", "--url", f"wss://[::1]:{server.info.control_port}",
                "--token-env", "T", "--tls-fingerprint", server.info.fingerprint,
                "--upstream", f"app.test={urls['a']}",
                env={"T": server.info.token},
            )  # fmt: skip
            await asyncio.to_thread(server.wait_clients, 1)
            six = body(await asyncio.to_thread(get, "::1", server.port, "::1"))
            assert forwarded_for(six) == "::1"
            four = body(await asyncio.to_thread(get, "127.0.0.5", server.port))
            assert forwarded_for(four) == "127.0.0.5"

    run(main)
