"""The WebSocket codec's masking: random keys by default, the zero key when asked."""

from __future__ import annotations

import os

from tunnel_core.protocol import ws


def test_a_zero_key_frame_is_a_masked_frame_passed_on_without_a_copy():
    payload = os.urandom(70_000)
    frame = ws.encode(ws.Opcode.BINARY, payload, mask=True, zero_key=True)
    assert frame[1] & 0x80 and frame[10:14] == ws.ZERO_KEY  # 127 + 8-byte length, then key
    pieces, controls = ws.WsDecoder(expect_mask=True).feed(frame)
    assert b"".join(pieces) == payload and not controls
    assert all(isinstance(p, memoryview) for p in pieces)  # views of the input: no XOR


def test_a_random_key_frame_is_unmasked():
    payload = os.urandom(1000)
    frame = ws.encode(ws.Opcode.BINARY, payload, mask=True)
    key = frame[4:8]
    assert key != ws.ZERO_KEY and frame[8:] != payload
    pieces, _ = ws.WsDecoder(expect_mask=True).feed(frame)
    assert b"".join(pieces) == payload


def test_the_zero_key_changes_nothing_on_the_server_side():
    payload = b"x" * 200
    assert ws.encode(ws.Opcode.BINARY, payload, mask=False, zero_key=True) == ws.encode(
        ws.Opcode.BINARY, payload, mask=False
    )
