"""The operator's API client over real TLS: it trusts the kubeconfig's CA and nothing else."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kopf import ConnectionInfo

from inletsctl.operator.kube import Kube, KubeError
from tests.certs import self_signed

pytestmark = pytest.mark.network


class FakeApi(BaseHTTPRequestHandler):
    """Answers as the API server does: JSON, a Status with a message on errors."""

    seen: list[tuple[str, str, str, str]] = []
    existing = {"/api/v1/namespaces/a/secrets/s"}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        ctype = self.headers.get("Content-Type") or ""
        self.seen.append((self.command, self.path, self.headers["Authorization"], ctype))
        if self.command == "POST" and self.path + "/s" in self.existing:
            self._json(409, {"kind": "Status", "message": 'secrets "s" already exists'})
        elif self.command in ("POST", "PATCH") or self.path in self.existing:
            self._json(200, {"metadata": {"name": "s"}, "echo": body})
        else:
            self._json(404, {"kind": "Status", "message": "not found"})

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def _json(self, status: int, doc: dict) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, str]]:
    cert, key, _ = self_signed("127.0.0.1")
    (tmp_path / "tls.crt").write_text(cert)
    (tmp_path / "tls.key").write_text(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    FakeApi.seen.clear()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_kubeconfig_ca_and_token_are_used(api) -> None:
    url, cert = api
    ca_data = base64.b64encode(cert.encode()).decode()  # as certificate-authority-data is
    kube = Kube(ConnectionInfo(server=url, ca_data=ca_data, token="t0ken"))
    assert kube.get("/api/v1/namespaces/a/secrets/s") == {"metadata": {"name": "s"}, "echo": ""}
    assert kube.get("/api/v1/namespaces/a/secrets/other") is None
    kube.apply("/api/v1/namespaces/a/secrets", {"metadata": {"name": "s"}, "type": "Opaque"})
    kube.delete("/api/v1/namespaces/a/secrets/gone")  # 404: already what was asked
    assert [(m, p, auth) for m, p, auth, _ in FakeApi.seen] == [
        ("GET", "/api/v1/namespaces/a/secrets/s", "Bearer t0ken"),
        ("GET", "/api/v1/namespaces/a/secrets/other", "Bearer t0ken"),
        ("POST", "/api/v1/namespaces/a/secrets", "Bearer t0ken"),
        ("PATCH", "/api/v1/namespaces/a/secrets/s", "Bearer t0ken"),
        ("DELETE", "/api/v1/namespaces/a/secrets/gone", "Bearer t0ken"),
    ]
    assert FakeApi.seen[3][3] == "application/merge-patch+json"


def test_a_server_outside_the_kubeconfig_ca_is_refused(api, tmp_path) -> None:
    url, _ = api
    other, _, _ = self_signed("127.0.0.1")
    (tmp_path / "other-ca.crt").write_text(other)
    kube = Kube(ConnectionInfo(server=url, ca_path=str(tmp_path / "other-ca.crt"), token="t"))
    with pytest.raises(KubeError, match="cannot reach the API server") as caught:
        kube.get("/api/v1/namespaces/a/secrets/s")
    assert caught.value.status == 0
    assert FakeApi.seen == []  # nothing was sent, the token least of all


def test_insecure_skip_tls_verify_is_honoured_only_when_asked(api) -> None:
    url, _ = api
    kube = Kube(ConnectionInfo(server=url, insecure=True, token="t"))
    assert kube.get("/api/v1/namespaces/a/secrets/s") is not None


def test_api_errors_carry_the_status_message(api) -> None:
    url, cert = api
    kube = Kube(ConnectionInfo(server=url, ca_data=cert, token="t"))  # PEM text works too
    with pytest.raises(KubeError) as caught:
        kube.create("/api/v1/namespaces/a/secrets", {"metadata": {"name": "s"}})
    assert (caught.value.status, caught.value.message) == (409, 'secrets "s" already exists')
