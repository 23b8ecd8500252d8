"""The qemu provider against the provider kit: a real VM, real qemu, real faults.

Faults are stand-ins on PATH for the tools ``create`` runs (``mkfs.vfat`` for the seed,
``qemu-img`` for the overlay, qemu itself): each marks it was reached, then fails
(ERROR), or signals its parent (the provider, or the CLI) and goes on to run the real
tool, so the work is done when the signal lands.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cloud_init
from inletsctl import release
from providers.models import HostSpec, ProviderConfig
from providers.qemu import LOGS, QemuProvider
from providers.testing.conformance import ProviderConformance
from providers.testing.faults import Fault
from tests.providers.test_local import host_dir_resources
from tests.vm.conftest import BOOT_TIMEOUT_S

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

TOOLS = {"make_seed": "mkfs.vfat", "make_overlay": "qemu-img", "start_vm": "qemu-system-x86_64"}
SIGNALS = {Fault.INTERRUPT: "INT", Fault.TERMINATE: "TERM", Fault.KILL: "KILL"}


class QemuMachine:
    failure_points = tuple(TOOLS)

    def __init__(self, provider: QemuProvider, bindir: Path) -> None:
        self.provider = provider
        self.bindir = bindir
        self.real = {tool: shutil.which(tool) for tool in TOOLS.values()}
        self.marker = bindir.parent / "fault-reached"

    def resources(self) -> set[str]:
        return host_dir_resources(self.provider.root, skip=frozenset({LOGS}))

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        tool = TOOLS[step]
        body = f'rm -f -- "$0"\ntouch {self.marker}\n'  # one-shot, like every fault
        if fault is Fault.ERROR:
            body += f"echo '{tool}: injected failure' >&2\nexit 1\n"
        else:
            body += f'kill -{SIGNALS[fault]} "$PPID"\nexec {self.real[tool]} "$@"\n'
        wrapper = self.bindir / tool
        wrapper.write_text("#!/bin/sh\n" + body)
        wrapper.chmod(0o755)

    def struck(self, step: str) -> bool:
        return self.marker.exists()

    def foreign_vm(self) -> None:
        return None


class TestQemuConformance(ProviderConformance):
    failure_points = QemuMachine.failure_points
    faults = (Fault.ERROR, Fault.INTERRUPT, Fault.TERMINATE)
    max_polls = BOOT_TIMEOUT_S // 2
    poll_interval = 2.0

    @pytest.fixture(autouse=True)
    def _release(self, guest_release: str) -> None:
        self.release_url = guest_release

    @pytest.fixture
    def bindir(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        d = tmp_path / "bin"
        d.mkdir()
        monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
        return d

    @pytest.fixture
    def provider(self, state_dir: Path, vm_image: Path, bindir: Path) -> Iterator[QemuProvider]:
        provider = QemuProvider(
            ProviderConfig(state_dir=str(state_dir), extra={"image_dir": str(vm_image)})
        )
        yield provider
        for host in provider.list():
            provider.purge(host.id)

    @pytest.fixture
    def fake(self, provider: QemuProvider, bindir: Path) -> QemuMachine:
        return QemuMachine(provider, bindir)

    @pytest.fixture
    def cli_env(self, bindir: Path) -> dict[str, str]:
        return {"PATH": os.environ["PATH"], "INLETSCTL_RELEASE_URL": self.release_url}

    def make_spec(self, provider: QemuProvider) -> HostSpec:  # type: ignore[override]
        """The real user-data, so the lifecycle case boots to a tunnel that answers."""
        spec = super().make_spec(provider)
        pyz = release.artifact(self.release_url)
        server = dataclasses.replace(spec.server, release_url=pyz.url, artifact_sha256=pyz.sha256)
        return dataclasses.replace(spec, server=server, user_data=cloud_init.render(server))
