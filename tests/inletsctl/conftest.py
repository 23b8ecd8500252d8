"""Fixtures for CLI tests: a private state dir and a helper that runs `inletsctl`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inletsctl.store import STATE_DIR_ENV
from tests.conftest import REPO, free_port
from tests.inletsctl import latecloud

#: Bound on every `inletsctl` subprocess a test starts.
CLI_TIMEOUT_S = 60


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = tmp_path / "state"
    monkeypatch.setenv(STATE_DIR_ENV, str(d))
    yield d
    _stop_local_servers(d)


def _stop_local_servers(d: Path) -> None:
    """Whatever a failed test left running in this state dir is stopped by its PID."""
    from providers.local import LocalProvider
    from providers.models import ProviderConfig

    provider = LocalProvider(ProviderConfig(state_dir=str(d)))
    for host in provider.list():
        provider.delete(host_id=host.id)


@pytest.fixture
def plugins(tmp_path: Path, state_dir: Path) -> Iterator[dict[str, str]]:
    """The environment under which the real CLI finds the latecloud/mutecloud providers."""
    site = tmp_path / "site"
    info = site / "latecloud-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: latecloud\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[inletsctl.providers]\n"
        "latecloud = tests.inletsctl.latecloud:LateCloud\n"
        "mutecloud = tests.inletsctl.latecloud:MuteCloud\n"
    )
    try:
        yield {"PYTHONPATH": f"{site}:{REPO}", latecloud.PORT_ENV: str(free_port())}
    finally:
        latecloud.stop_all(state_dir)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )
