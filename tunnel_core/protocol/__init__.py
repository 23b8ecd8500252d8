"""The wire protocol, sans-I/O: bytes in, frames and events out, bytes to send.

Nothing in this package does I/O or imports asyncio, ssl or h11 (a ruff rule and a
test check it), so the codecs and the state machine run anywhere, fuzzed or driven
by hand:

* :mod:`.datagrams`: UDP datagrams framed on a stream (length-prefixed);
* :mod:`.frames`: the mux frame codec;
* :mod:`.mux`: the stream state machine with per-stream credit windows;
* :mod:`.ws`: RFC 6455 framing of the one binary byte stream under the mux.
"""

__all__ = ["datagrams", "frames", "mux", "ws"]
