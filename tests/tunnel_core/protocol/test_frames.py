import pytest
from hypothesis import given, settings, strategies as st

from tunnel_core.errors import FrameError, LocalProtocolError
from tunnel_core.protocol import ws
from tunnel_core.protocol.frames import (
    HEADER,
    Frame,
    FrameDecoder,
    FrameType,
    json_payload,
    window_frame,
)
from tunnel_core.protocol.ws import Opcode, WsDecoder, apply_mask, encode


def frames_strategy() -> st.SearchStrategy[Frame]:
    stream_id = st.integers(1, 2**32 - 1)
    obj = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=10), max_size=4)
    return st.one_of(
        st.builds(lambda s, p: Frame(FrameType.DATA, s, p), stream_id, st.binary(max_size=300)),
        st.builds(lambda s: Frame(FrameType.EOF, s), stream_id),
        st.builds(lambda s, r: Frame(FrameType.RESET, s, r.encode()), stream_id, st.text()),
        st.builds(
            lambda s, n: Frame(FrameType.WINDOW, s, n.to_bytes(4, "big")),
            stream_id,
            st.integers(1, 2**32 - 1),
        ),
        st.builds(lambda s, d: Frame(FrameType.OPEN, s, json_payload(d)), stream_id, obj),
        st.builds(lambda d: Frame(FrameType.HELLO, 0, json_payload(d)), obj),
        st.builds(lambda d: Frame(FrameType.WELCOME, 0, json_payload(d)), obj),
        st.builds(lambda p: Frame(FrameType.PING, 0, p), st.binary(max_size=20)),
        st.builds(lambda r: Frame(FrameType.GOAWAY, 0, r.encode()), st.text(max_size=20)),
    )


def merged(frames: list[Frame]) -> list[Frame]:
    """Consecutive DATA of one stream as one frame: the decoder may split DATA payloads."""
    out: list[Frame] = []
    for frame in frames:
        last = out[-1] if out else None
        if last and frame.type is last.type is FrameType.DATA and frame.stream_id == last.stream_id:
            out[-1] = Frame(FrameType.DATA, frame.stream_id, last.payload + frame.payload)
        else:
            out.append(frame)
    return out


@settings(deadline=None)  # the machine may be busy; speed is not under test
@given(st.lists(frames_strategy(), max_size=20), st.integers(1, 64))
def test_frames_round_trip_however_the_bytes_are_split(frames, step):
    wire = b"".join(f.serialize() for f in frames)
    decoder = FrameDecoder()
    out = []
    for pos in range(0, len(wire), step):
        out += decoder.feed(memoryview(wire)[pos : pos + step])
    assert merged(out) == merged(frames)
    assert decoder.buffered == 0
    assert FrameDecoder().feed(wire) == frames  # fed whole, frames come out whole


@settings(deadline=None)  # the machine may be busy; speed is not under test
@given(st.binary(max_size=400))
def test_garbage_raises_only_the_codecs_error(data):
    decoder = FrameDecoder(max_payload=1024)
    try:
        decoder.feed(data)
    except FrameError:
        with pytest.raises(FrameError):  # an error is final
            decoder.feed(b"")


@pytest.mark.parametrize(
    "raw",
    [
        HEADER.pack(99, 1, 0),  # unknown type
        HEADER.pack(FrameType.DATA, 0, 1) + b"x",  # DATA on the connection
        HEADER.pack(FrameType.HELLO, 3, 2) + b"{}",  # HELLO on a stream
        HEADER.pack(FrameType.OPEN, 1, 3) + b"[1]",  # metadata not an object
        HEADER.pack(FrameType.OPEN, 1, 1) + b"{",  # not JSON
        window_frame(1, 1)[:-4].replace(b"\x00\x00\x00\x04", b"\x00\x00\x00\x03") + b"abc",
        HEADER.pack(FrameType.WINDOW, 1, 4) + b"\0\0\0\0",  # zero increment
        HEADER.pack(FrameType.EOF, 1, 1) + b"x",
        HEADER.pack(FrameType.DATA, 1, 1 << 17),  # longer than the decoder allows
        HEADER.pack(FrameType.HELLO, 0, 1000) + b"[" * 1000,  # nesting deeper than json allows
    ],
)
def test_malformed_frames_are_rejected(raw):
    with pytest.raises(FrameError):
        FrameDecoder(max_payload=1024 * 64).feed(raw)


def test_constructor_refuses_illegal_frames():
    with pytest.raises(LocalProtocolError):
        Frame(FrameType.DATA, 0, b"x")
    with pytest.raises(LocalProtocolError):
        Frame(FrameType.WINDOW, 1, b"\0\0\0\0")


@settings(deadline=None)  # the machine may be busy; speed is not under test
@given(st.lists(st.binary(max_size=300), max_size=4), st.booleans(), st.integers(1, 5000))
def test_websocket_frames_round_trip(payloads, masked, step):
    wire = b"".join(encode(Opcode.BINARY, p, mask=masked) for p in payloads)
    decoder = WsDecoder(expect_mask=masked)
    got: list[bytes] = []
    for pos in range(0, len(wire), step):
        data, controls = decoder.feed(wire[pos : pos + step])
        got += data
        assert controls == []
    assert b"".join(got) == b"".join(payloads)


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 300000])
def test_websocket_length_encodings(size):
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert WsDecoder(expect_mask=True).feed(encode(Opcode.BINARY, payload, mask=True)) == (
        [payload],
        [],
    )


@settings(deadline=None)  # the machine may be busy; speed is not under test
@given(st.binary(max_size=300), st.booleans())
def test_websocket_garbage_raises_only_frame_error(data, masked):
    try:
        WsDecoder(expect_mask=masked, max_message=1024).feed(data)
    except FrameError:
        pass


def test_websocket_refuses_unmasked_client_frames_and_text():
    with pytest.raises(FrameError):
        WsDecoder(expect_mask=True).feed(encode(Opcode.BINARY, b"x", mask=False))
    with pytest.raises(FrameError):
        WsDecoder(expect_mask=False).feed(encode(Opcode.TEXT, b"x", mask=False))


@settings(deadline=None)  # the machine may be busy; speed is not under test
@given(st.binary(max_size=100), st.binary(min_size=4, max_size=4))
def test_mask_is_an_involution_and_matches_the_rfc(data, key):
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert apply_mask(data, key) == expected
    assert apply_mask(expected, key) == data
    c_mask, ws._c_apply_mask = ws._c_apply_mask, None  # the zipapp's pure-Python path
    try:
        assert apply_mask(data, key) == expected
    finally:
        ws._c_apply_mask = c_mask


def test_the_fast_open_and_eof_frames_are_the_frames_a_frame_object_makes():
    from tunnel_core.errors import LocalProtocolError
    from tunnel_core.protocol.frames import MAX_JSON, eof_frame, json_payload, open_frame

    meta = {"port": 8000, "remote": "[::1]:40000", "local": "127.0.0.1:8000"}
    assert open_frame(5, meta) == Frame(FrameType.OPEN, 5, json_payload(meta)).serialize()
    assert eof_frame(5) == Frame(FrameType.EOF, 5).serialize()
    with pytest.raises(LocalProtocolError, match="larger than"):
        open_frame(5, {"x": "y" * MAX_JSON})


def test_masking_keys_come_fresh_from_the_pool_and_it_refills():
    from tunnel_core.protocol.ws import _MaskKeys

    keys = _MaskKeys()
    drawn = [keys.next() for _ in range(3 * 1024)]  # three 4 KiB pools
    assert all(len(k) == 4 for k in drawn)
    assert len(set(drawn)) > 3000  # 32-bit keys from the CSPRNG: collisions are rare
    assert drawn[:1024] != drawn[1024:2048]
