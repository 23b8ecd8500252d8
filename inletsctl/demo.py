"""``make demo``: a tunnel server and client on loopback, real traffic, then clean up.

A stand-in until ``inletsctl create --provider local`` drives the same steps: it
starts ``tunnel-core tcp server --auto-tls`` and a client as subprocesses, serves a
page from a local HTTP server through the tunnel, prints what happened and stops
both processes by PID.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

DEADLINE = 20.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: timed out waiting for {what}")
        time.sleep(0.05)


def _health(port: int) -> dict[str, object]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx) as r:
            body: dict[str, object] = json.loads(r.read())
            return body
    except OSError:
        return {}


def _engine(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "tunnel_core", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )


def main() -> int:
    control, public = _free_port(), _free_port()
    token = secrets.token_urlsafe(24)
    env = {"INLETS_TOKEN": token}
    page = b"<h1>hello through the tunnel</h1>\n"

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    upstream = httpd.server_address[1]
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="inletsctl-demo-") as tmp:
        server_log, client_log = Path(tmp, "server.log"), Path(tmp, "client.log")
        try:
            print(f"1. tunnel server on 127.0.0.1:{control} (--auto-tls)", file=sys.stderr)
            server_args = ["tcp", "server", "--bind", "127.0.0.1", "--control-port", str(control)]
            server_args += ["--token-env", "INLETS_TOKEN", "--auto-tls"]
            processes.append(_engine(server_args, server_log, env))
            _wait("the server's fingerprint", lambda: "sha256:" in server_log.read_text())
            found = re.search(r"sha256:[0-9a-f]{64}", server_log.read_text())
            assert found is not None
            fingerprint = found.group(0)
            print(f"   fingerprint {fingerprint}", file=sys.stderr)
            print(
                f"2. tunnel client: public port {public} -> 127.0.0.1:{upstream}", file=sys.stderr
            )
            client_args = ["tcp", "client", "--url", f"wss://127.0.0.1:{control}"]
            client_args += ["--token-env", "INLETS_TOKEN", "--tls-fingerprint", fingerprint]
            client_args += ["--upstream", "127.0.0.1", "--ports", f"{public}:{upstream}"]
            processes.append(_engine(client_args, client_log, env))
            _wait("the client to connect", lambda: _health(control).get("clients") == 1)
            print(f"3. GET http://127.0.0.1:{public}/ through the tunnel", file=sys.stderr)
            with urllib.request.urlopen(f"http://127.0.0.1:{public}/", timeout=10) as response:
                body = response.read()
            print(f"   {response.status} {body.decode().strip()}")
            print(f"   server health: {json.dumps(_health(control))}")
            return 0 if body == page else 1
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGTERM)
                try:
                    code = process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    code = process.wait()
                print(f"4. stopped pid {process.pid} (exit {code})", file=sys.stderr)
            httpd.shutdown()


if __name__ == "__main__":
    sys.exit(main())
