"""Faults at the moment a cloud has done the work: lost answers, Ctrl-C, SIGTERM, kill -9.

A :class:`FaultPlan` holds one-shot faults, each armed for a named step of
``create`` (a request pattern such as ``POST /v2/droplets``). Whatever serves the
request (a fake API's handler, or :class:`FaultProxy` in front of an emulator such
as moto) asks the plan for the fault of each request and applies it:

* ``ERROR``: answer with the API's own 5xx before doing anything;
* ``LOST``: do it, then answer 5xx (the cloud did the work; the caller never knows);
* ``DROPPED``: do it, then close the connection without an answer;
* ``INTERRUPT`` / ``TERMINATE``: do it, then deliver SIGINT / SIGTERM to the main
  thread of this process (where the provider under test waits for the answer), then drop;
* ``KILL``: do it, then ``kill -9`` the process that :meth:`FaultPlan.arm` names
  (a CLI under test), then drop.

Signals go to the main thread with ``pthread_kill`` before the answer is sent, so
the waiting call is interrupted inside its read every time: no timing involved.
"""

from __future__ import annotations

import enum
import http.client
import os
import re
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["IN_PROCESS", "Fault", "FaultPlan", "FaultProxy", "Strike", "send_answer"]


class Fault(str, enum.Enum):
    ERROR = "error"
    LOST = "lost"
    DROPPED = "dropped"
    INTERRUPT = "interrupt"
    TERMINATE = "terminate"
    KILL = "kill"

    @property
    def acts(self) -> bool:
        """True when the cloud does the work before the fault strikes."""
        return self is not Fault.ERROR


#: the faults a provider object in this process can meet (KILL needs a child process)
IN_PROCESS = (Fault.ERROR, Fault.LOST, Fault.DROPPED, Fault.INTERRUPT, Fault.TERMINATE)


@dataclass
class Strike:
    """One armed fault; ``victim`` returns the PID that ``KILL`` kills (it may block)."""

    step: str
    fault: Fault
    victim: Callable[[], int] | None = None

    def after_the_work(self) -> None:
        """Deliver the signal, if this fault is one; the caller then drops or errors."""
        if self.fault is Fault.INTERRUPT:
            signal.pthread_kill(_main_ident(), signal.SIGINT)
        elif self.fault is Fault.TERMINATE:
            signal.pthread_kill(_main_ident(), signal.SIGTERM)
        elif self.fault is Fault.KILL:
            if self.victim is None:
                raise ValueError("Fault.KILL needs a victim")
            os.kill(self.victim(), signal.SIGKILL)

    @property
    def answers(self) -> bool:
        """Whether an (error) answer is sent at all; the others drop the connection."""
        return self.fault in (Fault.ERROR, Fault.LOST)


def _main_ident() -> int:
    ident = threading.main_thread().ident
    assert ident is not None
    return ident


class FaultPlan:
    """Named steps (regexes searched in ``"METHOD /path body"``) and their armed faults."""

    def __init__(self, steps: Mapping[str, str]) -> None:
        self.steps = {name: re.compile(pattern, re.DOTALL) for name, pattern in steps.items()}
        self._armed: list[Strike] = []
        self._lock = threading.Lock()
        #: every strike that happened, in order (tests assert the fault was reached)
        self.struck: list[Strike] = []

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        if step not in self.steps:
            raise ValueError(f"unknown step {step!r}; known: {sorted(self.steps)}")
        with self._lock:
            self._armed.append(Strike(step, fault, victim))

    def take(self, method: str, path: str, body: bytes) -> Strike | None:
        """The armed fault for this request, removed from the plan (faults are one-shot)."""
        text = f"{method} {path} {body.decode('utf-8', 'replace')}"
        with self._lock:
            for strike in self._armed:
                if self.steps[strike.step].search(text):
                    self._armed.remove(strike)
                    self.struck.append(strike)
                    return strike
        return None


ErrorAnswer = Callable[[], tuple[int, Mapping[str, str], bytes]]


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of an API emulator, applying a plan.

    For emulators we cannot change (moto): point the provider (or the CLI) at
    :attr:`url`; requests are forwarded unchanged, headers included, so signed
    requests still verify. ``error`` builds the API's own 5xx answer.
    """

    def __init__(self, upstream: str, plan: FaultPlan, error: ErrorAnswer) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.plan = plan
        self.error = error
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=dict(headers))
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def send_answer(
    handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], payload: bytes
) -> None:
    """One complete HTTP/1.1 answer with its Content-Length (fakes and the proxy alike)."""
    handler.send_response(status)
    for key, value in headers.items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def _proxy_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            strike = proxy.plan.take(self.command, self.path, body)
            if strike is not None and strike.fault is Fault.ERROR:
                self._answer(*proxy.error())
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            status, got, payload = proxy.forward(self.command, self.path, headers, body)
            if strike is None:
                kept = [(k, v) for k, v in got if k.lower() not in _HOP_BY_HOP]
                self._answer(status, dict(kept), payload)
                return
            strike.after_the_work()
            if strike.answers:
                self._answer(*proxy.error())
            else:
                self.close_connection = True

        def _answer(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
            send_answer(self, status, headers, payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest shows failures, not every request."""

    return _Handler
