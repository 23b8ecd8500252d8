"""``tunnel-core status``: ask a running server who is connected.

The status page names client addresses, so it sits behind the token; the token
is only sent after the server's certificate matched the pinned fingerprint, the
same order the tunnel client keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from . import options, tls
from .errors import AuthRejected, ConfigError, ConnectError, TunnelError
from .runner import run

__all__ = ["fetch_status", "register"]


def register(modes: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = modes.add_parser(
        "status",
        help="show a server's connected clients, their hosts and its uptime",
        description="Query GET /status on the server's control port (needs the token).",
    )
    options.add_client_args(status, several_servers=False)
    status.add_argument("--json", action="store_true", help="print the raw JSON document")
    status.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (10)")
    status.set_defaults(func=status_main)


def fetch_status(
    url: str, token: str, fingerprint: str | None, timeout: float = 10.0
) -> dict[str, Any]:
    """The server's /status document; raises TunnelError subclasses with the fix."""
    parts = urlsplit(url)
    if parts.scheme not in ("wss", "https") or not parts.hostname:
        raise ConfigError(f"--url {url!r} is not a wss:// URL", "use wss://HOST:8123")
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port or 8123, timeout=timeout, context=tls.client_context()
    )
    try:
        try:
            conn.connect()
        except (OSError, ssl.SSLError) as exc:
            raise ConnectError(f"cannot connect to {url}: {exc}") from exc
        assert isinstance(conn.sock, ssl.SSLSocket)
        if fingerprint is not None:
            tls.check_pin(conn.sock.getpeercert(binary_form=True), fingerprint)
        conn.request("GET", "/status", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ConnectError(f"{url} did not answer: {exc}") from exc
    finally:
        conn.close()
    if response.status == 401:
        raise AuthRejected(f"{url} rejected the token (HTTP 401)")
    if response.status == 404:
        raise TunnelError(f"{url} has no status page", "it runs an engine without HTTP mode")
    if response.status != 200:
        raise TunnelError(f"{url} answered HTTP {response.status}")
    document: dict[str, Any] = json.loads(body)
    return document


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def render(document: dict[str, Any]) -> str:
    clients = document.get("clients", [])
    lines = [
        f"mode: {document.get('mode')}",
        f"uptime: {_duration(document.get('uptime_seconds', 0))}",
        f"clients: {len(clients)}",
    ]
    for client in clients:
        hosts = ", ".join(client.get("hosts", [])) or "-"
        since = _duration(client.get("connected_seconds", 0))
        lines.append(f"  {client.get('peer')}  hosts: {hosts}  connected {since}")
    return "\n".join(lines)


def status_main(args: argparse.Namespace) -> int:
    async def main(stop: asyncio.Event) -> int:
        document = await asyncio.to_thread(
            fetch_status,
            args.url,
            options.resolve_token(args),
            options.client_pin(args),
            args.timeout,
        )
        print(json.dumps(document, indent=2) if args.json else render(document), flush=True)
        return 0

    return run(main)
