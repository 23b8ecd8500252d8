"""The mux frame codec: sans-I/O, bytes in and frames out, nothing else.

Every frame is a 9-byte header ``!BII`` (type, stream id, payload length) and the
payload. The WebSocket layer carries a byte stream of these frames; WebSocket message
boundaries carry no meaning, so many small frames can share one message and the
decoder never depends on how the transport split the bytes.

The decoder raises only :class:`FrameError`, whatever bytes it is given, so a driver
can drop a misbehaving peer with one ``except``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from tunnel_core.errors import FrameError, LocalProtocolError

HEADER = struct.Struct("!BII")
HEADER_SIZE = HEADER.size
WINDOW_PAYLOAD = struct.Struct("!I")
#: Largest payload a decoder accepts by default; DATA is split well below this.
DEFAULT_MAX_PAYLOAD = 1 << 20
#: Largest JSON document (hello, welcome, open metadata) we accept.
MAX_JSON = 64 * 1024


class FrameType(IntEnum):
    """Frame types; 1-2 and 8-10 are connection-level (stream 0), 3-7 per stream."""

    HELLO = 1
    WELCOME = 2
    OPEN = 3
    DATA = 4
    EOF = 5
    RESET = 6
    WINDOW = 7
    PING = 8
    PONG = 9
    GOAWAY = 10


CONNECTION_TYPES = frozenset(
    {FrameType.HELLO, FrameType.WELCOME, FrameType.PING, FrameType.PONG, FrameType.GOAWAY}
)
_TYPES = {t.value: t for t in FrameType}


def _problem(ftype: FrameType, stream_id: int, payload: bytes, max_payload: int) -> str | None:
    """Why a frame is malformed, or None; shared by the constructor and the decoder."""
    if len(payload) > max_payload:
        return f"payload of {len(payload)} bytes exceeds {max_payload}"
    if not 0 <= stream_id < 1 << 32:
        return f"stream id {stream_id} out of range"
    if (ftype in CONNECTION_TYPES) != (stream_id == 0):
        return f"{ftype.name} frame on stream {stream_id}"
    if ftype is FrameType.WINDOW:
        if len(payload) != 4 or WINDOW_PAYLOAD.unpack(payload)[0] == 0:
            return "WINDOW payload must be a non-zero 32-bit increment"
    elif ftype in (FrameType.HELLO, FrameType.WELCOME, FrameType.OPEN):
        if len(payload) > MAX_JSON:
            return f"{ftype.name} metadata larger than {MAX_JSON} bytes"
        try:
            doc = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            return f"{ftype.name} metadata is not JSON"
        if not isinstance(doc, dict):
            return f"{ftype.name} metadata is not a JSON object"
    elif ftype in (FrameType.RESET, FrameType.GOAWAY):
        try:
            payload.decode()
        except UnicodeDecodeError:
            return f"{ftype.name} reason is not UTF-8"
    elif ftype is FrameType.EOF and payload:
        return "EOF frame with a payload"
    return None


@dataclass(frozen=True, slots=True)
class Frame:
    """One mux frame; constructing it validates it, so a Frame is always well-formed."""

    type: FrameType
    stream_id: int
    payload: bytes = b""

    def __post_init__(self) -> None:
        problem = _problem(self.type, self.stream_id, self.payload, DEFAULT_MAX_PAYLOAD)
        if problem:
            raise LocalProtocolError(problem)

    def serialize(self) -> bytes:
        return HEADER.pack(self.type, self.stream_id, len(self.payload)) + self.payload

    def json(self) -> dict[str, Any]:
        """The JSON object of a HELLO, WELCOME or OPEN frame (validated on construction)."""
        doc: dict[str, Any] = json.loads(self.payload)
        return doc

    def increment(self) -> int:
        """The credit a WINDOW frame grants."""
        return int(WINDOW_PAYLOAD.unpack(self.payload)[0])


#: One compact encoder for every JSON payload: ``json.dumps`` with ``separators`` builds
#: a new encoder per call (2.1 us against 1.3 us for an OPEN's metadata), and every new
#: connection sends an OPEN.
_JSON = json.JSONEncoder(separators=(",", ":"))


def json_payload(doc: dict[str, Any]) -> bytes:
    return _JSON.encode(doc).encode()


def data_header(stream_id: int, length: int) -> bytes:
    """Header of a DATA frame; the hot path writes it next to the payload without a Frame."""
    return HEADER.pack(FrameType.DATA, stream_id, length)


def window_frame(stream_id: int, increment: int) -> bytes:
    return HEADER.pack(FrameType.WINDOW, stream_id, 4) + WINDOW_PAYLOAD.pack(increment)


def open_frame(stream_id: int, metadata: dict[str, Any]) -> bytes:
    """An OPEN frame of our own metadata, on the path of every new connection.

    Serialised here from a dict, so it is a JSON object by construction: only its size
    is checked, not parsed back as building a :class:`Frame` would.
    """
    payload = json_payload(metadata)
    if len(payload) > MAX_JSON:
        raise LocalProtocolError(f"OPEN metadata larger than {MAX_JSON} bytes")
    return HEADER.pack(FrameType.OPEN, stream_id, len(payload)) + payload


def eof_frame(stream_id: int) -> bytes:
    return HEADER.pack(FrameType.EOF, stream_id, 0)


class FrameDecoder:
    """Turns bytes into frames; a decode error is final.

    DATA payloads are passed on as they arrive, so one DATA frame may come out as
    several consecutive DATA frames of the same stream (a byte stream does not care),
    and the decoder never holds more than a header or one small control frame.
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._header = bytearray()  # a header split across feeds
        self._control: tuple[FrameType, int, int] | None = None  # awaiting its payload
        self._control_buf = bytearray()
        self._data_left = 0  # payload bytes of the current DATA frame still to come
        self._data_stream = 0
        self._error: FrameError | None = None
        self._rest = b""  # input left over by a feed that hit max_frames
        #: Frame headers parsed so far (a DATA frame counts once, however it is split).
        self.frames_parsed = 0

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a frame (DATA is never held)."""
        return len(self._header) + len(self._control_buf)

    @property
    def backlog(self) -> int:
        """Input bytes a feed left unparsed because it reached ``max_frames``."""
        return len(self._rest)

    def feed(self, data: bytes | memoryview, max_frames: int = 0) -> list[Frame]:
        """Parse ``data``; with ``max_frames``, stop after starting that many frames.

        What is left is kept (``backlog``) and parsed first by the next call, so a
        driver can spread a read full of tiny frames over several loop turns by
        calling ``feed(b"", max_frames)`` until ``backlog`` is 0.
        """
        if self._error is not None:
            raise self._error
        if self._rest:
            data = self._rest + bytes(data) if data else self._rest
            self._rest = b""
        try:
            return self._feed(data, max_frames)
        except FrameError as exc:
            self._error = exc
            raise

    def _feed(self, data: bytes | memoryview, max_frames: int) -> list[Frame]:
        frames: list[Frame] = []
        pos, end = 0, len(data)
        header = self._header
        limit = self.frames_parsed + max_frames if max_frames else -1
        while pos < end:
            if self._data_left:
                n = min(self._data_left, end - pos)
                frames.append(
                    _unchecked(FrameType.DATA, self._data_stream, bytes(data[pos : pos + n]))
                )
                self._data_left -= n
                pos += n
            elif self._control is not None:
                ftype, stream_id, length = self._control
                take = min(length - len(self._control_buf), end - pos)
                self._control_buf += data[pos : pos + take]
                pos += take
                if len(self._control_buf) == length:
                    frames.append(self._checked(ftype, stream_id, bytes(self._control_buf)))
                    self._control = None
                    self._control_buf.clear()
            else:
                if self.frames_parsed == limit:
                    self._rest = bytes(data[pos:])  # data may be a reused read buffer
                    break
                if not header and end - pos >= HEADER_SIZE:
                    code, stream_id, length = HEADER.unpack_from(data, pos)
                    pos += HEADER_SIZE
                else:
                    take = min(HEADER_SIZE - len(header), end - pos)
                    header += data[pos : pos + take]
                    pos += take
                    if len(header) < HEADER_SIZE:
                        break
                    code, stream_id, length = HEADER.unpack_from(header)
                    header.clear()
                self.frames_parsed += 1
                known = _TYPES.get(code)
                if known is None:
                    raise FrameError(f"unknown frame type {code}")
                ftype = known
                if length > self.max_payload:
                    raise FrameError(f"frame of {length} bytes exceeds {self.max_payload}")
                if ftype is FrameType.DATA and stream_id:
                    if end - pos >= length:  # the whole payload is here: the common case
                        frames.append(_unchecked(ftype, stream_id, bytes(data[pos : pos + length])))
                        pos += length
                    else:
                        self._data_left, self._data_stream = length, stream_id
                elif end - pos >= length:
                    payload = bytes(data[pos : pos + length])
                    pos += length
                    frames.append(self._checked(ftype, stream_id, payload))
                else:
                    self._control = (ftype, stream_id, length)
        return frames

    def _checked(self, ftype: FrameType, stream_id: int, payload: bytes) -> Frame:
        problem = _problem(ftype, stream_id, payload, self.max_payload)
        if problem:
            raise FrameError(problem)
        return _unchecked(ftype, stream_id, payload)


def _unchecked(ftype: FrameType, stream_id: int, payload: bytes) -> Frame:
    """Build an already-validated Frame without running the checks twice (hot path)."""
    frame = object.__new__(Frame)
    object.__setattr__(frame, "type", ftype)
    object.__setattr__(frame, "stream_id", stream_id)
    object.__setattr__(frame, "payload", payload)
    return frame
