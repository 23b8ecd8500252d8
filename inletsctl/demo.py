"""``make demo``: the product end to end on loopback, with no cloud account.

``inletsctl create --provider local --http`` starts an exit server, ``inletsctl
connect`` runs the client for it, a page from a local HTTP server is fetched through
the tunnel, and ``inletsctl delete`` stops the server. Everything happens in a
temporary state directory, and every process started is stopped by its PID.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

#: Seconds to wait for the first byte through the tunnel.
DEADLINE_S = 20.0
PAGE = b"<h1>hello through the tunnel</h1>\n"


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        self.send_header("content-length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _inletsctl(env: dict[str, str], *args: str) -> str:
    print(f"$ inletsctl {' '.join(args)}", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def _get_through(url: str, client: subprocess.Popen[bytes]) -> bytes:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        if client.poll() is not None:
            raise SystemExit(f"demo: the tunnel client exited ({client.returncode})")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bytes(response.read())
        except OSError as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # e.g. 502 until the client has registered
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{httpd.server_address[1]}"
    with tempfile.TemporaryDirectory(prefix="inletsctl-demo-") as state:
        env = {**os.environ, "INLETSCTL_STATE_DIR": state}
        host = json.loads(_inletsctl(env, "create", "--provider", "local", "--http", "-o", "json"))
        print(f"   host {host['id']} at {host['url']}, {host['tls_fingerprint']}", file=sys.stderr)
        try:
            print(f"$ inletsctl connect {host['id']} --upstream {upstream}", file=sys.stderr)
            client = subprocess.Popen(
                [sys.executable, "-m", "inletsctl", "connect", host["id"], "--upstream", upstream],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"http://127.0.0.1:{host['data_port']}/"
                body = _get_through(url, client)
                print(f"GET {url} through the tunnel: {body.decode().strip()}")
            finally:
                client.terminate()
                client.wait(timeout=10)
        finally:
            _inletsctl(env, "delete", "--id", host["id"])
            httpd.shutdown()
    return 0 if body == PAGE else 1


if __name__ == "__main__":
    sys.exit(main())
