"""The embedded default provider: the "VM" is a detached tunnel-core server on loopback.

It needs no account, so a fresh machine can run the whole create -> connect ->
delete flow. It starts the server from the same ServerSpec the cloud-init would
carry (token, certificate, mode, ports), except that the control and HTTP data
ports are free loopback ports chosen here (reported in ``Host.additional``), so
several local hosts never collide with each other or with the user's services.

Each host is a directory ``<state_dir>/local/<host_id>/`` holding the token (0600),
certificate and key (0600), the server's log and ``host.json`` (PID and ports). The
server's command line names that directory: that is this provider's host-id tag.
``purge`` finds the processes by it (even when the CLI was killed before the PID
reached ``host.json``) and signals nothing whose command line does not name it.

``INLETSCTL_LOCAL_PYTHON`` names the interpreter that runs the servers (default: the
one running inletsctl), e.g. one with uvloop installed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

from providers.errors import HostNotFound, InvalidSpec, ProviderAPIError
from providers.models import (
    Engine,
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
    TunnelMode,
)

LOOPBACK = "127.0.0.1"
META = "host.json"
#: Seconds ``create`` waits for the server's /healthz before calling it failed.
START_TIMEOUT_S = 15.0
#: Seconds between two /healthz probes while the server starts.
READY_POLL_S = 0.05
#: Seconds ``delete`` waits for a SIGTERMed server before SIGKILL.
STOP_TIMEOUT_S = 5.0
PYTHON_ENV = "INLETSCTL_LOCAL_PYTHON"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def healthz(host: str, port: int, fingerprint: str, timeout: float = 2.0) -> dict[str, object]:
    """GET /healthz over TLS, trusting only the certificate with ``fingerprint``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # trust comes from the pinned fingerprint below
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        conn.connect()
        assert isinstance(conn.sock, ssl.SSLSocket)
        der = conn.sock.getpeercert(binary_form=True) or b""
        if "sha256:" + hashlib.sha256(der).hexdigest() != normalise_fingerprint(fingerprint):
            raise ssl.SSLError("server certificate does not match the pinned fingerprint")
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise OSError(f"/healthz answered {resp.status}")
        doc = json.loads(body)
        return doc if isinstance(doc, dict) else {}
    finally:
        conn.close()


def normalise_fingerprint(value: str) -> str:
    hexpart = value.lower().removeprefix("sha256:").replace(":", "")
    return "sha256:" + hexpart


class LocalProvider:
    name: ClassVar[str] = "local"
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="local",
        default_plan="process",
        default_image="tunnel-core",
        user_data_limit=1 << 20,
        regions=("local",),
        plans=("process",),
    )
    #: The server starts from the ServerSpec directly; no VM reads user-data.
    consumes_user_data: ClassVar[bool] = False

    def __init__(self, config: ProviderConfig) -> None:
        if not config.state_dir:
            raise InvalidSpec("local: no state directory configured")
        self.root = Path(config.state_dir) / "local"
        #: The interpreter that runs the server; tests point it at a failing one.
        self.python = os.environ.get(PYTHON_ENV) or sys.executable
        self.start_timeout = START_TIMEOUT_S
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- contract -----------------------------------------------------------------

    def create(self, spec: HostSpec) -> Host:
        if spec.server.engine is not Engine.TUNNEL_CORE:
            raise InvalidSpec("local: only the tunnel-core engine runs locally")
        if spec.server.letsencrypt_domains:
            raise InvalidSpec(
                "local: Let's Encrypt needs a public VM",
                hint="Use --http with local, or a cloud provider for --letsencrypt-domain.",
            )
        return self._start(spec, new_host_dir(self.root, spec.host_id, self.name))

    def _start(self, spec: HostSpec, hdir: Path) -> Host:
        server = spec.server
        write_private(hdir / "token", server.token)
        write_private(hdir / "tls.crt", server.tls_cert_pem)
        write_private(hdir / "tls.key", server.tls_key_pem)
        control = free_port()
        data = free_port() if server.mode is TunnelMode.HTTP else 0
        argv = [self.python, "-m", "tunnel_core", server.mode.value, "server"]
        argv += ["--bind", LOOPBACK, "--control-port", str(control)]
        argv += ["--token-file", str(hdir / "token")]
        argv += ["--tls-cert", str(hdir / "tls.crt"), "--tls-key", str(hdir / "tls.key")]
        if server.mode is TunnelMode.HTTP:
            argv += ["--port", str(data)]
        else:
            argv += ["--allow-ports", server.allow_ports]
        if server.allow_ips:
            argv += ["--allow-ips", ",".join(server.allow_ips)]
        try:
            with open(hdir / "server.log", "wb") as log:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    cwd=hdir,
                )
        except OSError as exc:
            raise ProviderAPIError(
                "local", f"cannot start {self.python}: {exc.strerror}", code="server-exec"
            ) from exc
        self._children[spec.host_id] = proc
        meta = {
            "id": spec.host_id,
            "name": spec.name,
            "pid": proc.pid,
            "control_port": control,
            "data_port": data,
            "fingerprint": server.tls_fingerprint,
            "mode": server.mode.value,
        }
        write_private(hdir / META, json.dumps(meta))
        self._wait_ready(spec.host_id, meta, proc)
        return self.status(spec.host_id)

    def _wait_ready(
        self, host_id: str, meta: dict[str, object], proc: subprocess.Popen[bytes]
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ProviderAPIError(
                    "local",
                    f"the tunnel server exited ({proc.returncode}): {self._log_tail(host_id)}",
                    hint="Check that tunnel-core runs: python -m tunnel_core --help.",
                    code="server-exited",
                )
            if self._healthy(meta):
                return
            time.sleep(READY_POLL_S)
        raise ProviderAPIError(
            "local",
            f"the tunnel server did not answer /healthz within {self.start_timeout:.0f}s",
            code="server-timeout",
        )

    def status(self, host_id: str) -> Host:
        meta = read_meta(self.root, self.name, host_id)
        if int(str(meta["pid"])) not in processes_naming(self.root / host_id):
            state = HostStatus.FAILED
        elif self._healthy(meta):
            state = HostStatus.ACTIVE
        else:
            state = HostStatus.CREATING
        return self._host(meta, state)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        """Every local host is ours by construction; ``force`` changes nothing."""
        if host_id is None:
            host_id = only_host_with_ip(self.name, self.list(), ip)
        read_meta(self.root, self.name, host_id)
        self.purge(host_id)

    def purge(self, host_id: str) -> list[str]:
        hdir = host_dir(self.root, host_id)
        if hdir is None or not hdir.is_dir():
            return []
        stopped = stop_processes(hdir, self._children.pop(host_id, None))
        shutil.rmtree(hdir, ignore_errors=True)
        return [f"process {pid}" for pid in stopped] + [f"directory {hdir}"]

    def console_output(self, host_id: str) -> str:
        """The server's own log: what a VM's console would show of it."""
        read_meta(self.root, self.name, host_id)
        return (self.root / host_id / "server.log").read_text(errors="replace")

    def list(self) -> list[Host]:
        if not self.root.is_dir():
            return []
        hosts = []
        for hdir in sorted(self.root.iterdir()):
            if (hdir / META).is_file():
                hosts.append(self.status(hdir.name))
        return hosts

    # -- helpers ------------------------------------------------------------------

    def _host(self, meta: dict[str, object], state: HostStatus) -> Host:
        host_id = str(meta["id"])
        return Host(
            id=host_id,
            name=str(meta["name"]),
            provider=self.name,
            region="local",
            status=state,
            ip=LOOPBACK,
            additional={
                "host_id": host_id,
                "pid": str(meta["pid"]),
                "control_port": str(meta["control_port"]),
                "data_port": str(meta["data_port"]),
                "state_dir": str(self.root / host_id),
            },
        )

    def _healthy(self, meta: dict[str, object]) -> bool:
        try:
            healthz(LOOPBACK, int(str(meta["control_port"])), str(meta["fingerprint"]), 1.0)
        except (OSError, ValueError):
            return False
        return True

    def _log_tail(self, host_id: str) -> str:
        try:
            lines = (self.root / host_id / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"


def host_dir(root: Path, host_id: str) -> Path | None:
    """``<root>/<host_id>``, or None for an id that is not a plain directory name."""
    if not host_id or "/" in host_id or host_id.startswith("."):
        return None
    return root / host_id


def read_meta(root: Path, provider: str, host_id: str) -> dict[str, object]:
    """``<root>/<host_id>/host.json``; an id that is not a plain directory name is unknown."""
    hdir = host_dir(root, host_id)
    if hdir is None or not (hdir / META).is_file():
        raise HostNotFound(f"{provider}: no host {host_id!r}")
    doc = json.loads((hdir / META).read_text())
    assert isinstance(doc, dict)
    return doc


def processes_naming(hdir: Path) -> list[int]:
    """Live processes whose command line names a path inside ``hdir``: a host's own.

    This is the loopback providers' tag: a PID in ``host.json`` may have been reused by
    a stranger, and a process started just before a kill -9 never reached the file.
    """
    needle = str(hdir).encode() + b"/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def stop_processes(hdir: Path, child: subprocess.Popen[bytes] | None) -> list[int]:
    """Stop every process of the host in ``hdir``; reap ``child`` (ours) so no zombie stays."""
    pids = processes_naming(hdir)
    for pid in pids:
        terminate(pid)
    if child is not None:
        if child.poll() is None and child.pid not in pids:  # it no longer names hdir: ask
            child.terminate()
        child.wait(timeout=STOP_TIMEOUT_S)
    return pids


def only_host_with_ip(provider: str, hosts: list[Host], ip: str | None) -> str:
    """The id of the one host with ``ip``; loopback providers share 127.0.0.1, so often none."""
    live = [h.id for h in hosts if h.ip == ip]
    if len(live) != 1:
        found = f"no {provider} host" if not live else f"{len(live)} {provider} hosts"
        listed = f" ({', '.join(live)})" if live else ""
        raise HostNotFound(
            f"{provider}: {found}{listed} with IP {ip}",
            hint=f"Every {provider} host is on 127.0.0.1: delete it with --id.",
        )
    return live[0]


def terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the caller has checked the PID is its own."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie: a zombie's parent (us, in tests) has yet to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def write_private(path: Path, text: str) -> None:
    """Create ``path`` 0600 from the start (never briefly world-readable); refuse to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def new_host_dir(root: Path, host_id: str, provider: str) -> Path:
    """A fresh 0700 directory for one host; an existing one means the id is taken."""
    hdir = root / host_id
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        hdir.mkdir(mode=0o700)
    except FileExistsError as exc:
        raise InvalidSpec(f"{provider}: host {host_id} already exists") from exc
    return hdir
