import pytest

from tunnel_core.errors import LocalProtocolError, RemoteProtocolError
from tunnel_core.protocol.frames import HEADER, Frame, FrameType, data_header, window_frame
from tunnel_core.protocol.mux import (
    CreditAvailable,
    Hello,
    Mux,
    PongReceived,
    Role,
    StreamData,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    Welcome,
)


def ready(role: Role, **kwargs: int) -> Mux:
    """A mux past HELLO and WELCOME (what its peer sent is discarded)."""
    mux = Mux(role, **kwargs)
    if role is Role.SERVER:
        mux.receive_data(Frame(FrameType.HELLO, 0, b"{}").serialize())
        mux.send_welcome({"ok": True})
    else:
        mux.send_hello({})
        mux.receive_data(Frame(FrameType.WELCOME, 0, b'{"ok":true}').serialize())
    mux.events_received()
    mux.data_to_send()
    return mux


class MuxPair:
    """Two in-memory muxes joined by a fake link, past HELLO and WELCOME."""

    def __init__(self, window: int = 1000, frame: int = 300, handshake: bool = True) -> None:
        self.server = Mux(Role.SERVER, initial_window=window, max_data_frame=frame)
        self.client = Mux(Role.CLIENT, initial_window=window, max_data_frame=frame)
        if handshake:
            self.client.send_hello({})
            self.to_server()
            self.server.send_welcome({"ok": True})
            self.to_client()

    def to_client(self) -> list:
        self.client.receive_data(b"".join(self.server.data_to_send()))
        return self.client.events_received()

    def to_server(self) -> list:
        self.server.receive_data(b"".join(self.client.data_to_send()))
        return self.server.events_received()


def test_hello_welcome_and_open_carry_json():
    pair = MuxPair(handshake=False)
    pair.client.send_hello({"mode": "tcp", "ports": [8000]})
    assert pair.to_server() == [Hello({"mode": "tcp", "ports": [8000], "window": 1000})]
    pair.server.send_welcome({"ok": True})
    sid = pair.server.open_stream({"port": 8000})
    welcome = Welcome({"ok": True, "window": 1000})
    assert pair.to_client() == [welcome, StreamOpened(sid, {"port": 8000})]
    assert sid % 2 == 0


def test_data_is_split_and_limited_by_credit_then_window_reopens_it():
    pair = MuxPair(window=1000, frame=300)
    sid = pair.server.open_stream({})
    assert pair.server.send_data(sid, b"x" * 1500) == 1000
    assert pair.server.credit(sid) == 0
    events = pair.to_client()
    assert [len(e.data) for e in events if isinstance(e, StreamData)] == [300, 300, 300, 100]
    pair.client.consumed(sid, 200)  # below a quarter of the window: no WINDOW yet
    assert pair.client.data_to_send() == []
    pair.client.consumed(sid, 100)
    assert pair.to_server() == [CreditAvailable(sid, 300)]
    assert pair.server.send_data(sid, b"y" * 500) == 300


def test_peer_sending_beyond_credit_is_a_remote_error():
    pair = MuxPair(window=100)
    sid = pair.server.open_stream({})
    pair.to_client()
    with pytest.raises(RemoteProtocolError):
        pair.client.receive_data(data_header(sid, 101) + b"z" * 101)


def test_half_close_keeps_the_other_direction_open():
    pair = MuxPair()
    sid = pair.server.open_stream({})
    pair.to_client()
    pair.client.send_eof(sid)
    assert pair.to_server() == [StreamEnded(sid)]
    assert pair.server.state(sid) is StreamState.HALF_CLOSED_REMOTE
    pair.server.send_data(sid, b"reply")
    pair.server.send_eof(sid)
    assert pair.to_client() == [StreamData(sid, b"reply"), StreamEnded(sid)]
    assert pair.client.state(sid) is StreamState.CLOSED
    assert pair.server.state(sid) is StreamState.CLOSED
    with pytest.raises(LocalProtocolError):
        pair.server.send_data(sid, b"late")


def test_reset_closes_only_that_stream_and_late_frames_are_ignored():
    pair = MuxPair()
    a, b = pair.server.open_stream({}), pair.server.open_stream({})
    pair.to_client()
    pair.server.send_data(a, b"in flight")
    pair.client.reset(a, "upstream unreachable")
    pair.to_client()  # data for a stream the client already reset: ignored
    assert pair.to_server() == [StreamReset(a, "upstream unreachable")]
    pair.server.send_data(b, b"still fine")
    assert pair.to_client() == [StreamData(b, b"still fine")]
    assert pair.client.open_streams == pair.server.open_streams == 1


def test_frames_for_streams_never_opened_are_remote_errors():
    mux = ready(Role.CLIENT)
    with pytest.raises(RemoteProtocolError):
        mux.receive_data(data_header(8, 1) + b"x")
    mux = ready(Role.CLIENT)
    with pytest.raises(RemoteProtocolError):
        mux.receive_data(window_frame(2, 10))


def test_open_out_of_order_or_wrong_parity_is_a_remote_error():
    mux = ready(Role.CLIENT)
    with pytest.raises(RemoteProtocolError):
        mux.receive_data(HEADER.pack(FrameType.OPEN, 3, 2) + b"{}")  # odd ids are the client's
    mux = ready(Role.CLIENT)
    mux.receive_data(HEADER.pack(FrameType.OPEN, 4, 2) + b"{}")
    with pytest.raises(RemoteProtocolError):
        mux.receive_data(HEADER.pack(FrameType.OPEN, 2, 2) + b"{}")


def test_duplicate_eof_is_a_remote_error():
    pair = MuxPair()
    sid = pair.server.open_stream({})
    pair.to_client()
    eof = HEADER.pack(FrameType.EOF, sid, 0)
    pair.client.receive_data(eof)
    with pytest.raises(RemoteProtocolError):
        pair.client.receive_data(eof)


def test_ping_is_answered_with_pong():
    pair = MuxPair()
    pair.client.ping(b"abc")
    pair.to_server()
    assert pair.to_client() == [PongReceived(b"abc")]


def test_role_checks_on_hello_and_welcome():
    with pytest.raises(RemoteProtocolError):
        Mux(Role.CLIENT).receive_data(HEADER.pack(FrameType.HELLO, 0, 2) + b"{}")
    with pytest.raises(RemoteProtocolError):
        Mux(Role.SERVER).receive_data(HEADER.pack(FrameType.WELCOME, 0, 2) + b"{}")


def test_stream_limit_is_enforced_both_ways():
    mux = ready(Role.SERVER, max_streams=1)
    mux.open_stream({})
    with pytest.raises(LocalProtocolError):
        mux.open_stream({})
    mux = ready(Role.CLIENT, max_streams=1)
    mux.receive_data(HEADER.pack(FrameType.OPEN, 2, 2) + b"{}")
    with pytest.raises(RemoteProtocolError):
        mux.receive_data(HEADER.pack(FrameType.OPEN, 4, 2) + b"{}")


def test_window_and_reset_in_one_feed_leave_the_stream_closed_before_its_events_are_read():
    """The mux parses a whole feed before its driver reads the events: a WINDOW then a
    RESET of the same stream give CreditAvailable then StreamReset, but by then the
    stream is already closed, so a driver must check the state before sending."""
    pair = MuxPair(window=100, frame=100)
    a, b = pair.server.open_stream({}), pair.server.open_stream({})
    pair.to_client()
    assert pair.server.send_data(a, b"x" * 150) == 100  # out of credit: 50 bytes pending
    pair.to_client()
    pair.client.consumed(a, 100)  # WINDOW...
    pair.client.reset(a, "upstream closed")  # ...and RESET in the same outbox
    events = pair.to_server()
    assert events == [CreditAvailable(a, 100), StreamReset(a, "upstream closed")]
    assert pair.server.state(a) is StreamState.CLOSED
    assert pair.server.credit(a) == 0
    with pytest.raises(LocalProtocolError):
        pair.server.send_data(a, b"rest")
    pair.server.send_data(b, b"other stream")
    assert pair.to_client() == [StreamData(b, b"other stream")]
