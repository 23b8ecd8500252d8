"""The mux after the hardening issue: negotiated windows, the ERROR state, edge frames."""

from __future__ import annotations

import pytest

from tunnel_core.errors import LocalProtocolError, RemoteProtocolError
from tunnel_core.protocol.frames import Frame, FrameType, data_header
from tunnel_core.protocol.mux import (
    DEFAULT_WINDOW,
    Hello,
    Mux,
    Role,
    StreamData,
    Welcome,
)


def pair(server_window: int, client_window: int) -> tuple[Mux, Mux]:
    server = Mux(Role.SERVER, initial_window=server_window, max_data_frame=300)
    client = Mux(Role.CLIENT, initial_window=client_window, max_data_frame=300)
    client.send_hello({"mode": "tcp"})
    server.receive_data(b"".join(client.data_to_send()))
    server.send_welcome({"ok": True})
    client.receive_data(b"".join(server.data_to_send()))
    return server, client


def test_each_side_sends_within_the_window_the_other_announced():
    """Before: each side assumed its own window for both directions, so sides that
    differed dropped each other ("peer sent beyond its credit")."""
    server, client = pair(server_window=1000, client_window=5000)
    assert server.peer_window == 5000 and client.peer_window == 1000
    sid = server.open_stream({})
    assert server.credit(sid) == 5000
    assert server.send_data(sid, b"s" * 6000) == 5000
    client.receive_data(b"".join(server.data_to_send()))  # within the client's window
    assert client.credit(sid) == 1000
    assert client.send_data(sid, b"c" * 2000) == 1000
    server.receive_data(b"".join(client.data_to_send()))  # within the server's window


def test_a_peer_that_announces_no_window_is_taken_to_use_ours():
    server = Mux(Role.SERVER, initial_window=1000)
    server.receive_data(Frame(FrameType.HELLO, 0, b'{"mode":"tcp"}').serialize())
    assert server.events_received() == [Hello({"mode": "tcp"})]
    assert server.peer_window == 1000
    assert Mux(Role.CLIENT).peer_window == DEFAULT_WINDOW


@pytest.mark.parametrize("window", ["1", 0, -5, 1 << 31, True, 2.5])
def test_a_bad_announced_window_is_a_remote_error(window):
    client = Mux(Role.CLIENT)
    client.send_hello({})
    bad = Frame(FrameType.WELCOME, 0, b'{"ok":true,"window":%s}' % _json(window))
    with pytest.raises(RemoteProtocolError, match="window must be an integer"):
        client.receive_data(bad.serialize())


def _json(value: object) -> bytes:
    import json

    return json.dumps(value).encode()


def test_after_a_remote_error_the_mux_is_in_error_and_stays_there():
    """As h11: any RemoteProtocolError puts the connection into ERROR."""
    server, client = pair(4096, 4096)
    sid = server.open_stream({})
    server.data_to_send()
    with pytest.raises(RemoteProtocolError) as first:
        server.receive_data(Frame(FrameType.OPEN, 2, b"{}").serialize())  # wrong parity
    assert server.error is first.value
    with pytest.raises(RemoteProtocolError) as again:
        server.receive_data(Frame(FrameType.PING, 0).serialize())  # even a fine frame
    assert again.value is first.value
    with pytest.raises(LocalProtocolError, match="ERROR state"):
        server.send_data(sid, b"x")
    with pytest.raises(LocalProtocolError, match="ERROR state"):
        server.open_stream({})
    server.reset(sid)  # races with the teardown are no-ops
    server.consumed(sid, 10_000)
    server.ping()
    assert server.data_to_send() == []


def test_data_after_the_peers_eof_is_a_remote_error():
    server, client = pair(4096, 4096)
    sid = server.open_stream({})
    client.receive_data(b"".join(server.data_to_send()))
    client.send_eof(sid)
    server.receive_data(b"".join(client.data_to_send()))
    with pytest.raises(RemoteProtocolError, match="DATA after the peer's EOF"):
        server.receive_data(data_header(sid, 1) + b"x")


def test_an_empty_data_frame_makes_no_event():
    server, client = pair(4096, 4096)
    sid = server.open_stream({})
    client.receive_data(b"".join(server.data_to_send()))
    client.events_received()
    client.receive_data(data_header(sid, 0) + data_header(sid, 2) + b"hi")
    assert client.events_received() == [StreamData(sid, b"hi")]


@pytest.mark.parametrize("ok", ['"yes"', "1", "null"])
def test_a_welcome_whose_ok_is_not_a_boolean_is_a_remote_error(ok):
    client = Mux(Role.CLIENT)
    client.send_hello({})
    frame = Frame(FrameType.WELCOME, 0, b'{"ok":%s}' % ok.encode())
    with pytest.raises(RemoteProtocolError, match="'ok' must be true or false"):
        client.receive_data(frame.serialize())
    assert Welcome  # the event type exists; it is never built from such a frame
