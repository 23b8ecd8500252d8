"""Fixtures for the VM tests: the cached image, a release server the guest reaches, state.

Every wait here is bounded and, when it runs out, says how far the boot got and
shows the end of the serial console; the console logs are copied next to the
test's tmp dir (and to ``$VM_ARTIFACT_DIR`` when set, for CI to keep).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from inletsctl import release
from inletsctl.store import STATE_DIR_ENV
from providers.models import Host, ProviderConfig
from providers.qemu import GUESTFWD_ADDR, LOGS, QemuProvider
from tests.fakes.release_server import ReleaseServer, release_server

REPO = Path(__file__).resolve().parents[2]
#: Bound on building the image when the cache is cold (debootstrap downloads ~150 MB).
IMAGE_BUILD_TIMEOUT_S = 1500
#: Bound on one boot until /healthz answers (TCG on a 2-core CI machine is the slow case).
BOOT_TIMEOUT_S = 480
#: Bound on every `inletsctl` call that does not wait for a boot.
CLI_TIMEOUT_S = 60

T = TypeVar("T")


@pytest.fixture(scope="session")
def vm_image() -> Path:
    """The image directory; built (once, then cached) if `make vm-image` has not run."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "vm_image.sh")],
        capture_output=True,
        text=True,
        timeout=IMAGE_BUILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"scripts/vm_image.sh failed:\n{proc.stderr[-3000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def guest_release() -> Iterator[str]:
    """A release of this tree's pyz, as the guest sees it (through qemu's guestfwd)."""
    pyz = release.local_pyz()
    with release_server() as server:
        server.publish(release.tag(), {release.PYZ_NAME: pyz.read_bytes()})
        yield guest_url(server)


def guest_url(server: ReleaseServer) -> str:
    return server.url.replace("127.0.0.1", GUESTFWD_ADDR, 1)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vm_image: Path) -> Iterator[Path]:
    d = tmp_path / "state"
    monkeypatch.setenv(STATE_DIR_ENV, str(d))
    # The image this session built, even if another build moves the cache's `current`.
    pinned = tmp_path / "vm"
    pinned.mkdir()
    (pinned / "current").symlink_to(vm_image)
    monkeypatch.setenv("INLETSCTL_VM_DIR", str(pinned))
    yield d
    provider = qemu_provider(d, vm_image)
    for host in provider.list():  # whatever a failed test left running, stopped by PID
        provider.delete(host_id=host.id)
    keep_serial_logs(d / "qemu" / LOGS, tmp_path)


def qemu_provider(state: Path, image: Path) -> QemuProvider:
    return QemuProvider(ProviderConfig(state_dir=str(state), extra={"image_dir": str(image)}))


def keep_serial_logs(logs: Path, dest: Path) -> None:
    """Every console log of the test, next to its tmp dir and in $VM_ARTIFACT_DIR for CI."""
    for d in filter(None, (str(dest), os.environ.get("VM_ARTIFACT_DIR"))):
        for log in sorted(logs.glob("*-serial.log")):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log, Path(d) / log.name)


def serial_tail(host: Host, lines: int = 40) -> str:
    try:
        text = Path(host.additional["serial_log"]).read_text(errors="replace")
    except OSError:
        return "(no serial log)"
    return "\n".join(text.splitlines()[-lines:])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, poll: float = 1.0) -> T:
    """Poll ``probe`` until it returns something, or fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if (value := probe()) is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(poll)


def run_cli(*args: str, timeout: float = CLI_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1"},
    )
