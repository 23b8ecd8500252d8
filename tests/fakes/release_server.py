"""A GitHub-like release server on 127.0.0.1 that misbehaves on request.

Layout as GitHub's: ``/releases/download/<tag>/<file>`` for assets and
``/releases/latest`` answering 302 to ``/releases/tag/<tag>``. Each asset can be
told to fail its first requests (500), drop the connection half-way through its
first responses (then honour ``Range``), or stall its first responses until the
client gives up; every request is recorded so tests can assert on what was sent.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PREFIX = "/releases"


@dataclass
class Asset:
    body: bytes
    fail_first: int = 0  # answer 500 to this many requests first
    drop_first: int = 0  # send half the body then close, this many times first
    stall_first: int = 0  # send headers then nothing until released, this many times first
    ranges: bool = True  # honour Range with 206
    hits: int = 0


@dataclass
class Seen:
    method: str
    path: str
    range: str | None
    target: str  # the request line's target: absolute-form when sent through a proxy


@dataclass
class ReleaseServer:
    assets: dict[str, Asset] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    latest: str = ""
    release_stalls: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    @property
    def url(self) -> str:
        """The base to pass as ``--release-url``."""
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def publish(
        self, tag: str, files: dict[str, bytes], sums: dict[str, bytes] | None = None
    ) -> None:
        """Serve ``files`` under ``tag`` with a SHA256SUMS of ``sums`` (default: of ``files``)."""
        for name, body in files.items():
            self.put(tag, name, Asset(body))
        listed = files if sums is None else sums
        text = "".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in sorted(listed.items()))
        self.put(tag, "SHA256SUMS", Asset(text.encode()))

    def put(self, tag: str, name: str, asset: Asset) -> Asset:
        self.assets[f"{PREFIX}/download/{tag}/{name}"] = asset
        return asset

    def asset(self, tag: str, name: str) -> Asset:
        return self.assets[f"{PREFIX}/download/{tag}/{name}"]

    def hits(self, suffix: str) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith(suffix)]


def _handler(state: ReleaseServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            target = self.path
            # A proxy receives absolute URLs; this server doubles as one for proxy tests.
            self.path = urlsplit(target).path if target.startswith("http") else target
            state.requests.append(Seen(self.command, self.path, self.headers.get("Range"), target))
            if self.path == f"{PREFIX}/latest" and state.latest:
                self.send_response(302)
                self.send_header("Location", f"{PREFIX}/tag/{state.latest}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            asset = state.assets.get(self.path)
            if asset is None:
                self._plain(404, b"Not Found")
                return
            asset.hits += 1
            if asset.hits <= asset.fail_first:
                self._plain(500, b"boom")
                return
            body, status, extra = asset.body, 200, {}
            start = self._range_start()
            if start is not None and asset.ranges:
                if start >= len(body):
                    self._plain(416, b"")
                    return
                extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                body, status = body[start:], 206
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes" if asset.ranges else "none")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            served = asset.hits - asset.fail_first
            if served <= asset.drop_first:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if served <= asset.drop_first + asset.stall_first:
                state.release_stalls.wait(timeout=30)
                self.close_connection = True
                return
            self.wfile.write(body)

        def _range_start(self) -> int | None:
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            return int(match.group(1)) if match else None

        def _plain(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


@contextmanager
def release_server() -> Iterator[ReleaseServer]:
    """A running server on a free loopback port; stopped (and stalls released) on exit."""
    state = ReleaseServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release_stalls.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
