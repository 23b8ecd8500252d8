"""The ``ssh`` provider: an exit server on a machine the user already has, over paramiko.

No cloud-init: ``create`` installs over SSH the same files the user-data writes, and
the same hardened unit (:func:`cloud_init.render_unit`, with this host's paths):

* ``/opt/inletsctl/<host_id>/`` (0755, root): ``tunnel-core.pyz`` uploaded over SFTP and
  refused unless its SHA-256 on the host is the pinned one; ``secrets/`` (0700) with
  ``token.env``, ``tls.crt`` and ``tls.key`` (0600, written under ``umask 077`` so never
  briefly readable); ``tunnel-core.service`` (the rendered unit) and ``host.json``.
* With systemd as PID 1 (``/run/systemd/system`` exists): the unit is installed as
  ``/etc/systemd/system/tunnel-core-<host_id>.service`` and started; ``get``'s note
  names the unit.
* Without it: ``run.py`` starts the unit's ``ExecStart`` line detached (its environment
  file read as systemd reads it, ``%d`` the secrets directory), with ``server.pid`` and
  ``server.log`` in the host's directory; ``get`` says ``supervisor: detached``.

Our host id is the tag: everything installed lives under paths named by it, and the
server's command line names its directory, so ``purge(host_id)`` finds and removes
exactly those (the unit, the processes whose command line names the directory, the
directory, and ``/opt/inletsctl`` once no host is left in it) and nothing else. The SSH
target (host, port, user, key file, known_hosts) is kept locally in
``<state_dir>/ssh/<host_id>.json`` (no secrets: a key's path, never the key), so
``status``, ``delete --id`` and ``list`` reach the host again.

Host keys are checked the OpenSSH way: ``known_hosts`` (``~/.ssh/known_hosts`` unless
``known_hosts`` is given); an unknown key is refused (paramiko's ``RejectPolicy``)
unless ``accept_new_host_key`` is set, and then it is added to that file.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from providers.errors import HostNotFound, InvalidSpec, ProviderAPIError, ProviderError
from providers.local import healthz
from providers.models import (
    Engine,
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
)

if TYPE_CHECKING:
    import paramiko

NAME = "ssh"
REMOTE_ROOT = "/opt/inletsctl"
UNIT_DIR = "/etc/systemd/system"
#: The steps of ``create`` in order; :attr:`SSHProvider.on_step` hears each one done.
STEPS = ("connect", "mkdir", "upload", "write_secrets", "write_unit", "start")
CONNECT_TIMEOUT_S = 15.0
#: Seconds ``create`` waits for the server's /healthz once started.
START_TIMEOUT_S = 30.0
READY_POLL_S = 0.2
_HOST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")
_USER = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$")
#: Options the provider reads from ``HostSpec.extra`` (create) or ``ProviderConfig.extra``.
OPTIONS = ("ssh_host", "ssh_user", "ssh_port", "ssh_key", "known_hosts", "accept_new_host_key")

#: Starts the unit's ExecStart detached where there is no systemd. Runs as
#: ``python3 -I DIR/run.py``; reads only files of DIR.
RUN_PY = r"""import os, sys
d = os.path.dirname(os.path.abspath(__file__))
unit = open(os.path.join(d, "tunnel-core.service")).read().splitlines()
argv = next(l for l in unit if l.startswith("ExecStart=")).split("=", 1)[1].split()
argv = [a.replace("%d/", d + "/secrets/") for a in argv]
env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
for line in open(os.path.join(d, "secrets", "token.env")).read().splitlines():
    if "=" in line and not line.startswith("#"):
        key, value = line.split("=", 1)
        env[key] = value
if os.fork():
    os._exit(0)
os.setsid()
r, w = os.pipe()
pid = os.fork()
if pid:
    os.close(w)
    os.read(r, 1)
    os._exit(0)
os.close(r)
log = os.open(os.path.join(d, "server.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.dup2(log, 1)
os.dup2(log, 2)
os.chdir(d)
tmp = os.path.join(d, "server.pid.tmp")
with open(tmp, "w") as fh:
    fh.write(str(os.getpid()))
os.replace(tmp, os.path.join(d, "server.pid"))
os.write(w, b"1")
os.close(w)
os.execve(argv[0], argv, env)
"""

#: The host's tag on the remote machine: live processes whose command line names a
#: path in the host's directory (and ``marker``). Prepended to the scripts below.
PROCESSES_PY = r"""import os
def host_processes(d, marker=b""):
    needle = (d + "/").encode()
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != os.getpid():
            try:
                cmd = open("/proc/%s/cmdline" % p, "rb").read()
                state = open("/proc/%s/stat" % p).read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in cmd and marker in cmd and state != "Z":
                found.append(int(p))
    return sorted(found)
"""

#: Reads a host back: prints one JSON document. ``ARGS`` is prepended as JSON.
STATUS_PY = r"""import json, os, subprocess
d, unit = ARGS["dir"], ARGS["unit"]
out = {"exists": os.path.isfile(os.path.join(d, "host.json"))}
if out["exists"]:
    out["meta"] = json.load(open(os.path.join(d, "host.json")))
    pids = host_processes(d, b"tunnel-core.pyz")
    out["pids"] = pids
    try:
        out["pidfile"] = int(open(os.path.join(d, "server.pid")).read().strip())
    except (OSError, ValueError):
        out["pidfile"] = 0
    if out["meta"].get("supervisor") == "systemd":
        r = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
        out["active"] = r.stdout.strip() == "active"
    else:
        out["active"] = out["pidfile"] in pids
print(json.dumps(out))
"""

#: Removes exactly what ``create`` installed for one host id; prints what it removed.
PURGE_PY = r"""import json, os, shutil, signal, subprocess, time
d, unit, unit_path = ARGS["dir"], ARGS["unit"], ARGS["unit_path"]
removed = []
if os.path.exists(unit_path):
    subprocess.run(["systemctl", "disable", "--now", unit], capture_output=True)
    os.remove(unit_path)
    subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    removed.append("unit " + unit)
def ours():
    return host_processes(d)
pids = ours()
for pid in pids:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
deadline = time.monotonic() + 5
while ours() and time.monotonic() < deadline:
    time.sleep(0.05)
for pid in ours():
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
removed += ["process %d" % p for p in pids]
if os.path.lexists(d):
    shutil.rmtree(d)
    removed.append("directory " + d)
try:  # the parent went in with the first host; it goes out with the last one
    os.rmdir(os.path.dirname(d))
    removed.append("directory " + os.path.dirname(d))
except OSError:
    pass
print(json.dumps(removed))
"""


def _remote_script(body: str, args: Mapping[str, str]) -> str:
    return f"ARGS = {json.dumps(dict(args))}\n{PROCESSES_PY}{body}"


class _AcceptNew:
    """``--accept-new-host-key``: an unknown key is added to known_hosts (a changed one
    is still refused: paramiko raises BadHostKeyException before any policy runs)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        """Append one line (``hostname`` is ``[host]:port`` off port 22, as OpenSSH writes
        it); the file's other lines, comments and hashed names stay as they are."""
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.known_hosts, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class Target:
    """Where and how to reach one host: validated before any connection."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self.host = options.get("ssh_host", "")
        if not self.host or not _HOSTNAME.match(self.host) or self.host.startswith("-"):
            raise InvalidSpec(
                f"{NAME}: no valid --host given ({self.host!r})",
                hint="Pass --host HOST (a name or an IP address of a server you have).",
            )
        self.user = options.get("ssh_user") or "root"
        if not _USER.match(self.user):
            raise InvalidSpec(f"{NAME}: not a user name: {self.user!r}", hint="Fix --ssh-user.")
        port = options.get("ssh_port") or "22"
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidSpec(f"{NAME}: not a port: {port!r}", hint="Pass --ssh-port 1-65535.")
        self.port = int(port)
        self.key = options.get("ssh_key", "")
        if self.key and not Path(self.key).is_file():
            raise InvalidSpec(
                f"{NAME}: no such key file: {self.key}",
                hint="Pass --ssh-key FILE (a private key), or omit it to use ssh-agent.",
            )
        self.known_hosts = Path(
            options.get("known_hosts") or Path.home() / ".ssh" / "known_hosts"
        ).expanduser()
        self.accept_new = options.get("accept_new_host_key", "") in ("1", "true", "yes")

    def as_dict(self) -> dict[str, str]:
        return {
            "ssh_host": self.host,
            "ssh_user": self.user,
            "ssh_port": str(self.port),
            "ssh_key": self.key,
            "known_hosts": str(self.known_hosts),
        }

    def ip(self) -> str:
        """The address the tunnel client dials: the host itself, resolved."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            pass
        try:
            return str(socket.getaddrinfo(self.host, self.port)[0][4][0])
        except OSError as exc:
            raise ProviderAPIError(
                NAME, f"cannot resolve {self.host}: {exc}", code="resolve"
            ) from exc

    def connect(self) -> Session:
        import paramiko  # lazy: `inletsctl --help` never imports it

        client = paramiko.SSHClient()
        if self.known_hosts.is_file():
            client.load_host_keys(str(self.known_hosts))
        policy: Any = _AcceptNew(self.known_hosts) if self.accept_new else paramiko.RejectPolicy()
        client.set_missing_host_key_policy(policy)
        where = f"{self.user}@{self.host}:{self.port}"
        try:
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                key_filename=self.key or None,
                allow_agent=not self.key,
                look_for_keys=not self.key,
                timeout=CONNECT_TIMEOUT_S,
                banner_timeout=CONNECT_TIMEOUT_S,
                auth_timeout=CONNECT_TIMEOUT_S,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ProviderAPIError(
                NAME,
                f"the host key of {self.host} is not the one in {self.known_hosts}",
                hint="The host may have been reinstalled, or someone is in the middle: "
                "check the key, then fix the line in known_hosts.",
                code="bad-host-key",
            ) from exc
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise ProviderAPIError(
                    NAME,
                    f"{self.host} is not in {self.known_hosts}: its host key is unknown",
                    hint="Check its fingerprint (ssh-keyscan) and add it to known_hosts, "
                    "or pass --accept-new-host-key to trust it on first use.",
                    code="unknown-host-key",
                ) from exc
            hint = "Pass --ssh-key FILE, or load the key into ssh-agent."
            if isinstance(exc, paramiko.AuthenticationException):
                raise ProviderAPIError(
                    NAME, f"{where}: authentication failed", hint=hint, code="auth"
                ) from exc
            raise ProviderAPIError(NAME, f"{where}: {exc}", code="ssh") from exc
        except OSError as exc:
            client.close()
            raise ProviderAPIError(
                NAME,
                f"cannot reach {where}: {exc.strerror or exc}",
                hint="Check --host and --ssh-port, and that sshd runs there.",
                code="unreachable",
            ) from exc
        return Session(client, where)


class Session:
    """One SSH connection: commands (exit status checked) and SFTP."""

    def __init__(self, client: paramiko.SSHClient, where: str) -> None:
        self.client = client
        self.where = where

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, command: str, stdin: bytes = b"", what: str = "") -> str:
        chan = self.client.get_transport()
        if chan is None or not chan.is_active():
            raise ProviderAPIError(NAME, f"{self.where}: connection lost", code="ssh")
        session = chan.open_session(timeout=CONNECT_TIMEOUT_S)
        try:
            session.exec_command(command)
            if stdin:
                session.sendall(stdin)
            session.shutdown_write()
            out = bytearray()
            err = bytearray()
            while True:
                if session.recv_ready():
                    out += session.recv(65536)
                elif session.recv_stderr_ready():
                    err += session.recv_stderr(65536)
                elif session.exit_status_ready() and not (
                    session.recv_ready() or session.recv_stderr_ready()
                ):
                    break
                else:
                    time.sleep(0.01)
            status = session.recv_exit_status()
        finally:
            session.close()
        if status != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise ProviderAPIError(
                NAME, f"{self.where}: {what or command} failed ({status}): {tail[0]}", code="remote"
            )
        return out.decode(errors="replace")

    def python(self, body: str, args: Mapping[str, str], what: str) -> Any:
        """Run a script on the host's python3, from stdin (so its command line names nothing)."""
        out = self.run("/usr/bin/python3 -I -", _remote_script(body, args).encode(), what)
        return json.loads(out)

    def put(self, data: bytes, path: str, mode: int) -> None:
        sftp = self.client.open_sftp()
        try:
            with sftp.open(path, "wb") as fh:
                fh.chmod(mode)
                fh.write(data)
        finally:
            sftp.close()


class SSHProvider:
    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="ssh",
        default_plan="existing",
        default_image="existing",
        user_data_limit=1 << 20,
        regions=(),
        plans=("existing",),
    )
    #: ``create`` needs the release artifact's digest (as a VM would), not a VM.
    consumes_user_data: ClassVar[bool] = True
    #: inletsctl hands it the local ``tunnel-core.pyz`` in ``HostSpec.extra["pyz"]``.
    uploads_artifact: ClassVar[bool] = True

    def __init__(self, config: ProviderConfig) -> None:
        if not config.state_dir:
            raise InvalidSpec(f"{NAME}: no state directory configured")
        self.root = Path(config.state_dir) / NAME
        self.options = dict(config.extra)
        self.start_timeout = START_TIMEOUT_S
        #: Called after each step of ``create`` is done (tests inject faults here).
        self.on_step: Callable[[str], None] = _no_step

    # -- contract -----------------------------------------------------------------

    def create(self, spec: HostSpec) -> Host:
        server = spec.server
        if server.engine is not Engine.TUNNEL_CORE:
            raise InvalidSpec(f"{NAME}: only the tunnel-core engine is installed over SSH")
        if server.letsencrypt_domains:
            raise InvalidSpec(  # it would mean apt on, and a Caddyfile in, a server not ours
                f"{NAME}: --letsencrypt-domain needs Caddy in front of the tunnel, and the "
                "ssh provider installs nothing with apt",
                hint="Create with --http and put a TLS proxy of your own (Caddy, nginx) in "
                "front of the data port on the host, or use a cloud provider, whose "
                "user-data installs Caddy.",
            )
        host_id = _check_id(spec.host_id)
        target = Target({**self.options, **spec.extra})
        pyz_path = spec.extra.get("pyz") or self.options.get("pyz", "")
        if not pyz_path:
            raise InvalidSpec(
                f"{NAME}: no local tunnel-core.pyz to upload",
                hint="Run from a source checkout, or pass the file `inletsctl download` "
                "fetched as INLETSCTL_SSH_PYZ.",
            )
        pyz = Path(pyz_path).read_bytes()
        if hashlib.sha256(pyz).hexdigest() != server.artifact_sha256:
            raise InvalidSpec(f"{NAME}: {pyz_path} is not the pinned tunnel-core.pyz")
        ip = target.ip()
        self._save_target(host_id, target, spec.name)
        d = remote_dir(host_id)
        with target.connect() as ssh:
            self._mark_connected(host_id)  # from now on, purge must look on the host
            self.on_step("connect")
            facts = ssh.run(
                "test -d /run/systemd/system && echo systemd || echo detached; id -u"
            ).split()
            if facts[1:] != ["0"]:
                raise InvalidSpec(
                    f"{NAME}: {target.user}@{target.host} is not root: it cannot install "
                    f"under {REMOTE_ROOT} and {UNIT_DIR}",
                    hint="Pass --ssh-user root (or a user with uid 0).",
                )
            supervisor = facts[0]
            ssh.run(
                f"umask 022 && mkdir -p {REMOTE_ROOT} && mkdir {d} && mkdir -m 0700 {d}/secrets",
                what="mkdir",
            )
            meta = {
                "id": host_id,
                "name": spec.name,
                "supervisor": supervisor,
                "control_port": server.control_port,
                "data_port": server.data_port,
                "mode": server.mode.value,
                "fingerprint": server.tls_fingerprint,
            }
            ssh.run(f"umask 022 && cat > {d}/host.json", json.dumps(meta).encode(), "host.json")
            self.on_step("mkdir")
            ssh.put(pyz, f"{d}/tunnel-core.pyz", 0o644)
            got = ssh.run(f"sha256sum {d}/tunnel-core.pyz", what="sha256sum").split()[:1]
            if got != [server.artifact_sha256]:
                raise ProviderAPIError(
                    NAME,
                    f"tunnel-core.pyz on {target.host} has SHA-256 {got[0] if got else '?'}, "
                    f"not {server.artifact_sha256}",
                    code="checksum",
                )
            self.on_step("upload")
            import cloud_init  # lazy: jinja2

            token_env = f"INLETS_TOKEN={cloud_init.check_token(server.token)}\n"
            for fname, text in (
                ("token.env", token_env),
                ("tls.crt", server.tls_cert_pem),
                ("tls.key", server.tls_key_pem),
            ):
                ssh.run(f"umask 077 && cat > {d}/secrets/{fname}", text.encode(), fname)
            self.on_step("write_secrets")
            paths = cloud_init.UnitPaths(
                env_file=f"{d}/secrets/token.env",
                tls_cert=f"{d}/secrets/tls.crt",
                tls_key=f"{d}/secrets/tls.key",
                pyz=f"{d}/tunnel-core.pyz",
            )
            unit = cloud_init.render_unit(server, paths)
            ssh.run(f"umask 022 && cat > {d}/tunnel-core.service", unit.encode(), "unit")
            if supervisor == "systemd":
                ssh.run(f"umask 022 && cat > {unit_path(host_id)}", unit.encode(), "unit")
            else:
                ssh.run(f"umask 022 && cat > {d}/run.py", RUN_PY.encode(), "run.py")
            self.on_step("write_unit")
            if supervisor == "systemd":
                ssh.run(
                    f"systemctl daemon-reload && systemctl enable --now {unit_name(host_id)}",
                    what="systemctl enable --now",
                )
            else:
                ssh.run(f"/usr/bin/python3 -I {d}/run.py", what="start")
            self.on_step("start")
        self._wait_ready(host_id, ip, server.control_port, server.tls_fingerprint)
        return self.status(host_id)

    def _wait_ready(self, host_id: str, ip: str, port: int, fingerprint: str) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                healthz(ip, port, fingerprint, 2.0)
                return
            except (OSError, ValueError) as exc:
                if time.monotonic() > deadline:
                    raise ProviderAPIError(
                        NAME,
                        f"the tunnel server on {ip} did not answer /healthz within "
                        f"{self.start_timeout:.0f}s ({exc})",
                        hint=f"See `inletsctl logs {host_id}`; is port {port} open?",
                        code="server-timeout",
                    ) from exc
            time.sleep(READY_POLL_S)

    def status(self, host_id: str) -> Host:
        saved = self._load_target(host_id)
        target = Target(saved)
        with target.connect() as ssh:
            doc = ssh.python(STATUS_PY, self._remote_args(host_id), "status")
        if not doc.get("exists"):
            raise HostNotFound(f"{NAME}: no host {host_id!r} on {target.host}")
        meta = doc["meta"]
        state = HostStatus.ACTIVE if doc.get("active") else HostStatus.FAILED
        additional = {
            "host_id": host_id,
            "ssh": f"{target.user}@{target.host}:{target.port}",
            "supervisor": str(meta.get("supervisor", "")),
            "control_port": str(meta.get("control_port", "")),
            "data_port": str(meta.get("data_port", "")),
            "remote_dir": remote_dir(host_id),
        }
        if meta.get("supervisor") == "systemd":
            additional["unit"] = unit_name(host_id)
            additional["note"] = f"the server runs under systemd: {unit_name(host_id)}"
        else:
            additional["pid"] = str(doc.get("pidfile") or "")
            additional["pidfile"] = f"{remote_dir(host_id)}/server.pid"
            additional["note"] = "no systemd on the host: the server runs detached"
        return Host(
            id=host_id,
            name=str(meta.get("name") or saved.get("name") or host_id),
            provider=NAME,
            region=target.host,
            status=state,
            ip=target.ip(),
            additional=additional,
        )

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        """Every host here was installed by us (its id names its paths); ``force`` changes
        nothing."""
        if host_id is None:
            matches = [h.id for h in self.list() if h.ip == ip]
            if len(matches) != 1:
                raise HostNotFound(
                    f"{NAME}: {len(matches)} hosts with IP {ip}",
                    hint="Delete it with --id." if matches else "",
                )
            host_id = matches[0]
        self._load_target(host_id)
        if not self.purge(host_id):
            raise HostNotFound(f"{NAME}: nothing of host {host_id!r} is left")

    def purge(self, host_id: str) -> list[str]:
        if not _HOST_ID.match(host_id):
            return []
        local = self.root / f"{host_id}.json"
        if not local.is_file():
            return []
        saved = self._load_target(host_id)
        target = Target(saved)
        removed: list[str] = []
        if saved.get("connected"):  # else create never reached the host: nothing is there
            with target.connect() as ssh:
                removed = ssh.python(PURGE_PY, self._remote_args(host_id), "purge")
        local.unlink(missing_ok=True)
        return [f"{item} on {target.host}" for item in removed] + [f"record {local}"]

    def list(self) -> list[Host]:
        if not self.root.is_dir():
            return []
        hosts = []
        for path in sorted(self.root.glob("*.json")):
            try:
                hosts.append(self.status(path.stem))
            except HostNotFound:
                continue
        return hosts

    def console_output(self, host_id: str) -> str:
        """The detached server's log, or the unit's journal."""
        target = Target(self._load_target(host_id))
        d = remote_dir(host_id)
        with target.connect() as ssh:
            return ssh.run(
                f"cat {d}/server.log 2>/dev/null || journalctl -u {unit_name(host_id)} "
                "--no-pager 2>/dev/null || true",
                what="logs",
            )

    # -- helpers ------------------------------------------------------------------

    def _remote_args(self, host_id: str) -> dict[str, str]:
        return {
            "dir": remote_dir(host_id),
            "unit": unit_name(host_id),
            "unit_path": unit_path(host_id),
        }

    def _save_target(self, host_id: str, target: Target, name: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.root / f"{host_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({**target.as_dict(), "name": name}, fh)

    def _mark_connected(self, host_id: str) -> None:
        path = self.root / f"{host_id}.json"
        doc = {**json.loads(path.read_text()), "connected": "1"}
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        tmp.replace(path)

    def _load_target(self, host_id: str) -> dict[str, str]:
        path = self.root / f"{host_id}.json" if _HOST_ID.match(host_id) else None
        if path is None or not path.is_file():
            raise HostNotFound(f"{NAME}: no host {host_id!r} is known here")
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ProviderError(f"{NAME}: {path} is not a host record")
        # the target as created, but a known_hosts or key given now wins (a moved file)
        overrides = {k: v for k, v in self.options.items() if k in OPTIONS and v}
        overrides.pop("ssh_host", None)
        return {**{str(k): str(v) for k, v in doc.items()}, **overrides}


def _no_step(step: str) -> None:
    pass


def _check_id(host_id: str) -> str:
    if not _HOST_ID.match(host_id):
        raise InvalidSpec(f"{NAME}: host id {host_id!r} cannot name a path")
    return host_id


def remote_dir(host_id: str) -> str:
    return f"{REMOTE_ROOT}/{_check_id(host_id)}"


def unit_name(host_id: str) -> str:
    return f"tunnel-core-{_check_id(host_id)}.service"


def unit_path(host_id: str) -> str:
    return f"{UNIT_DIR}/{unit_name(host_id)}"


__all__ = ["SSHProvider", "Target", "remote_dir", "unit_name", "unit_path"]
