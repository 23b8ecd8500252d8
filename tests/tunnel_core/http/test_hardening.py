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
from tests.tunnel_core.http.hostile import Answer, Recorder, connect, exchange, read_all
from tests.tunnel_core.http.test_tunnel import HttpServer, http_client, http_server
from tunnel_core.http.proxy import forwarded_request
from tunnel_core.http.public import source_of

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


# -- 6. Host handling -------------------------------------------------------------------------


def test_an_absolute_form_target_is_routed_by_its_authority_and_host_rewritten(up: Pair) -> None:
    answer = exchange(
        up.port,
        b"GET http://A.test/abs?q=1 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    assert answer.status == 200
    [seen] = up.a.requests
    assert seen.target == b"/abs?q=1"
    assert seen.header(b"host") == [b"A.test"] and seen.header(b"x-forwarded-host") == [b"A.test"]
    assert up.b.connections == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: a.test, b.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test/x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        b"GET http://b.test@a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET ftp://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET http://a.test/#frag HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ],
)
def test_an_invalid_host_gets_400_and_never_reaches_an_upstream(
    up: Pair, request_bytes: bytes
) -> None:
    answer = exchange(up.port, request_bytes)
    assert answer.status == 400 and not answer.reset
    assert up.a.connections == [] and up.b.connections == []


def test_http_1_0_with_transfer_encoding_gets_400_and_the_connection_closes(up: Pair) -> None:
    answer = exchange(
        up.port,
        b"POST /x HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n0\r\n\r\n",
    )
    assert answer.status == 400
    assert answer.body == b"Transfer-Encoding in an HTTP/1.0 request\n"
    assert up.a.connections == []


def test_x_forwarded_proto_and_host_are_ours_and_the_for_chain_is_appended(up: Pair) -> None:
    answer = exchange(
        up.port,
        b"GET /xf HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: evil.test\r\nX-Forwarded-For: 203.0.113.1\r\n"
        b"X-Forwarded-For: 203.0.113.2\r\nConnection: close\r\n\r\n",
    )
    assert answer.status == 200
    [seen] = up.a.requests
    assert seen.header(b"x-forwarded-proto") == [b"http"]
    assert seen.header(b"x-forwarded-host") == [b"a.test"]
    assert seen.header(b"x-forwarded-for") == [b"203.0.113.1, 203.0.113.2, 127.0.0.1"]


# -- 8. Connection tokens, broken bodies ------------------------------------------------------


def test_connection_naming_host_is_ignored_for_host(up: Pair) -> None:
    answer = exchange(up.port, b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close, Host\r\n\r\n")
    assert answer.status == 200
    [seen] = up.a.requests
    assert seen.header(b"host") == [b"a.test"]


def test_connection_naming_content_length_keeps_the_body(up: Pair) -> None:
    answer = exchange(
        up.port,
        b"POST /x HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n"
        b"Connection: close, content-length\r\n\r\nhello",
    )
    assert answer.status == 200
    [seen] = up.a.requests
    assert (seen.header(b"content-length"), bytes(seen.body), seen.complete) == (
        [b"5"],
        b"hello",
        True,
    )


def test_a_response_naming_content_length_in_connection_keeps_it(up: Pair) -> None:
    answer = exchange(
        up.port, b"GET /resp/conn-cl HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    )
    head, _, body = answer.data.partition(b"\r\n\r\n")
    assert answer.status == 200 and b"\r\ncontent-length: 5\r\n" in head.lower()
    assert body == b"hello"


def test_a_bad_chunk_after_the_head_was_forwarded_gets_400_and_aborts_the_upstream(
    up: Pair,
) -> None:
    with connect(up.port) as sock:
        sock.sendall(
            b"POST /x HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        up.a.wait(lambda: any(len(s.body) == 5 for s in up.a.requests))
        sock.sendall(b"zz\r\n")
        answer = read_all(sock)
    assert answer.status == 400 and not answer.reset
    assert answer.body.startswith(b"illegal chunk header")
    up.a.wait(lambda: all(c.closed for c in up.a.connections))
    [seen] = up.a.requests
    assert (bytes(seen.body), seen.complete) == (b"hello", False)  # never a whole request


@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_a_response_cut_off_by_the_upstream_resets_the_public_connection(
    up: Pair, version: bytes
) -> None:
    answer = exchange(
        up.port,
        b"GET /resp/truncated HTTP/" + version + b"\r\nHost: a.test\r\nConnection: close\r\n\r\n",
    )
    assert answer.reset  # not a clean close after "only part"


# -- 7. public-port exhaustion ----------------------------------------------------------------

PER_IP = 4
#: a front proxy on the exit server, as Caddy is for HTTPS (on 127.0.0.1 there)
PROXY = "127.0.0.6"


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A server with small limits. The idle timeout (30 s) is longer than every socket
    timeout below, so a connection closed by it instead of the header deadline fails."""
    engine = Engine(tmp_path_factory.mktemp("limited"))
    a, b = Recorder("a"), Recorder("b")
    try:
        server = http_server(
            engine, "--max-connections-per-ip", str(PER_IP), "--header-timeout", "1",
            "--idle-timeout", "30", "--min-body-rate", "2000", "--body-rate-window", "0.5",
            "--trusted-proxy", f"{PROXY}/32",
        )  # fmt: skip
        http_client(engine, server, f"a.test={a.url}", b.url)
        server.wait_clients(1)
        yield Pair(server, a, b)
    finally:
        engine.stop_all()
        a.close()
        b.close()


GET = b"GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"


def test_one_source_holds_only_its_share_and_idle_ones_go_at_the_header_deadline(
    limited: Pair,
) -> None:
    held = [connect(limited.port, "127.0.0.3") for _ in range(PER_IP)]
    try:
        extra = exchange(limited.port, GET, source="127.0.0.3")
        assert extra.status == 429 and extra.body == b"too many connections from your address\n"
        assert exchange(limited.port, GET, source="127.0.0.4").status == 200  # others are served
        for sock in held:  # not a byte sent: closed quietly 1 s after accept, not after 30 s
            sock.settimeout(15)
            assert read_all(sock) == Answer(b"", False)
    finally:
        for sock in held:
            sock.close()
    assert exchange(limited.port, GET, source="127.0.0.3").status == 200  # its share is back


def test_a_trusted_front_proxy_has_no_per_ip_share_and_keeps_its_forwarded_headers(
    limited: Pair,
) -> None:
    limited.clear()
    held = [connect(limited.port, PROXY) for _ in range(PER_IP)]
    try:
        proxied = (
            b"GET /p HTTP/1.1\r\nHost: a.test\r\nX-Forwarded-Proto: https\r\n"
            b"X-Forwarded-For: 198.51.100.7\r\nConnection: close\r\n\r\n"
        )
        assert exchange(limited.port, proxied, source=PROXY).status == 200
        claimed = proxied.replace(b"/p ", b"/q ")
        assert exchange(limited.port, claimed, source="127.0.0.5").status == 200
    finally:
        for sock in held:
            sock.close()
    by_target = {r.target: r for c in limited.a.connections for r in c.requests}
    assert by_target[b"/p"].header(b"x-forwarded-proto") == [b"https"]
    assert by_target[b"/p"].header(b"x-forwarded-for") == [f"198.51.100.7, {PROXY}".encode()]
    assert by_target[b"/q"].header(b"x-forwarded-proto") == [b"http"], "a client's claim"


def test_a_body_dripping_below_the_minimum_rate_gets_408(limited: Pair) -> None:
    limited.clear()
    with connect(limited.port, "127.0.0.5") as sock:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: a.test\r\nContent-Length: 100000\r\n\r\n")
        sock.settimeout(0.1)  # one byte per 0.1 s, until the server answers
        answer = b""
        for _ in range(150):  # 15 s: well past the 1 s header deadline, short of the 30 s idle
            sock.sendall(b"x")
            try:
                answer = sock.recv(65536)
                break
            except TimeoutError:
                continue
        sock.settimeout(15)
        rest = read_all(sock)
    assert (answer + rest.data).startswith(b"HTTP/1.1 408 ")
    assert (answer + rest.data).endswith(b"\r\n\r\nrequest body too slow\n")
    limited.a.wait(lambda: all(c.closed for c in limited.a.connections))
    [seen] = limited.a.requests
    assert not seen.complete and len(seen.body) < 100000


def test_a_body_at_a_normal_rate_passes_the_minimum_rate(limited: Pair) -> None:
    limited.clear()
    body = bytes(range(256)) * 8192  # 2 MiB in one go
    answer = exchange(
        limited.port,
        b"POST /fast HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % len(body),
        body,
    )
    assert answer.status == 200
    [seen] = limited.a.requests
    assert seen.complete and bytes(seen.body) == body


def test_source_of_counts_ipv6_by_its_64() -> None:
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("2001:db8:1:2:aaaa::1") == source_of("2001:db8:1:2:bbbb::2")
    assert source_of("2001:db8:1:2::1") != source_of("2001:db8:1:3::1")


def test_a_bad_chunk_after_an_early_response_head_resets_both_legs_at_once(up: Pair) -> None:
    with connect(up.port) as sock:
        sock.sendall(
            b"POST /early HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        got = b""
        while b"early\r\n" not in got:  # the upstream answered before the body was in
            got += sock.recv(65536)
        up.a.wait(lambda: any(len(s.body) == 5 for s in up.a.requests))
        sock.sendall(b"zz\r\n")
        answer = read_all(sock)  # at once, not after the 60 s idle timeout
    assert answer.reset and b"0\r\n\r\n" not in got + answer.data
    up.a.wait(lambda: all(c.closed for c in up.a.connections))
    [seen] = up.a.requests
    assert not seen.complete
