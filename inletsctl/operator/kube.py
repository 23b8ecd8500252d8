"""The few Kubernetes API calls the handlers make besides kopf's own: get, create, patch, delete.

kopf watches and patches the Service it handles, but it is not a client for other
objects (the Tunnel, the client's Deployment and Secret). A general client library
would bring a second authentication path; this one reuses the ``ConnectionInfo``
that kopf's own login returned, so the operator talks to one server with one
identity. It is synchronous because the handlers are (they run in kopf's threads,
where the provider SDKs block anyway).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kopf import ConnectionInfo

#: Seconds one API call may take; a watch is kopf's, never ours.
TIMEOUT_S = 30.0
JSON = dict[str, Any]


class KubeError(Exception):
    """The API server refused a call (its Status ``message``), or could not be reached."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class Kube:
    """Calls to one API server as the identity kopf logged in with."""

    def __init__(self, info: ConnectionInfo) -> None:
        self.server = info.server.rstrip("/")
        self.headers = {"Accept": "application/json", **info.as_http_headers()}
        self.context = _tls_context(info) if self.server.startswith("https:") else None

    def get(self, path: str) -> JSON | None:
        """The object at ``path``, or None when there is none."""
        try:
            return self._call("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, collection: str, body: Mapping[str, Any]) -> JSON:
        return self._call("POST", collection, body)

    def patch(self, path: str, body: Mapping[str, Any]) -> JSON:
        """A JSON merge patch: keys set to None are removed, lists are replaced whole."""
        return self._call("PATCH", path, body, "application/merge-patch+json")

    def apply(self, collection: str, body: Mapping[str, Any]) -> JSON:
        """Create the object, or merge it into the one of the same name that exists."""
        try:
            return self.create(collection, body)
        except KubeError as exc:
            if exc.status != 409:
                raise
        return self.patch(f"{collection}/{body['metadata']['name']}", body)

    def delete(self, path: str) -> None:
        """Delete ``path``; one already gone is what was asked for."""
        try:
            self._call("DELETE", path)
        except KubeError as exc:
            if exc.status != 404:
                raise

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        ctype: str = "application/json",
    ) -> JSON:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = ctype
        req = urllib.request.Request(self.server + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S, context=self.context) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise KubeError(exc.code, _status_message(exc.read(), exc.reason)) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise KubeError(0, f"cannot reach the API server {self.server}: {reason}") from exc
        doc = json.loads(raw) if raw else {}
        return doc if isinstance(doc, dict) else {}


def _status_message(raw: bytes, fallback: str) -> str:
    """The API server's one-line reason (a ``Status`` object), not its whole body."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return fallback
    return str(doc.get("message") or fallback) if isinstance(doc, dict) else fallback


def _tls_context(info: ConnectionInfo) -> ssl.SSLContext:
    """Trust the cluster's CA (not the system's) unless the kubeconfig says insecure."""
    ctx = ssl.create_default_context()
    if info.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif info.ca_path:
        ctx.load_verify_locations(cafile=os.fsdecode(info.ca_path))
    elif info.ca_data:
        ctx.load_verify_locations(cadata=_pem(info.ca_data).decode())
    cert = info.certificate_path or info.certificate_data
    key = info.private_key_path or info.private_key_data
    if cert and key:
        with (
            _as_file(info.certificate_path, info.certificate_data) as certfile,
            _as_file(info.private_key_path, info.private_key_data) as keyfile,
        ):
            ctx.load_cert_chain(certfile, keyfile)
    return ctx


def _pem(data: str | bytes) -> bytes:
    """kubeconfig's ``*-data`` fields are base64 of the PEM text."""
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.lstrip().startswith(b"-----") else base64.b64decode(raw)


@contextmanager
def _as_file(
    path: str | bytes | os.PathLike[Any] | None, data: str | bytes | None
) -> Iterator[str]:
    """``load_cert_chain`` reads files only: key data is written (0600, as mkstemp makes
    it) just for the call."""
    if path:
        yield os.fsdecode(path)
        return
    assert data is not None
    with tempfile.NamedTemporaryFile(prefix="inletsctl-", suffix=".pem") as tmp:
        tmp.write(_pem(data))
        tmp.flush()
        yield tmp.name
