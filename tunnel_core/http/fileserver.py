"""``tunnel-core http fileserver``: serve a directory for a tunnel to expose.

The directory becomes reachable from the internet, so the server is defensive:
every request needs basic auth (user ``admin``, password the token, compared in
constant time); a path is decoded once, then resolved with symlinks followed and
refused unless it still lies inside the webroot (``..``, ``%2e%2e`` and links
pointing out all end there); directory listings exist only with
``--allow-browsing`` and every name in them is HTML-escaped. Files are streamed
in chunks, never read whole.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import html
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import h11

from .public import HttpError, Limits, PublicConnection, serve_requests, start_public_server

__all__ = ["FileServer", "run_fileserver"]

_CHUNK = 256 * 1024
_REALM = 'Basic realm="tunnel-core", charset="UTF-8"'


@dataclass(frozen=True)
class FileServer:
    """The settings of one fileserver; ``handle`` serves one public connection."""

    webroot: Path
    token: str
    allow_browsing: bool = False

    def _authorized(self, request: h11.Request) -> bool:
        expected = b"admin:" + self.token.encode()
        for name, value in request.headers:
            if name == b"authorization" and value[:6].lower() == b"basic ":
                try:
                    given = base64.b64decode(value[6:].strip(), validate=True)
                except (binascii.Error, ValueError):
                    return False
                return hmac.compare_digest(given, expected)
        return False

    def _resolve(self, target: bytes) -> Path:
        try:
            path = unquote(urlsplit(target.decode("ascii")).path, errors="strict")
        except UnicodeDecodeError:
            raise HttpError(400, "the path is not valid percent-encoded UTF-8") from None
        if "\x00" in path or "\\" in path:
            raise HttpError(400, "bad path")
        root = self.webroot.resolve()
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise HttpError(404, "not found")
        resolved = root.joinpath(*parts).resolve()
        if resolved != root and not resolved.is_relative_to(root):
            raise HttpError(404, "not found")
        if not resolved.exists():
            raise HttpError(404, "not found")
        return resolved

    def _listing(self, directory: Path, url_path: str) -> bytes:
        base = url_path if url_path.endswith("/") else url_path + "/"
        items = []
        for entry in sorted(directory.iterdir(), key=lambda p: p.name):
            name = entry.name + ("/" if entry.is_dir() else "")
            href = html.escape(quote(base + name), quote=True)
            items.append(f'<li><a href="{href}">{html.escape(name)}</a></li>')
        title = html.escape(base)
        return (
            f"<!doctype html>\n<title>Index of {title}</title>\n<h1>Index of {title}</h1>\n"
            f"<ul>\n{chr(10).join(items)}\n</ul>\n"
        ).encode()

    async def _respond(
        self, conn: PublicConnection, status: int, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        await conn.send(h11.Response(status_code=status, headers=headers))
        await conn.send(h11.Data(data=body))
        await conn.send(h11.EndOfMessage())

    async def _serve_file(self, conn: PublicConnection, path: Path, head_only: bool) -> None:
        size = path.stat().st_size
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = [("Content-Type", kind), ("Content-Length", str(size))]
        await conn.send(h11.Response(status_code=200, headers=headers))
        if not head_only:
            with path.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    await conn.send(h11.Data(data=chunk))
        await conn.send(h11.EndOfMessage())

    async def _serve_one(self, conn: PublicConnection, request: h11.Request) -> bool:
        while not isinstance(await conn.next_body_event(), h11.EndOfMessage):
            pass  # GET/HEAD bodies are meaningless; read and drop them
        if not self._authorized(request):
            body = b"authentication required\n"
            headers = [("WWW-Authenticate", _REALM), ("Content-Type", "text/plain")]
            await self._respond(conn, 401, headers, body)
            return True
        if request.method not in (b"GET", b"HEAD"):
            await self._respond(conn, 405, [("Allow", "GET, HEAD")], b"method not allowed\n")
            return True
        path = self._resolve(request.target)
        head_only = request.method == b"HEAD"
        if path.is_file():
            await self._serve_file(conn, path, head_only)
            return True
        if not self.allow_browsing or not os.access(path, os.R_OK | os.X_OK):
            raise HttpError(403, "directory listing is disabled (start with --allow-browsing)")
        body = self._listing(path, unquote(urlsplit(request.target.decode()).path))
        headers = [("Content-Type", "text/html; charset=utf-8")]
        await self._respond(conn, 200, headers, b"" if head_only else body)
        return True

    async def handle(self, conn: PublicConnection) -> None:
        await serve_requests(conn, self._serve_one)


async def run_fileserver(
    server: FileServer, bind: str, port: int, limits: Limits, stop: asyncio.Event
) -> None:
    """Serve until ``stop`` is set."""
    listener = await start_public_server(server.handle, bind, port, limits)
    async with listener:
        await stop.wait()
