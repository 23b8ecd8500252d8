"""Tools for hostile-client tests: an upstream that records what reached it, raw public clients.

``Recorder`` is a loopback HTTP/1.1 upstream running in its own thread (so it outlives
each test's event loop): it keeps, per request, the exact bytes that arrived on the
connection, the parsed head and whether the message ended cleanly. ``exchange`` is a
public client that sends bytes as given (no client library would send them) and reads
until the server closes, telling a clean close from a reset.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h11

DEADLINE = 20.0

#: Canned upstream answers, chosen by the request target.
RESPONSES: dict[bytes, bytes] = {
    b"/resp/cl-te": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"b\r\nhello world\r\n0\r\n\r\n"
    ),
    b"/resp/bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello",
    b"/resp/two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 11\r\n\r\nhello",
    b"/resp/1.0-te": (
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ),
    b"/resp/conn-cl": (
        b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"
    ),
    b"/resp/truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
}


#: ``/early`` gets this head and first chunk as soon as the request head arrives, and the
#: last chunk once the request body is complete.
EARLY_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nearly\r\n"
RESPONSES[b"/early"] = b"0\r\n\r\n"


@dataclass
class Seen:
    """One request as the upstream got it."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]


@dataclass
class Connection:
    raw: bytearray = field(default_factory=bytearray)
    requests: list[Seen] = field(default_factory=list)
    closed: bool = False


class Recorder:
    """A threaded upstream recording every connection; ``url`` is for ``--upstream``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[Connection] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def clear(self) -> None:
        with self.changed:
            self.connections = []

    @property
    def requests(self) -> list[Seen]:
        with self.changed:
            return [r for c in self.connections for r in c.requests]

    def wait(self, condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
        """Until ``condition()`` holds (checked on every change); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"upstream {self.name}: timed out waiting")
                self.changed.wait(left)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            record = Connection()
            with self.changed:
                self.connections.append(record)
                self.changed.notify_all()
            threading.Thread(target=self._serve, args=(sock, record), daemon=True).start()

    def _serve(self, sock: socket.socket, record: Connection) -> None:
        conn = h11.Connection(h11.SERVER)
        current: Seen | None = None
        try:
            with sock:
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = sock.recv(65536)
                        with self.changed:
                            record.raw += data
                            self.changed.notify_all()
                        conn.receive_data(data)
                        continue
                    with self.changed:
                        if isinstance(event, h11.Request):
                            current = Seen(event.method, event.target, list(event.headers))
                            record.requests.append(current)
                            if event.target == b"/early":  # answers before the body is in
                                sock.sendall(EARLY_HEAD)
                        elif isinstance(event, h11.Data) and current is not None:
                            current.body += event.data
                        elif isinstance(event, h11.EndOfMessage) and current is not None:
                            current.complete = True
                        self.changed.notify_all()
                    if isinstance(event, h11.EndOfMessage) and current is not None:
                        sock.sendall(self._answer(current))
                        if conn.our_state is h11.MUST_CLOSE:
                            return
                        conn.start_next_cycle()
                        current = None
                    elif not isinstance(event, h11.Request | h11.Data):
                        return
        except (OSError, h11.ProtocolError):
            pass
        finally:
            with self.changed:
                record.closed = True
                self.changed.notify_all()

    def _answer(self, seen: Seen) -> bytes:
        canned = RESPONSES.get(seen.target)
        if canned is not None:
            return canned
        body = json.dumps(
            {
                "upstream": self.name,
                "target": seen.target.decode("latin-1"),
                "host": [h.decode("latin-1") for h in seen.header(b"host")],
                "body": len(seen.body),
            }
        ).encode()
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass
class Answer:
    """What a raw public client got: all bytes until the server closed, and how it closed."""

    data: bytes
    reset: bool

    @property
    def status(self) -> int | None:
        if not self.data.startswith(b"HTTP/1.1 "):
            return None
        return int(self.data[9:12])

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection to the public port from ``source`` (any 127/8 address works on Linux)."""
    sock = socket.create_connection(("127.0.0.1", port), DEADLINE, source_address=(source, 0))
    return sock


def read_all(sock: socket.socket) -> Answer:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        return Answer(b"".join(chunks), True)
    return Answer(b"".join(chunks), False)


def exchange(port: int, *pieces: bytes, source: str = "127.0.0.1") -> Answer:
    """Send ``pieces`` and read until the server closes the connection."""
    with connect(port, source) as sock:
        for piece in pieces:
            sock.sendall(piece)
        return read_all(sock)
