"""Hostile public clients against real tunnel-core server and client processes.

Every request here is sent byte for byte on a raw loopback socket (no client library
would send it), through a real ``http server`` and ``http client`` pair over TLS, to
upstreams that record exactly what reached them (tests/tunnel_core/http/hostile.py).
Each test asserts what the public client got and what the upstream saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import h11
import pytest

from tests.conftest import Engine
from tests.tunnel_core.http.hostile import Recorder, exchange
from tests.tunnel_core.http.test_tunnel import HttpServer, http_client, http_server
from tunnel_core.http.proxy import forwarded_request

pytestmark = pytest.mark.network


@dataclass
class Pair:
    """A server and one client serving ``a.test`` from ``a`` and any other host from ``b``."""

    server: HttpServer
    a: Recorder
    b: Recorder

    @property
    def port(self) -> int:
        return self.server.port

    def clear(self) -> None:
        self.a.clear()
        self.b.clear()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    engine = Engine(tmp_path_factory.mktemp("hardening"))
    a, b = Recorder("a"), Recorder("b")
    try:
        server = http_server(engine)
        http_client(engine, server, f"a.test={a.url}", f"b.test={b.url}", b.url)
        server.wait_clients(1)
        yield Pair(server, a, b)
    finally:
        engine.stop_all()
        a.close()
        b.close()


@pytest.fixture
def up(pair: Pair) -> Pair:
    pair.clear()
    return pair


# -- 5. request smuggling: a body length two parsers could read differently ----------------

SMUGGLED = b"GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n"


@pytest.mark.parametrize(
    "head",
    [
        # CL.TE: an upstream trusting Content-Length would read SMUGGLED as a second request.
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Content-Length: 4\r\nContent-Length: 5\r\n",
        b"Content-Length: 4, 5\r\n",
        b"Content-Length: -4\r\n",
    ],
)
def test_a_request_with_ambiguous_framing_gets_400_and_never_reaches_the_upstream(
    up: Pair, head: bytes
) -> None:
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)
    answer = exchange(up.port, b"POST /x HTTP/1.1\r\nHost: a.test\r\n" + head + b"\r\n" + body)
    assert answer.status == 400 and not answer.reset
    assert up.a.connections == [] and up.b.connections == []


@pytest.mark.parametrize(
    "target",
    [b"/resp/cl-te", b"/resp/1.0-te", b"/resp/bad-cl", b"/resp/two-cl"],
)
def test_a_response_with_ambiguous_framing_becomes_502(up: Pair, target: bytes) -> None:
    answer = exchange(
        up.port, b"GET " + target + b" HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    )
    assert answer.status == 502
    assert answer.body == b"the upstream sent a malformed response\n"
    assert [(s.target, s.complete) for s in up.a.requests] == [(target, True)]  # not retried


def test_forwarded_request_never_carries_both_lengths() -> None:
    request = h11.Request(
        method="POST",
        target="/",
        headers=[("Host", "a"), ("Transfer-Encoding", "chunked"), ("Content-Length", "4")],
    )
    names = [k for k, _ in forwarded_request(request, "192.0.2.1").headers]
    assert b"transfer-encoding" in names and b"content-length" not in names
