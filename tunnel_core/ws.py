"""A minimal RFC 6455 framing layer, sans-I/O, for one binary byte stream.

We frame WebSocket messages ourselves (after an h11-parsed upgrade) instead of driving
``websockets``' protocol objects because the tunnel treats the WebSocket as a byte
pipe: it never needs message reassembly, text frames, extensions or UTF-8 checks, and
skipping those keeps the hot path to one header parse and one unmask per message.
Client-to-server payloads are masked as the RFC requires; ``websockets``' C
``apply_mask`` is used when importable, else an int XOR over the whole payload.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable
from enum import IntEnum

from .errors import FrameError
from .frames import keep_rest, stage

_c_apply_mask: Callable[[bytes, bytes], bytes] | None
try:
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # pure-Python websockets (e.g. inside the zipapp)
    _c_apply_mask = None

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_MAX_MESSAGE = 4 << 20
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class Opcode(IntEnum):
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_DATA_OPCODES = frozenset({Opcode.CONTINUATION, Opcode.BINARY})
_OPCODES = {o.value: o for o in Opcode}


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def apply_mask(data: bytes, mask: bytes) -> bytes:
    if _c_apply_mask is not None:
        return bytes(_c_apply_mask(data, mask))
    n = len(data)
    if not n:
        return b""
    repeated = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode(opcode: Opcode, payload: bytes, *, mask: bool) -> bytes:
    """One final frame; ``mask`` is True exactly on the client side."""
    return encode_chunks(opcode, [payload], len(payload), mask=mask)


def encode_chunks(opcode: Opcode, chunks: list[bytes], size: int, *, mask: bool) -> bytes:
    """One final frame whose payload is ``chunks`` joined (``size`` bytes), copied once."""
    first = 0x80 | opcode
    bit = 0x80 if mask else 0
    if size < 126:
        header = bytes((first, bit | size))
    elif size < 1 << 16:
        header = bytes((first, bit | 126)) + _U16.pack(size)
    else:
        header = bytes((first, bit | 127)) + _U64.pack(size)
    if not mask:
        return b"".join([header, *chunks])
    key = os.urandom(4)
    return header + key + apply_mask(b"".join(chunks), key)


def close_payload(code: int, reason: str = "") -> bytes:
    return _U16.pack(code) + reason.encode()[:120]


class WsDecoder:
    """Parses frames; returns (binary stream bytes, control frames). Errors are final."""

    def __init__(self, *, expect_mask: bool, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.expect_mask = expect_mask
        self.max_message = max_message
        self._buf = bytearray()
        self._error: FrameError | None = None

    def feed(self, data: bytes) -> tuple[list[bytes], list[tuple[Opcode, bytes]]]:
        """Return the payloads of data frames and the control frames, in order of arrival.

        Data and control frames are returned separately; that loses nothing because
        control frames never carry tunnel bytes.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        src = stage(buf, data)
        payloads: list[bytes] = []
        controls: list[tuple[Opcode, bytes]] = []
        pos, end = 0, len(src)
        try:
            while end - pos >= 2:
                b0, b1 = src[pos], src[pos + 1]
                if b0 & 0x70:
                    raise FrameError("WebSocket extension bits set without an extension")
                opcode = _OPCODES.get(b0 & 0x0F)
                if opcode is None or opcode is Opcode.TEXT:
                    raise FrameError(f"unsupported WebSocket opcode {b0 & 0x0F}")
                masked = bool(b1 & 0x80)
                if masked != self.expect_mask:
                    raise FrameError("WebSocket masking is wrong for this direction")
                length = b1 & 0x7F
                head = pos + 2
                if length == 126:
                    if end - head < 2:
                        break
                    (length,) = _U16.unpack_from(src, head)
                    head += 2
                elif length == 127:
                    if end - head < 8:
                        break
                    (length,) = _U64.unpack_from(src, head)
                    head += 8
                if opcode not in _DATA_OPCODES and (length > 125 or not b0 & 0x80):
                    raise FrameError("WebSocket control frame too long or fragmented")
                if length > self.max_message:
                    raise FrameError(f"WebSocket frame of {length} bytes is too large")
                key = b""
                if masked:
                    if end - head < 4:
                        break
                    key = bytes(src[head : head + 4])
                    head += 4
                stop = head + length
                if stop > end:
                    break
                payload = bytes(src[head:stop])
                if masked:
                    payload = apply_mask(payload, key)
                if opcode in _DATA_OPCODES:
                    if payload:
                        payloads.append(payload)
                else:
                    controls.append((opcode, payload))
                pos = stop
        except FrameError as exc:
            self._error = exc
            raise
        keep_rest(buf, src, data, pos)
        return payloads, controls
