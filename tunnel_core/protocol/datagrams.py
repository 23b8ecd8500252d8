"""UDP datagrams on a tunnel stream: each one prefixed with its length.

A stream is a byte stream and may deliver a write in pieces or several writes at
once, so a datagram is framed as a 2-byte big-endian length and its bytes; the
reader gives back exactly the datagrams that were written, boundaries intact. An
empty datagram is a valid datagram (length 0).
"""

from __future__ import annotations

import struct

__all__ = ["MAX_DATAGRAM", "DatagramReader", "encode"]

#: The largest datagram a length prefix can carry (UDP's own limit is a little lower).
MAX_DATAGRAM = 0xFFFF
_LENGTH = struct.Struct("!H")


def encode(datagram: bytes) -> bytes:
    """The framed datagram; ValueError if it is longer than :data:`MAX_DATAGRAM`."""
    if len(datagram) > MAX_DATAGRAM:
        raise ValueError(f"a datagram of {len(datagram)} bytes is over {MAX_DATAGRAM}")
    return _LENGTH.pack(len(datagram)) + datagram


class DatagramReader:
    """Turns the stream's bytes, in whatever pieces they come, back into datagrams."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Every datagram completed by ``data``; a partial one waits for the next call."""
        source: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            source = self._buffer
        out: list[bytes] = []
        offset, end = 0, len(source)
        while end - offset >= 2:
            (size,) = _LENGTH.unpack_from(source, offset)
            stop = offset + 2 + size
            if stop > end:
                break
            out.append(bytes(source[offset + 2 : stop]))
            offset = stop
        self._buffer = bytearray(source[offset:])
        return out

    @property
    def pending(self) -> int:
        """Bytes of a datagram not yet complete."""
        return len(self._buffer)
