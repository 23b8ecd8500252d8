"""Shell completion offers the hosts in the state and the installed providers.

The CLI runs as a child process with the environment a shell's completion script sets
(typer's protocol: ``_INLETSCTL_COMPLETE`` and ``_TYPER_COMPLETE_ARGS``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inletsctl.store import HostRecord, Store

CLI_TIMEOUT_S = 60


def complete(shell: str, line: str, state: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "inletsctl"],
        env={
            **os.environ,
            "INLETSCTL_STATE_DIR": str(state),
            "_INLETSCTL_COMPLETE": f"complete_{shell}",
            "_TYPER_COMPLETE_ARGS": line,
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",  # what fish's script asks for
        },
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def record(store: Store, host_id: str, status: str) -> None:
    store.add(
        HostRecord(
            id=host_id,
            provider="hetzner",
            name=f"n-{host_id}",
            status=status,
            mode="tcp",
            engine="tunnel-core",
            control_port=8123,
            data_port=8000,
            fingerprint="sha256:00",
            token="t",
        )  # fmt: skip
    )


@pytest.mark.parametrize("command", ["get", "logs", "connect", "delete", "delete --id"])
@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_host_ids_of_live_hosts_are_offered(tmp_path: Path, shell: str, command: str) -> None:
    store = Store(tmp_path)
    record(store, "a1b2c3d4e5f6", "ready")
    record(store, "a1ffffffffff", "deleted")
    record(store, "b9b9b9b9b9b9", "ready")
    offered = complete(shell, f"inletsctl {command} a1", tmp_path)
    assert "a1b2c3d4e5f6" in offered
    assert "a1ffffffffff" not in offered, "a deleted host is not offered"
    assert "b9b9b9b9b9b9" not in offered, "only ids starting with what was typed"


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_provider_names_are_offered(tmp_path: Path, shell: str) -> None:
    offered = complete(shell, "inletsctl create --provider d", tmp_path)
    assert "digitalocean" in offered and "hetzner" not in offered
