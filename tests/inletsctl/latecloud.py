"""Test providers whose "VM" is a real tunnel server that starts late, for readiness tests.

The VM reports ACTIVE at 127.0.0.1 on a control port the test chose
(``LATECLOUD_PORT``), but its tunnel server, a real ``python -m tunnel_core tcp
server`` built from the spec's token and certificate, starts only at the third
``status()`` call (which returns once the server logs that it listens): ``create
--wait ready`` must keep polling until then. With ``LATECLOUD_CERT=other`` the server
gets another certificate, so it answers but is never ready.

Registered as plugins by the tests (a dist-info on PYTHONPATH), so the real CLI loads
them: ``latecloud`` has ``console_output`` (the server's log), ``mutecloud`` has none.
Every file lives in ``<state_dir>/latecloud/<host id>/``, and the server's command
line names that directory, which is how a PID is checked before it is signalled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, ClassVar

from providers.errors import HostNotFound
from providers.local import pid_alive, terminate
from providers.models import Host, HostSpec, HostStatus, ProviderConfig, ProviderFacts
from tests.certs import self_signed

PORT_ENV = "LATECLOUD_PORT"
CERT_ENV = "LATECLOUD_CERT"
#: the status() call at which the server is started (and the VM says ACTIVE)
START_AT_POLL = 3
#: what tunnel-core logs once its control port accepts connections
LISTENING = b"control port listening"


class MuteCloud:
    name: ClassVar[str] = "mutecloud"
    facts: ClassVar[ProviderFacts] = ProviderFacts("here", "tiny", "none", 1 << 20)
    consumes_user_data: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig) -> None:
        self.root = Path(config.state_dir) / "latecloud"
        self.status_calls: dict[str, int] = {}

    def create(self, spec: HostSpec) -> Host:
        hdir = self.root / spec.host_id
        hdir.mkdir(parents=True)
        if os.environ.get(CERT_ENV) == "other":
            cert, key, _ = self_signed()
        else:
            cert, key = spec.server.tls_cert_pem, spec.server.tls_key_pem
        for name, text in (("token", spec.server.token), ("tls.crt", cert), ("tls.key", key)):
            (hdir / name).write_text(text)
            (hdir / name).chmod(0o600)
        meta = {"host_id": spec.host_id, "port": int(os.environ[PORT_ENV]), "pid": 0}
        (hdir / "host.json").write_text(json.dumps(meta))
        return self._host(spec.host_id, HostStatus.CREATING)

    def status(self, host_id: str) -> Host:
        ours = host_id.removeprefix("late-")
        if not (self.root / ours / "host.json").is_file():
            raise HostNotFound(f"{self.name}: no host {host_id}")
        self.status_calls[ours] = n = self.status_calls.get(ours, 0) + 1
        if n < START_AT_POLL:
            return self._host(ours, HostStatus.CREATING)
        if n == START_AT_POLL and not self._start_server(ours):
            return self._host(ours, HostStatus.FAILED)
        return self._host(ours, HostStatus.ACTIVE)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        if host_id is None or not self.purge(host_id.removeprefix("late-")):
            raise HostNotFound(f"{self.name}: no host {host_id or ip}")

    def purge(self, host_id: str) -> list[str]:
        hdir = self.root / host_id
        if not (hdir / "host.json").is_file():
            return []
        pid = server_pid(hdir)
        if pid:
            terminate(pid)
        shutil.rmtree(hdir)
        return [f"late-{host_id}"]

    def list(self) -> list[Host]:
        if not self.root.is_dir():
            return []
        return [self._host(d.name, HostStatus.ACTIVE) for d in sorted(self.root.iterdir())]

    def _host(self, host_id: str, status: HostStatus) -> Host:
        meta = json.loads((self.root / host_id / "host.json").read_text())
        return Host(
            f"late-{host_id}",
            host_id,
            self.name,
            "here",
            status,
            ip="127.0.0.1",
            additional={"control_port": str(meta["port"])},
        )

    def _start_server(self, host_id: str) -> bool:
        """Start the server and return once it says it listens (False if it died first).

        Its log comes through a pipe, read line by line: the "listening" line is the
        event waited for, so nothing here sleeps or depends on how fast it starts.
        """
        hdir = self.root / host_id
        meta = json.loads((hdir / "host.json").read_text())
        argv = [sys.executable, "-m", "tunnel_core", "tcp", "server", "--bind", "127.0.0.1"]
        argv += ["--control-port", str(meta["port"]), "--token-file", str(hdir / "token")]
        argv += ["--tls-cert", str(hdir / "tls.crt"), "--tls-key", str(hdir / "tls.key")]
        argv += ["--allow-ports", "8080"]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the CLI, as a VM would
            cwd=hdir,
        )
        (hdir / "host.json").write_text(json.dumps({**meta, "pid": proc.pid}))
        assert proc.stdout is not None
        log = open(hdir / "server.log", "ab", buffering=0)  # closed by _copy, or below
        for line in proc.stdout:
            log.write(line)
            if LISTENING in line:
                break
        else:
            log.close()
            return False
        threading.Thread(target=_copy, args=(proc.stdout, log), daemon=True).start()
        return True


class LateCloud(MuteCloud):
    name: ClassVar[str] = "latecloud"

    def console_output(self, host_id: str) -> str:
        hdir = self.root / host_id.removeprefix("late-")
        if not (hdir / "host.json").is_file():
            raise HostNotFound(f"{self.name}: no host {host_id}")
        log = hdir / "server.log"
        return log.read_text(errors="replace") if log.is_file() else ""


def _copy(pipe: IO[bytes], log: IO[bytes]) -> None:
    """The rest of the server's log, for as long as this process (the CLI) lives."""
    with log:
        for line in pipe:
            log.write(line)


def server_pid(hdir: Path) -> int:
    """The server's PID if it still runs and is the one started for ``hdir``; else 0."""
    try:
        pid = int(json.loads((hdir / "host.json").read_text())["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except (OSError, ValueError):
        return 0
    return pid if str(hdir).encode() in cmdline and pid_alive(pid) else 0


def stop_all(state_dir: Path) -> None:
    """Stop, by PID, every server a test's CLI started under ``state_dir``."""
    root = state_dir / "latecloud"
    for hdir in root.iterdir() if root.is_dir() else ():
        pid = server_pid(hdir)
        if pid:
            terminate(pid)
