"""An API that refuses connections or answers an HTML error page: one line and a hint.

The SDKs' own words for these are a paragraph (urllib3's pool reprs) or a 60-line
botocore ``ResponseParserError`` traceback; the CLI, run as a user runs it, must say
what happened in one ``Error:`` line and one ``Hint:`` line, with no traceback.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

#: what a proxy or a misconfigured gateway answers, and not well-formed XML either
HTML = (
    b"<!DOCTYPE html>\n<html><head><meta charset=utf-8><title>500 Internal Server Error"
    b"</title></head><body><h1>Internal Server Error</h1>\n" + b"<p>oops<br>\n" * 60 + b"</html>"
)

CREDENTIALS = {
    "aws": ["--access-token", "testing", "--secret-key", "testing"],
    "digitalocean": ["--access-token", "x"],
    "hetzner": ["--access-token", "x"],
    "linode": ["--access-token", "x"],
    "vultr": ["--access-token", "x"],
}
#: (provider, endpoint kind) -> what the one line must say
EXPECTED = {
    ("aws", "html"): "the endpoint's answer is not AWS's XML",
    ("aws", "refused"): "Connection refused",
    ("digitalocean", "html"): "answered HTTP 500 with something that is not the API's JSON",
    ("digitalocean", "refused"): "Connection refused",
    ("hetzner", "html"): "Internal Server Error (500)",
    ("hetzner", "refused"): "Connection refused",
    ("linode", "html"): "answered HTTP 500 with something that is not the API's JSON",
    ("linode", "refused"): "Connection refused",
    ("vultr", "html"): "answered HTTP 500 with something that is not the API's JSON",
    ("vultr", "refused"): "Connection refused",
}


class _ErrorPage(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(HTML)))
        self.end_headers()
        self.wfile.write(HTML)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def error_page() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ErrorPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize(("provider", "kind"), sorted(EXPECTED))
def test_a_broken_endpoint_is_one_line_and_a_hint(
    provider: str, kind: str, error_page: str, tmp_path: Path
) -> None:
    endpoint = error_page if kind == "html" else f"http://127.0.0.1:{free_port()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "INLETS"))},
        "INLETSCTL_STATE_DIR": str(tmp_path),
        "NO_COLOR": "1",
        "AWS_MAX_ATTEMPTS": "1",  # botocore would retry each failure
    }
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "inletsctl",
            "list",
            "--remote",
            "-p",
            provider,
            "--endpoint-url",
            endpoint,
            *CREDENTIALS[provider],
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    error, hint = res.stderr.splitlines()
    assert error.startswith(f"Error: {'ec2' if provider == 'aws' else provider}: ")
    assert EXPECTED[provider, kind] in error
    assert hint.startswith("Hint: ") and "endpoint" in hint.lower()
    for noise in ("Traceback", "HTTPConnectionPool", "<html", "object at 0x"):
        assert noise not in res.stderr
