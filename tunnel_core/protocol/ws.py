"""A minimal RFC 6455 framing layer, sans-I/O, for one binary byte stream.

We frame WebSocket messages ourselves (after an h11-parsed upgrade) instead of driving
``websockets``' protocol objects because the tunnel treats the WebSocket as a byte
pipe: it never needs message reassembly, text frames, extensions or UTF-8 checks, and
skipping those keeps the hot path to one header parse and one unmask per message.
Client-to-server payloads are masked as the RFC requires; ``websockets``' C
``apply_mask`` is used when importable, else an int XOR over the whole payload.

A server that answers the upgrade with :data:`ZERO_KEY_HEADER` gets frames masked with
the all-zero key (:data:`ZERO_KEY`), which a decoder need not apply: XOR with zero is
the identity. Masking exists so that a script in a browser cannot put chosen bytes on
the wire for an intermediary that does not speak WebSocket; this client runs no such
script, and its bytes travel inside TLS to a server whose certificate it pinned (or
checked), so no intermediary reads them. Unmasking in pure Python (the zipapp on a VM)
cost the server 4 CPU-s per GB received, about three quarters of its work.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable
from enum import IntEnum

from tunnel_core.errors import FrameError

_c_apply_mask: Callable[[bytes | memoryview, bytes], bytes] | None
try:
    from websockets.speedups import apply_mask as _c_apply_mask
except ImportError:  # websockets is not installed (the zipapp does not carry it)
    _c_apply_mask = None

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEFAULT_MAX_MESSAGE = 4 << 20
#: The masking key a decoder skips (a valid key: the frame stays an RFC 6455 frame).
ZERO_KEY = bytes(4)
#: In the server's 101 answer: "send me frames with the zero key".
ZERO_KEY_HEADER = ("tunnel-core-masking", "zero-key")
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


def apply_mask(data: bytes | memoryview, mask: bytes) -> bytes:
    if _c_apply_mask is not None:
        return bytes(_c_apply_mask(data, mask))
    n = len(data)
    if not n:
        return b""
    repeated = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def encode(opcode: Opcode, payload: bytes, *, mask: bool, zero_key: bool = False) -> bytes:
    """One final frame; ``mask`` is True exactly on the client side."""
    return b"".join(encode_chunks(opcode, [payload], len(payload), mask=mask, zero_key=zero_key))


def encode_chunks(
    opcode: Opcode, chunks: list[bytes], size: int, *, mask: bool, zero_key: bool = False
) -> list[bytes]:
    """One final frame whose payload is ``chunks`` joined (``size`` bytes), as pieces.

    Unmasked, or masked with the zero key (``zero_key``, which the server asked for),
    the pieces are the header and the chunks themselves (no copy; write them with
    ``writelines``); masked with a random key, the payload is joined once and masked.
    """
    first = 0x80 | opcode
    bit = 0x80 if mask else 0
    if size < 126:
        header = bytes((first, bit | size))
    elif size < 1 << 16:
        header = bytes((first, bit | 126)) + _U16.pack(size)
    else:
        header = bytes((first, bit | 127)) + _U64.pack(size)
    if not mask:
        return [header, *chunks]
    if zero_key:
        return [header + ZERO_KEY, *chunks]
    key = _mask_keys.next()
    return [header + key, apply_mask(b"".join(chunks), key)]


class _MaskKeys:
    """Masking keys from the kernel's CSPRNG, fetched 4 KiB at a time.

    RFC 6455 wants each key unpredictable, from a strong source of entropy; that is what
    ``os.urandom`` is, but one call per message was a ``getrandom`` syscall per message
    on the client. Slices of one larger read are just as unpredictable.
    """

    __slots__ = ("_pool", "_pos")

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        if self._pos >= len(self._pool):
            self._pool, self._pos = os.urandom(4096), 0
        key = self._pool[self._pos : self._pos + 4]
        self._pos += 4
        return key


_mask_keys = _MaskKeys()


def close_payload(code: int, reason: str = "") -> bytes:
    return _U16.pack(code) + reason.encode()[:120]


def _header(buf: bytes | bytearray | memoryview, pos: int, end: int) -> tuple[int, ...] | None:
    """(header size, fin+opcode byte, masked, payload length) or None if incomplete."""
    if end - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length, size = b1 & 0x7F, 2
    if length == 126:
        size = 4
    elif length == 127:
        size = 10
    masked = b1 >> 7
    if end - pos < size + 4 * masked:
        return None
    if length == 126:
        (length,) = _U16.unpack_from(buf, pos + 2)
    elif length == 127:
        (length,) = _U64.unpack_from(buf, pos + 2)
    return size + 4 * masked, b0, masked, length


class WsDecoder:
    """Parses frames into (binary payload pieces, control frames). Errors are final.

    Payloads are passed on as they arrive, never reassembled: the tunnel reads the
    binary frames as one byte stream, so the decoder only ever holds a header or a
    small control frame, and unmasked pieces are zero-copy views of the input.
    """

    def __init__(self, *, expect_mask: bool, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.expect_mask = expect_mask
        self.max_message = max_message
        self._head = bytearray()  # a header split across feeds
        self._opcode = Opcode.BINARY
        self._left = 0  # payload bytes of the current frame still to come
        self._key = b""
        self._offset = 0  # payload bytes of the current frame already seen (mask phase)
        self._control = bytearray()
        self._in_message = False  # a fragmented data message awaits its CONTINUATIONs
        self._error: FrameError | None = None

    def feed(
        self, data: bytes | memoryview
    ) -> tuple[list[bytes | memoryview], list[tuple[Opcode, bytes]]]:
        """Return the data payload pieces and the control frames of ``data``.

        Data and control frames are returned separately; that loses nothing because
        control frames never carry tunnel bytes.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._feed(memoryview(data))
        except FrameError as exc:
            self._error = exc
            raise

    def _feed(
        self, view: memoryview
    ) -> tuple[list[bytes | memoryview], list[tuple[Opcode, bytes]]]:
        payloads: list[bytes | memoryview] = []
        controls: list[tuple[Opcode, bytes]] = []
        pos, end = 0, len(view)
        while pos < end:
            if self._left:
                n = min(self._left, end - pos)
                piece: bytes | memoryview = view[pos : pos + n]
                if self._key:
                    phase = self._offset % 4
                    piece = apply_mask(piece, self._key[phase:] + self._key[:phase])
                pos += n
                self._left -= n
                self._offset += n
                if self._opcode in _DATA_OPCODES:
                    payloads.append(piece)
                else:
                    self._control += piece
            elif self._head:
                old = len(self._head)
                self._head += view[pos : pos + 14]
                parsed = _header(self._head, 0, len(self._head))
                if parsed is None:
                    pos = end
                    continue
                pos += parsed[0] - old
                self._start(self._head, 0, parsed)
                self._head.clear()
            else:
                parsed = _header(view, pos, end)
                if parsed is None:
                    self._head += view[pos:end]
                    break
                self._start(view, pos, parsed)
                pos += parsed[0]
            if not self._left and self._opcode not in _DATA_OPCODES:  # a whole control frame
                controls.append((self._opcode, bytes(self._control)))
                self._control.clear()
                self._opcode = Opcode.BINARY
        return payloads, controls

    def _start(
        self, buf: bytes | bytearray | memoryview, pos: int, parsed: tuple[int, ...]
    ) -> None:
        size, b0, masked, length = parsed
        if b0 & 0x70:
            raise FrameError("WebSocket extension bits set without an extension")
        opcode = _OPCODES.get(b0 & 0x0F)
        if opcode is None or opcode is Opcode.TEXT:
            raise FrameError(f"unsupported WebSocket opcode {b0 & 0x0F}")
        if bool(masked) != self.expect_mask:
            raise FrameError("WebSocket masking is wrong for this direction")
        if opcode not in _DATA_OPCODES and (length > 125 or not b0 & 0x80):
            raise FrameError("WebSocket control frame too long or fragmented")
        if length > self.max_message:
            raise FrameError(f"WebSocket frame of {length} bytes is too large")
        if opcode in _DATA_OPCODES:
            if (opcode is Opcode.CONTINUATION) != self._in_message:
                raise FrameError(
                    "WebSocket CONTINUATION without a message started"
                    if opcode is Opcode.CONTINUATION
                    else "WebSocket message started inside a fragmented one"
                )
            self._in_message = not b0 & 0x80
        self._opcode = opcode
        self._left = length
        self._offset = 0
        key = bytes(buf[pos + size - 4 : pos + size]) if masked else b""
        self._key = b"" if key == ZERO_KEY else key  # XOR with zero changes nothing
