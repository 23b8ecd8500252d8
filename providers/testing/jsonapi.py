"""Plumbing for stateful fakes of JSON cloud APIs: an HTTP server on loopback.

A fake subclasses ``JsonApiFake``, lists its routes, names the request of each step
of ``create`` (``steps``) and says how its API spells an error body. This base does
the rest the same way for every cloud: bearer-token auth, the faults of
:mod:`providers.testing.faults` per step (``arm``; ``fail_at`` is ``arm(step,
Fault.ERROR)``), a one-shot 429 (``throttle_once``), outages (``refuse``), and a
record of every request so tests can look at what the real SDK sent. The fake
answers from a thread of the test process, so the SDK under test speaks real HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qs, urlsplit

from providers.testing.faults import Fault, FaultPlan, send_answer

JSON = dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    #: the body as sent, for APIs that also take non-JSON bodies (a text/plain PATCH)
    raw: bytes = b""


@dataclass
class Response:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    #: a body that is no JSON (a blob), sent as is with the Content-Type in ``headers``
    raw: bytes | None = None


Handler = Callable[[Request, "re.Match[str]"], Response]
FakeT = TypeVar("FakeT", bound="JsonApiFake")


class JsonApiFake:
    """A stateful fake of a JSON REST API, served from a thread on 127.0.0.1:0."""

    #: step name -> regex searched in "METHOD /path body", in the order ``create``
    #: reaches them, e.g. {"create_server": r"^POST /v1/servers "}
    steps: ClassVar[dict[str, str]] = {}
    #: the API's path prefix, e.g. "/v2"
    prefix = ""
    #: (status, code, message) of the 5xx that ``Fault.ERROR`` and ``Fault.LOST`` answer
    fault_answer: tuple[int, str, str] = (500, "server_error", "Unexpected server-side error")

    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self.plan = FaultPlan(self.steps)
        self._throttle: list[str] = []
        self._refusals: list[tuple[str, Response]] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    # -- life cycle -------------------------------------------------------
    def start(self) -> JsonApiFake:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"

    # -- control ----------------------------------------------------------
    @property
    def failure_points(self) -> Sequence[str]:
        return tuple(self.steps)

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        """The next request of ``step`` meets ``fault`` (see :mod:`providers.testing.faults`)."""
        self.plan.arm(step, fault, victim)

    def struck(self, step: str) -> bool:
        return any(strike.step == step for strike in self.plan.struck)

    def fail_at(self, step: str) -> None:
        """The next request of ``step`` fails with a 500 before anything is done."""
        self.arm(step, Fault.ERROR)

    def throttle_once(self, pattern: str = ".*") -> None:
        """Answer the next request matching ``pattern`` ("POST /v2/droplets") with a 429."""
        with self.lock:
            self._throttle.append(pattern)

    def refuse(self, pattern: str, status: int, code: str, message: str) -> None:
        """From now on, answer every request matching ``pattern`` ("DELETE /v2/.*") with
        this error: an outage or a revoked permission, rather than a one-off fault."""
        with self.lock:
            self._refusals.append((pattern, self.error(status, code, message)))

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    # -- what a subclass provides -----------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(self.prefix + pattern), handler))

    def error(self, status: int, code: str, message: str) -> Response:
        raise NotImplementedError

    def rate_limited(self) -> Response:
        raise NotImplementedError

    def common_headers(self) -> dict[str, str]:
        return {}

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the token, as the API expects it (a bearer token)."""
        return request.headers.get("authorization") == f"Bearer {self.token}"

    # -- dispatch ---------------------------------------------------------
    def dispatch(self, request: Request) -> Response:
        with self.lock:
            self.requests.append(request)
            if not self.authorized(request):
                return self.error(401, "unauthorized", "Unable to authenticate you")
            line = f"{request.method} {request.path}"
            for pattern in self._throttle:
                if re.fullmatch(pattern, line):
                    self._throttle.remove(pattern)
                    return self.rate_limited()
            for pattern, refusal in self._refusals:
                if re.fullmatch(pattern, line):
                    return refusal
            for method, route, handler in self._routes:
                match = route.fullmatch(request.path)
                if match and method == request.method:
                    return handler(request, match)
            return self.error(404, "not_found", "The resource you requested could not be found.")


def serving(fake: FakeT) -> Iterator[FakeT]:
    """Start ``fake``, hand it over, and stop it however the test ends.

    The body of a pytest fixture (``yield from serving(FakeMyCloud())``), so that no
    test leaves a server thread behind when it fails.
    """
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def _handler_for(fake: JsonApiFake) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def _serve(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = Request(
                method=self.command,
                path=split.path,
                query=parse_qs(split.query),
                body=body,
                headers={k.lower(): v for k, v in self.headers.items()},
                raw=raw,
            )
            strike = fake.plan.take(request.method, request.path, raw)
            if strike is not None and strike.fault is Fault.ERROR:
                response = fake.error(*fake.fault_answer)
            else:
                response = fake.dispatch(request)
            if strike is not None and strike.fault.acts:
                strike.after_the_work()
                if not strike.answers:
                    self.close_connection = True
                    return
                response = fake.error(*fake.fault_answer)
            headers = {**fake.common_headers(), **response.headers}
            if response.raw is not None:
                payload = response.raw
            elif response.body is not None:
                payload = json.dumps(response.body).encode()
                headers["Content-Type"] = "application/json; charset=utf-8"
            else:
                payload = b""
            send_answer(self, response.status, headers, payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows failures, not every request."""

    return _Handler


def page(items: list[JSON], request: Request, max_per_page: int) -> tuple[list[JSON], int, int]:
    """(items on the requested page, page number, last page) as both APIs paginate."""
    per_page = min(int(request.query.get("per_page", ["25"])[0]), max_per_page)
    number = int(request.query.get("page", ["1"])[0])
    last = max(1, -(-len(items) // per_page))
    start = (number - 1) * per_page
    return items[start : start + per_page], number, last
