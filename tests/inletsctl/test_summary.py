from __future__ import annotations

import shlex

from inletsctl.store import HostRecord
from inletsctl.summary import client_argv, summarise

RECORD = HostRecord(
    id="h1",
    provider="hetzner",
    name="n",
    status="active",
    mode="tcp",
    engine="tunnel-core",
    control_port=8123,
    data_port=8000,
    fingerprint="sha256:" + "c" * 64,
    token="s3cret",
    ip="2001:db8::1",
    ports="80,2222:22",
)


def test_client_command_round_trips_through_a_shell() -> None:
    s = summarise(RECORD, show_token=True)
    assert shlex.split(s.client_command) == [
        "tunnel-core", "tcp", "client", "--url", "wss://[2001:db8::1]:8123", "--token", "s3cret",
        "--tls-fingerprint", RECORD.fingerprint, "--upstream", "127.0.0.1",
        "--ports", "80,2222:22",
    ]  # fmt: skip


def test_hidden_token_reads_the_environment() -> None:
    s = summarise(RECORD, show_token=False)
    assert s.token is None and "s3cret" not in s.client_command
    assert "--token-env INLETS_TOKEN" in s.client_command


def test_http_upstream_default_and_inlets_pro() -> None:
    http = HostRecord(**{**RECORD.__dict__, "mode": "http", "ip": "192.0.2.1"})
    assert client_argv(http, "", None)[-2:] == ["--upstream", "http://127.0.0.1:8080"]
    pro = HostRecord(**{**RECORD.__dict__, "engine": "inlets-pro"})
    argv = client_argv(pro, "", "s3cret")
    assert argv[0] == "inlets-pro" and "--tls-fingerprint" not in argv


def test_ready_only_when_the_server_answered_with_the_pinned_certificate() -> None:
    def ready(status: str) -> bool:
        return summarise(HostRecord(**{**RECORD.__dict__, "status": status}), False).ready

    assert ready("ready")
    assert not any(map(ready, ["active", "unready", "creating", "failed", "deleted"]))
