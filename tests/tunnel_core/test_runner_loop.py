"""Which event loop each role runs on (the choice is measured; see tunnel_core.runner)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tunnel_core.errors import ConfigError
from tunnel_core.runner import wants_uvloop


@pytest.mark.parametrize(
    ("choice", "server", "client"),
    [("auto", True, False), ("uvloop", True, True), ("asyncio", False, False)],
)
def test_the_loop_per_role(choice: str, server: bool, client: bool) -> None:
    assert (wants_uvloop("server", choice), wants_uvloop("client", choice)) == (server, client)


def test_an_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="TUNNEL_CORE_LOOP"):
        wants_uvloop("server", "trio")


def test_the_cli_refuses_an_unknown_loop_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tunnel_core", "tcp", "client", "--url", "wss://127.0.0.1:1",
         "--token", "t", "--tls-fingerprint", "sha256:" + "0" * 64, "--ports", "8080"],
        env={"TUNNEL_CORE_LOOP": "trio", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "TUNNEL_CORE_LOOP" in done.stderr
