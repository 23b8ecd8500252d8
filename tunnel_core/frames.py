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

from .errors import FrameError, LocalProtocolError

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
        except (ValueError, UnicodeDecodeError):
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


def json_payload(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def data_header(stream_id: int, length: int) -> bytes:
    """Header of a DATA frame; the hot path writes it next to the payload without a Frame."""
    return HEADER.pack(FrameType.DATA, stream_id, length)


def window_frame(stream_id: int, increment: int) -> bytes:
    return HEADER.pack(FrameType.WINDOW, stream_id, 4) + WINDOW_PAYLOAD.pack(increment)


def stage(buf: bytearray, data: bytes) -> bytes | bytearray:
    """What a decoder parses: ``data`` itself when nothing is buffered (saves a copy)."""
    if buf:
        buf += data
        return buf
    return data


def keep_rest(buf: bytearray, src: bytes | bytearray, data: bytes, pos: int) -> None:
    """Keep the unparsed tail (from ``pos``) of what :func:`stage` returned."""
    if src is buf:
        del buf[:pos]
    else:
        buf += data[pos:]


class FrameDecoder:
    """Buffers bytes and returns whole frames; a decode error is final."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        buf = self._buf
        src = stage(buf, data)
        frames: list[Frame] = []
        pos, end = 0, len(src)
        unpack = HEADER.unpack_from
        try:
            while end - pos >= HEADER_SIZE:
                code, stream_id, length = unpack(src, pos)
                ftype = _TYPES.get(code)
                if ftype is None:
                    raise FrameError(f"unknown frame type {code}")
                if length > self.max_payload:
                    raise FrameError(f"frame of {length} bytes exceeds {self.max_payload}")
                stop = pos + HEADER_SIZE + length
                if stop > end:
                    break
                payload = bytes(src[pos + HEADER_SIZE : stop])
                if ftype is not FrameType.DATA or stream_id == 0:
                    problem = _problem(ftype, stream_id, payload, self.max_payload)
                    if problem:
                        raise FrameError(problem)
                frames.append(_unchecked(ftype, stream_id, payload))
                pos = stop
        except FrameError as exc:
            self._error = exc
            raise
        keep_rest(buf, src, data, pos)
        return frames


def _unchecked(ftype: FrameType, stream_id: int, payload: bytes) -> Frame:
    """Build an already-validated Frame without running the checks twice (hot path)."""
    frame = object.__new__(Frame)
    object.__setattr__(frame, "type", ftype)
    object.__setattr__(frame, "stream_id", stream_id)
    object.__setattr__(frame, "payload", payload)
    return frame
