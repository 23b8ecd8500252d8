"""The `local` provider against the shared conformance suite and its own promises.

Its "cloud" is this machine: the resources are the host directories under the state
dir and the live server processes; the failure point is a server that exits at start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from providers import kit
from providers.errors import HostNotFound, ProviderAPIError
from providers.local import META, PYTHON_ENV, LocalProvider, healthz, processes_naming
from providers.models import HostStatus, ProviderConfig
from providers.testing.conformance import ProviderConformance
from providers.testing.faults import Fault


def host_dir_resources(root: Path, skip: frozenset[str] = frozenset()) -> set[str]:
    """What a loopback provider has made: its host directories and the live processes
    whose command line names them (the local and qemu providers' tag)."""
    found: set[str] = set()
    for hdir in root.iterdir() if root.is_dir() else ():
        if hdir.name not in skip:
            found.add(f"dir:{hdir.name}")
            found |= {f"pid:{pid}" for pid in processes_naming(hdir)}
    return found


class LocalMachine:
    """The kit's ``FakeCloud`` for the local "cloud": what exists, and faults at start.

    A fault is a stand-in interpreter that marks it was reached, then fails to start
    (ERROR), or signals its parent (the provider, or the CLI: INTERRUPT, TERMINATE,
    KILL) and goes on to start the server: the work is done when the signal lands.
    """

    failure_points = ("start_server",)
    _SIGNALS = {Fault.INTERRUPT: "INT", Fault.TERMINATE: "TERM", Fault.KILL: "KILL"}

    def __init__(self, provider: LocalProvider, tmp: Path) -> None:
        self.provider = provider
        self.python = tmp / "python-at-fault"
        self.marker = tmp / "fault-reached"

    def resources(self) -> set[str]:
        return host_dir_resources(self.provider.root)

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        assert step == "start_server"
        body = f"touch {self.marker}\n"
        if fault is Fault.ERROR:
            body += "echo 'cannot start' >&2\nexit 3\n"
        else:
            body += f'kill -{self._SIGNALS[fault]} "$PPID"\nexec {sys.executable} "$@"\n'
        self.python.write_text("#!/bin/sh\n" + body)
        self.python.chmod(0o755)
        self.provider.python = str(self.python)

    def struck(self, step: str) -> bool:
        return self.marker.exists()

    def foreign_vm(self) -> None:
        """No VMs of its own: a stranger's PID is the local case (tested below)."""
        return None

    def fail_at(self, step: str) -> None:
        self.arm(step, Fault.ERROR)


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalProvider]:
    provider = LocalProvider(ProviderConfig(state_dir=str(tmp_path / "state")))
    yield provider
    provider.python = sys.executable
    for host in provider.list():
        provider.delete(host_id=host.id)


class TestLocalConformance(ProviderConformance):
    failure_points = LocalMachine.failure_points
    faults = (Fault.ERROR, Fault.INTERRUPT, Fault.TERMINATE)

    @pytest.fixture
    def cli_env(self, fake: LocalMachine) -> dict[str, str]:
        return {PYTHON_ENV: str(fake.python)}

    @pytest.fixture
    def provider(self, local: LocalProvider) -> LocalProvider:
        return local

    @pytest.fixture
    def fake(self, local: LocalProvider, tmp_path: Path) -> LocalMachine:
        return LocalMachine(local, tmp_path)


def test_server_is_healthy_and_pinned(local: LocalProvider) -> None:
    spec = ProviderConformance().make_spec(local)
    host = local.create(spec)
    assert host.status is HostStatus.ACTIVE
    port = int(host.additional["control_port"])
    assert healthz("127.0.0.1", port, spec.server.tls_fingerprint)["status"] == "ok"
    with pytest.raises(OSError):  # any other certificate is refused
        healthz("127.0.0.1", port, "sha256:" + "0" * 64)
    hdir = Path(host.additional["state_dir"])
    modes = {p.name: p.stat().st_mode & 0o777 for p in hdir.iterdir()}
    assert modes["token"] == modes["tls.key"] == 0o600


def test_delete_stops_the_process(local: LocalProvider) -> None:
    host = local.create(ProviderConformance().make_spec(local))
    pid = int(host.additional["pid"])
    assert Path(f"/proc/{pid}").exists()
    local.delete(host_id=host.id)
    assert not Path(f"/proc/{pid}").exists(), "the server process is gone (and reaped)"
    assert not Path(host.additional["state_dir"]).exists()
    with pytest.raises(HostNotFound):
        local.status(host.id)


def test_delete_never_signals_a_pid_that_is_not_ours(local: LocalProvider) -> None:
    host = local.create(ProviderConformance().make_spec(local))
    ours = local._children[host.id]
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        meta_path = Path(host.additional["state_dir"]) / META
        meta = json.loads(meta_path.read_text())
        meta["pid"] = stranger.pid  # as if our server died and the PID was reused
        meta_path.write_text(json.dumps(meta))
        assert local.status(host.id).status is HostStatus.FAILED
        local.delete(host_id=host.id)
        assert stranger.poll() is None, "a process that is not ours was left alone"
    finally:
        stranger.kill()
        stranger.wait()
        ours.terminate()
        ours.wait(timeout=10)


def test_failed_start_reports_the_server_log(local: LocalProvider, tmp_path: Path) -> None:
    machine = LocalMachine(local, tmp_path)
    machine.fail_at("start_server")
    with pytest.raises(ProviderAPIError, match="cannot start"):
        kit.create_host(local, ProviderConformance().make_spec(local))
    assert machine.resources() == set()


def test_console_output_is_the_server_log(local: LocalProvider) -> None:
    host = local.create(ProviderConformance().make_spec(local))
    assert "listening" in local.console_output(host.id).lower()
    with pytest.raises(HostNotFound):
        local.console_output("0" * 12)


def test_delete_by_ip_is_ambiguous_with_two_hosts(local: LocalProvider) -> None:
    local.create(ProviderConformance().make_spec(local))
    local.create(ProviderConformance().make_spec(local))
    with pytest.raises(HostNotFound, match="2 local hosts"):
        local.delete(ip="127.0.0.1")
