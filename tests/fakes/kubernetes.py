"""A Kubernetes API server for the operator's tests: kmock's emulator, as a real one behaves.

kmock's ``KubernetesEmulator`` keeps objects in memory and serves discovery, list,
watch, create, patch and delete over HTTP on 127.0.0.1. A real API server also gives
every object a ``metadata.resourceVersion`` (new on each write), a ``uid``, a
``creationTimestamp`` and a name from its ``generateName``, and a Service its
``spec.clusterIP``; it answers a failed JSON patch ``test`` with 422, and a watch from
a list's version does not replay the list.
kopf relies on all of these, so :class:`StampingEmulator` adds them, as kmock's docs
ask of a test that needs more than plain JSON storage. :class:`KubeServer` runs it on
its own event loop in a thread, so the synchronous tests and ``KopfRunner`` (another
thread, another loop) both reach it over HTTP, and writes a kubeconfig pointing at it.
"""

from __future__ import annotations

import asyncio
import gzip
import importlib.resources
import itertools
import json
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
from kmock import action

TIMEOUT_S = 10.0
#: The User-Agent of the tests' own calls, to tell them from the operator's.
TEST_AGENT = "kubectl-in-tests"


@attrs.define(kw_only=True)
class StampingEmulator(kmock.KubernetesEmulator):
    """Writes carry what the API server adds: resource versions, uid, a cluster IP."""

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1000))
    _cluster_ips: itertools.count[int] = attrs.field(factory=lambda: itertools.count(10))
    _last: int = 0
    #: called with each request once its change is stored, before it is answered (a test
    #: kills the operator there: the write happened, the operator never learns it did)
    after_write: list[Callable[[kmock.Request], None]] = attrs.field(factory=list)

    async def _handle(self, request: kmock.Request) -> Any:
        data = request.data
        self._last = next(self._versions)
        version = str(self._last)
        if request.action == action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            meta.update(resourceVersion=version, uid=str(uuid.uuid4()))
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            meta.setdefault("creationTimestamp", "2026-12-01T10:00:00Z")
            if request.resource is not None and request.resource.plural == "services":
                data.setdefault("spec", {}).setdefault(
                    "clusterIP", f"10.43.0.{next(self._cluster_ips)}"
                )
        elif request.action == action.UPDATE and isinstance(data, dict):
            data.setdefault("metadata", {})["resourceVersion"] = version
        elif request.action == action.UPDATE and isinstance(data, list):
            data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
        response = await super()._handle(request)
        if request.action in (action.CREATE, action.UPDATE, action.DELETE):
            for hook in self.after_write:
                hook(request)
        return response

    async def _serve_list(self, request: kmock.Request) -> Any:
        """A list says which version it is, so a watch can start right after it."""
        listed = await super()._serve_list(request)
        listed["metadata"]["resourceVersion"] = str(self._last)
        return listed

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        """A watch from a list's version does not repeat what the list already showed
        (kmock replays every object as ADDED; kopf would handle each twice)."""
        since = int(request.params.get("resourceVersion") or 0)
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and event.get("type") == "ADDED":
                meta = event["object"].get("metadata") or {}
                if int(meta.get("resourceVersion") or 0) <= since:
                    continue
            yield event

    async def _render_error(self, exc: Exception) -> Any:
        """A failed ``test`` op (kopf's resource-version check) is 422 Invalid, as the API
        server answers it and kopf expects: it re-reads the object and tries again."""
        if isinstance(exc, jsonpatch.JsonPatchTestFailed):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)


class KubeServer:
    """The emulator on 127.0.0.1 in a thread of its own, with every built-in resource known."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.api = StampingEmulator()
        # what load_bundled() reads (its importlib.resources call is deprecated, and
        # pytest turns the warning into an error): the built-in resources of a k3s cluster
        bundled = importlib.resources.files("kmock._internal") / "resources.json.gz"
        self.api.resources.load_data(gzip.decompress(bundled.read_bytes()))
        self._server = kmock.Server(self.api)

    def start(self) -> KubeServer:
        self._thread.start()
        self.call(self._enter)
        return self

    async def _enter(self) -> None:
        await self.api.__aenter__()
        await self._server.__aenter__()

    async def _exit(self) -> None:
        await self._server.__aexit__(None, None, None)
        await self.api.__aexit__(None, None, None)

    def stop(self) -> None:
        self.call(self._exit)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=TIMEOUT_S)
        self.loop.close()

    def call(self, coro: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro(), self.loop).result(TIMEOUT_S)

    @property
    def url(self) -> str:
        return str(self._server.url).rstrip("/")

    def kubeconfig(self, path: Path) -> Path:
        """What ``kubectl config view`` would show for an unauthenticated local server."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "emulator", "user": "tester"}}],
            "current-context": "test",
        }
        path.write_text(json.dumps(doc))  # JSON is YAML: kopf's kubeconfig reader takes it
        return path

    # -- what kubectl would do ------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None) -> Any:
        ctype = "application/merge-patch+json" if method == "PATCH" else "application/json"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": ctype, "User-Agent": TEST_AGENT},
        )
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str) -> Any:
        """The object at ``path``, or None once it is gone (404)."""
        try:
            return self.request("GET", path)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
