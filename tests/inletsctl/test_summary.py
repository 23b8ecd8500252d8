from __future__ import annotations

import shlex

import pytest

from inletsctl.errors import UsageError
from inletsctl.output import as_dict, summary_lines
from inletsctl.store import HostRecord
from inletsctl.summary import check_upstream, client_argv, summarise

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
        "tunnel-core", "tcp", "client", "--url", "wss://[2001:db8::1]:8123",
        "--token-env", "INLETS_TOKEN", "--tls-fingerprint", RECORD.fingerprint,
        "--upstream", "127.0.0.1", "--ports", "80,2222:22",
    ]  # fmt: skip


def test_the_token_never_enters_the_command_shown_or_not() -> None:
    for show in (True, False):
        s = summarise(RECORD, show_token=show)
        assert "s3cret" not in s.client_command
        assert "--token-env INLETS_TOKEN" in s.client_command
        assert s.token == ("s3cret" if show else None)


def test_http_upstream_default_saved_and_overridden_and_inlets_pro() -> None:
    http = HostRecord(**{**RECORD.__dict__, "mode": "http", "ip": "192.0.2.1"})
    assert client_argv(http)[-2:] == ["--upstream", "http://127.0.0.1:8080"]
    saved = HostRecord(**{**http.__dict__, "upstream": "http://127.0.0.1:3000"})
    assert client_argv(saved)[-2:] == ["--upstream", "http://127.0.0.1:3000"]
    assert client_argv(saved, "http://127.0.0.1:4000")[-1] == "http://127.0.0.1:4000"
    pro = HostRecord(**{**RECORD.__dict__, "engine": "inlets-pro"})
    argv = client_argv(pro)
    assert argv[0] == "inlets-pro" and "--tls-fingerprint" not in argv


@pytest.mark.parametrize(
    ("mode", "engine", "upstream", "ok"),
    [
        ("tcp", "tunnel-core", "127.0.0.1", True),
        ("tcp", "tunnel-core", "::1", True),
        ("tcp", "tunnel-core", "db.internal", True),
        ("tcp", "tunnel-core", "http://127.0.0.1", False),
        ("tcp", "tunnel-core", "a b", False),
        ("http", "tunnel-core", "http://127.0.0.1:8080", True),
        ("http", "tunnel-core", "api.example.com=http://127.0.0.1:3000", True),
        ("http", "tunnel-core", "https://127.0.0.1", False),  # our client speaks http only
        ("http", "tunnel-core", "ftp://x", False),
        ("http", "inlets-pro", "https://127.0.0.1", True),
        ("http", "inlets-pro", "ftp://x", False),
    ],
)
def test_upstream_is_checked_per_mode(mode: str, engine: str, upstream: str, ok: bool) -> None:
    if ok:
        assert check_upstream(mode, engine, upstream) == upstream
    else:
        with pytest.raises(UsageError, match="--upstream"):
            check_upstream(mode, engine, upstream)


def test_a_deleted_host_has_no_commands() -> None:
    s = summarise(HostRecord(**{**RECORD.__dict__, "status": "deleted"}), show_token=True)
    assert (s.client_command, s.delete_command) == ("", "")


def test_ready_only_when_the_server_answered_with_the_pinned_certificate() -> None:
    def ready(status: str) -> bool:
        return summarise(HostRecord(**{**RECORD.__dict__, "status": status}), False).ready

    assert ready("ready")
    assert not any(map(ready, ["active", "unready", "creating", "failed", "deleted"]))


def test_public_url_per_mode_in_json_and_text() -> None:
    http = HostRecord(**{**RECORD.__dict__, "mode": "http", "ip": "192.0.2.1", "ports": ""})
    https = HostRecord(**{**http.__dict__, "domains": "a.example.com,b.example.com"})
    pending = HostRecord(**{**http.__dict__, "ip": ""})
    assert summarise(http, False).public_url == "http://192.0.2.1:8000"
    assert summarise(https, False).public_url == "https://a.example.com"
    assert summarise(pending, False).public_url is None
    assert summarise(RECORD, False).public_url is None, "TCP: the ports say it"
    assert as_dict(summarise(http, False))["public_url"] == "http://192.0.2.1:8000"
    assert "Public URL: http://192.0.2.1:8000" in summary_lines(summarise(http, False))
    tcp = summary_lines(summarise(RECORD, False))
    assert "Public TCP ports: [2001:db8::1]:80, [2001:db8::1]:2222" in tcp
    anyport = HostRecord(**{**RECORD.__dict__, "ports": ""})
    assert "Public TCP ports: any in 1024-65535 the client asks for" in summary_lines(
        summarise(anyport, False)
    )


def test_text_summary_says_how_to_set_the_token() -> None:
    shown = summary_lines(summarise(RECORD, show_token=True))
    assert "  export INLETS_TOKEN=s3cret" in shown
    hidden = "\n".join(summary_lines(summarise(RECORD, show_token=False)))
    assert "s3cret" not in hidden
    assert "INLETS_TOKEN set to the token from `inletsctl get h1 --show-token`" in hidden
    assert "inletsctl connect h1" in hidden
