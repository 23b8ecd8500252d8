"""Readiness against real tunnel servers: the probe's verdicts, then `create --wait ready`
and `inletsctl logs` end to end, through the real CLI and a provider plugin
(tests/inletsctl/latecloud.py) whose VM's tunnel server starts late.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inletsctl.readiness import probe
from inletsctl.store import Store
from providers.local import pid_alive
from tests.certs import self_signed
from tests.conftest import Engine, free_port
from tests.inletsctl import latecloud
from tests.inletsctl.conftest import CLI_TIMEOUT_S, run_cli

pytestmark = pytest.mark.network
#: generous: only a server that never gets ready should ever reach it
READY_TIMEOUT = "60s"


# -- the probe ------------------------------------------------------------------------


def test_our_server_is_ready(engine: Engine) -> None:
    server = engine.tcp_server()
    assert probe("127.0.0.1", server.control_port, server.fingerprint, 5.0) is None
    upper = server.fingerprint.upper().replace("SHA256:", "sha256:")
    assert probe("127.0.0.1", server.control_port, upper, 5.0) is None, "as the client reads it"


def test_a_server_with_another_certificate_is_never_ready(engine: Engine) -> None:
    server = engine.tcp_server()
    _, _, other = self_signed()
    assert probe("127.0.0.1", server.control_port, other, 5.0) == "certificate mismatch"


def test_a_closed_port_is_refused() -> None:
    assert probe("127.0.0.1", free_port(), "sha256:" + "0" * 64, 5.0) == "connection refused"


def test_a_port_that_never_answers_times_out() -> None:
    with socket.socket() as silent:  # the kernel completes the handshake; nobody speaks TLS
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        assert probe("127.0.0.1", port, "sha256:" + "0" * 64, 0.5) == "timed out"


def test_no_ip_is_not_probed() -> None:
    assert probe("", 8123, "sha256:" + "0" * 64, 5.0) == "no IP address yet"


class _Unhealthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def unhealthy(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A TLS server with a certificate we pin that answers /healthz with 503."""
    cert, key, fingerprint = self_signed()
    (tmp_path / "c.pem").write_text(cert)
    (tmp_path / "k.pem").write_text(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], fingerprint
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_an_unhealthy_server_says_what_it_answered(unhealthy: tuple[int, str]) -> None:
    port, fingerprint = unhealthy
    assert probe("127.0.0.1", port, fingerprint, 5.0) == "/healthz answered 503"


# -- create --wait ready through the CLI --------------------------------------------------


def create(env: dict[str, str], *args: str, provider: str = "latecloud") -> tuple[int, dict, str]:
    res = run_cli(
        "create", "-p", provider, "--tcp", "--ports", "8080", "--poll", "100ms", "-o", "json",
        *args, env=env,
    )  # fmt: skip
    return res.returncode, json.loads(res.stdout), res.stderr


def server_pid(state_dir: Path, host_id: str) -> int:
    return latecloud.server_pid(state_dir / "latecloud" / host_id)


def test_create_waits_until_the_late_server_answers(
    plugins: dict[str, str], state_dir: Path
) -> None:
    rc, doc, err = create(plugins, "--timeout", READY_TIMEOUT)
    assert rc == 0, err
    assert doc["ready"] is True and doc["status"] == "ready"
    port = int(plugins[latecloud.PORT_ENV])
    assert doc["control_port"] == port and doc["url"] == f"wss://127.0.0.1:{port}"
    vm = f"late-{doc['id']}"
    lines = err.splitlines()
    assert lines[:3] == [f"[{n}] Host: {vm}, status: creating" for n in (1, 2, 3)]
    assert lines[-1] == f"[{len(lines)}] Host: {vm}, status: active, tunnel: ready"
    assert Store(state_dir).get(doc["id"]).status == "ready"
    assert probe("127.0.0.1", port, doc["tls_fingerprint"], 5.0) is None

    pid = server_pid(state_dir, doc["id"])
    assert pid, "the server the VM started still runs"
    gone = run_cli("delete", "--id", doc["id"], "-o", "json", env=plugins)
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["status"] == "deleted"
    assert not pid_alive(pid)


def test_a_server_with_another_certificate_times_out_unready_and_is_kept(
    plugins: dict[str, str], state_dir: Path
) -> None:
    env = {**plugins, latecloud.CERT_ENV: "other"}
    rc, doc, err = create(env, "--timeout", "2s")
    assert rc == 1
    assert doc["ready"] is False and doc["status"] == "unready", "the document still comes"
    host_id = doc["id"]
    assert "tunnel: certificate mismatch" in err
    assert "tunnel: ready" not in err
    assert re.search(r"Error: .* not ready after 2s \(certificate mismatch\)", err), err
    assert f"inletsctl logs {host_id}" in err and f"inletsctl delete --id {host_id}" in err
    assert Store(state_dir).get(host_id).status == "unready"
    assert server_pid(state_dir, host_id), "kept, not undone: the user may want its logs"

    logs = run_cli("logs", host_id, env=env)
    assert logs.returncode == 0, logs.stderr
    assert latecloud.LISTENING.decode() in logs.stdout, "the VM's own log"
    as_json = run_cli("logs", host_id, "-o", "json", env=env)
    assert latecloud.LISTENING.decode() in json.loads(as_json.stdout)["console_output"]

    gone = run_cli("delete", "--id", host_id, env=env)
    assert gone.returncode == 0, gone.stderr
    assert Store(state_dir).get(host_id).status == "deleted"
    assert not (state_dir / "latecloud" / host_id).exists()


def test_wait_running_and_none_never_probe(plugins: dict[str, str], state_dir: Path) -> None:
    env = {**plugins, latecloud.CERT_ENV: "other"}  # a probe could never pass
    rc, running, err = create(env, "--wait", "running", "--timeout", READY_TIMEOUT)
    assert rc == 0, err
    assert (running["status"], running["ready"]) == ("active", False)
    assert "tunnel:" not in err
    rc, none, err = create(env, "--wait", "none")
    assert rc == 0, err
    assert (none["status"], none["ready"]) == ("creating", False)
    assert err == ""
    for doc in (running, none):
        assert run_cli("delete", "--id", doc["id"], env=env).returncode == 0


def test_logs_of_a_provider_without_console_output(
    plugins: dict[str, str], state_dir: Path
) -> None:
    rc, doc, err = create(plugins, "--wait", "none", provider="mutecloud")
    assert rc == 0, err
    res = run_cli("logs", doc["id"], env=plugins)
    assert res.returncode == 1 and res.stdout == ""
    assert "Error: mutecloud: this provider has no console output API" in res.stderr
    assert "Hint: " in res.stderr and "ssh" in res.stderr
    assert "Traceback" not in res.stderr
    assert run_cli("delete", "--id", doc["id"], env=plugins).returncode == 0


def test_logs_of_an_unknown_host(state_dir: Path) -> None:
    res = run_cli("logs", "nope")
    assert res.returncode == 1
    assert "no host 'nope' in the state" in res.stderr and "inletsctl list" in res.stderr


def test_sigterm_while_polling_undoes_and_exits_1(plugins: dict[str, str], state_dir: Path) -> None:
    argv = [sys.executable, "-m", "inletsctl", "create", "-p", "latecloud", "--tcp"]
    argv += ["--ports", "8080", "--poll", "1m", "--timeout", "5m"]
    with subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1", **plugins},
    ) as proc:
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # the first poll line: create has made the VM
            assert first.startswith("[1] Host: late-"), first
            proc.send_signal(signal.SIGTERM)  # while it waits a minute for the next poll
            rest = proc.stderr.read()
            assert proc.wait(CLI_TIMEOUT_S) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "Error: terminated (SIGTERM)" in rest and "Traceback" not in rest
    (row,) = Store(state_dir).all(include_deleted=True)
    assert row.status == "deleted"
    assert list((state_dir / "latecloud").iterdir()) == [], "the VM was removed by its tag"
