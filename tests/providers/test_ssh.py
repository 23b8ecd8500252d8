"""The `ssh` provider against a real OpenSSH server: Debian's sshd in a network namespace.

The "host" is a network namespace of this module's own (``ip netns add`` + a veth pair
on 10.213.N.0/30), running ``/usr/sbin/sshd`` with a host key and an authorized key made
here. It shares this machine's file system and PID namespace but not systemd, so the
provider takes its detached-with-pidfile path. Needs root, ``ip`` and sshd; skipped
otherwise, with the reason. Works inside ``make test``'s loopback-only namespace
(scripts/offline.sh): the veth pair is made there. Everything made (namespace, veth,
sshd, the servers) is removed by name or PID at the end, even on failure.

Faults come from the host's side, as the kit's model has them: the key's
``command="..."`` in authorized_keys is a stand-in shell that, when the armed step's
command arrives, runs it (the work is done) and then signals the provider's process
(the test itself, or the ``inletsctl`` CLI: INT, TERM, KILL) before the answer is
sent, or fails it outright (ERROR).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inletsctl import release
from providers import kit
from providers.base import Provider
from providers.errors import HostNotFound, InvalidSpec, ProviderAPIError
from providers.local import pid_alive
from providers.models import HostSpec, HostStatus, ProviderConfig, TunnelMode
from providers.ssh import REMOTE_ROOT, STEPS, SSHProvider
from providers.testing.conformance import ProviderConformance
from providers.testing.faults import Fault

_N = os.getpid() % 200 + 20
NETNS = f"inletsctl-ssh-{os.getpid()}"
VETH_OUT, VETH_IN = f"ictl{os.getpid()}o"[:15], f"ictl{os.getpid()}i"[:15]
HOST_SIDE, GUEST = f"10.213.{_N}.1", f"10.213.{_N}.2"
WORK = Path("/tmp") / f"inletsctl-ssh-test-{os.getpid()}"
KEY, KNOWN_HOSTS = WORK / "id_ed25519", WORK / "known_hosts"
ARM, STRUCK = WORK / "fault.armed", WORK / "fault.struck"
#: sshd listens on this port too, for ``--ssh-port`` (known_hosts then says ``[host]:port``)
ALT_PORT = 2222

pytestmark = [
    pytest.mark.netns,
    pytest.mark.allow_hosts(["127.0.0.1", "::1", GUEST]),
]

#: A command of each step, as the stand-in shell sees it (SSH_ORIGINAL_COMMAND).
STEP_COMMANDS = {
    "connect": "test -d /run/systemd/system*",
    "mkdir": "*cat > */host.json",
    "upload": "sha256sum *",
    "write_secrets": "*cat > */secrets/tls.key",
    "write_unit": "*cat > */run.py",
    "start": "/usr/bin/python3 -I */run.py",
}

#: The stand-in: an armed step's command fails (ERROR) or runs and then signals.
STAND_IN = f"""#!/bin/sh
cmd="$SSH_ORIGINAL_COMMAND"
if [ -f {ARM} ]; then
  read pattern sig victim < {ARM}
  case "$cmd" in
    $pattern)
      mv {ARM} {STRUCK}
      if [ "$sig" = ERROR ]; then echo "injected fault" >&2; exit 1; fi
      /bin/sh -c "$cmd"; rc=$?
      kill -"$sig" "$victim"; sleep 1; exit $rc;;
  esac
fi
exec /bin/sh -c "$cmd"
"""


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def _listening(port: int) -> bool:
    tcp = _run("ip", "netns", "exec", NETNS, "cat", "/proc/net/tcp").stdout
    return any(f":{port:04X} " in line and line.split()[3] == "0A" for line in tcp.splitlines()[1:])


def _teardown_netns(sshd: subprocess.Popen[bytes] | None) -> None:
    if sshd is not None and sshd.poll() is None:
        sshd.terminate()
        sshd.wait(10)
    pids = _run("ip", "netns", "pids", NETNS).stdout.split()
    for pid in pids:  # everything in our namespace is ours (servers left by a failure)
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    _run("ip", "link", "del", VETH_OUT)
    _run("ip", "netns", "del", NETNS)
    shutil.rmtree(WORK, ignore_errors=True)


@pytest.fixture(scope="module")
def ssh_host() -> Iterator[str]:
    """sshd on GUEST:22 in our own namespace; the host key pinned in KNOWN_HOSTS."""
    if os.geteuid() != 0:
        pytest.skip("needs root: ip netns add, a veth pair and sshd")
    for tool in ("ip", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not Path("/usr/sbin/sshd").is_file() or not Path("/usr/bin/python3").is_file():
        pytest.skip("needs Debian's openssh-server (/usr/sbin/sshd) and /usr/bin/python3")
    WORK.mkdir(mode=0o700)
    made_root = not Path(REMOTE_ROOT).exists()
    sshd = None
    try:
        setup = [
            ("ip", "netns", "add", NETNS),
            ("ip", "link", "add", VETH_OUT, "type", "veth", "peer", "name", VETH_IN),
            ("ip", "link", "set", VETH_IN, "netns", NETNS),
            ("ip", "addr", "add", f"{HOST_SIDE}/30", "dev", VETH_OUT),
            ("ip", "link", "set", VETH_OUT, "up"),
            ("ip", "netns", "exec", NETNS, "ip", "addr", "add", f"{GUEST}/30", "dev", VETH_IN),
            ("ip", "netns", "exec", NETNS, "ip", "link", "set", VETH_IN, "up"),
            ("ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up"),
        ]
        for argv in setup:
            done = _run(*argv)
            if done.returncode != 0:
                pytest.skip(f"cannot make the test's network namespace: {' '.join(argv)}: "
                            f"{done.stderr.strip()}")  # fmt: skip
        hostkey = WORK / "ssh_host_ed25519_key"
        for path in (hostkey, KEY):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path))
        stand_in = WORK / "stand-in.sh"
        stand_in.write_text(STAND_IN)
        stand_in.chmod(0o755)
        pub = (KEY.with_suffix(".pub")).read_text().strip()
        (WORK / "authorized_keys").write_text(f'command="{stand_in}" {pub}\n')
        config = WORK / "sshd_config"
        config.write_text(
            f"Port 22\nPort {ALT_PORT}\nListenAddress {GUEST}\nHostKey {hostkey}\n"
            f"AuthorizedKeysFile {WORK}/authorized_keys\nPidFile {WORK}/sshd.pid\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        with open(WORK / "sshd.log", "wb") as log:
            sshd = subprocess.Popen(
                ["ip", "netns", "exec", NETNS, "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 15
        while not (_listening(22) and _listening(ALT_PORT)):
            if sshd.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"sshd did not start: {(WORK / 'sshd.log').read_text()}")
            time.sleep(0.05)
        host_pub = hostkey.with_suffix(".pub").read_text().split()
        KNOWN_HOSTS.write_text(f"{GUEST} {host_pub[0]} {host_pub[1]}\n")
        yield GUEST
    finally:
        _teardown_netns(sshd)
        if made_root and Path(REMOTE_ROOT).is_dir() and not any(Path(REMOTE_ROOT).iterdir()):
            Path(REMOTE_ROOT).rmdir()  # the provider's parent directory, made by this run


def make_spec(provider: Provider) -> HostSpec:
    """The kit's spec with what inletsctl adds for ssh: the local pyz and its digest."""
    spec = ProviderConformance.make_spec(ProviderConformance(), provider)
    pyz = release.local_pyz()
    server = dataclasses.replace(spec.server, artifact_sha256=release.sha256_file(pyz))
    return dataclasses.replace(spec, server=server, extra={"pyz": str(pyz)})


def _options() -> dict[str, str]:
    return {"ssh_host": GUEST, "ssh_key": str(KEY), "known_hosts": str(KNOWN_HOSTS)}


@pytest.fixture
def ssh(ssh_host: str, tmp_path: Path) -> Iterator[SSHProvider]:
    provider = SSHProvider(ProviderConfig(state_dir=str(tmp_path / "state"), extra=_options()))
    yield provider
    ARM.unlink(missing_ok=True)
    STRUCK.unlink(missing_ok=True)
    for path in sorted(provider.root.glob("*.json")) if provider.root.is_dir() else ():
        provider.purge(path.stem)


def _remote_resources() -> set[str]:
    """What is installed on the "host": our directories, units and server processes."""
    root = Path(REMOTE_ROOT)
    found = {f"dir:{p}" for p in root.glob("*")} if root.is_dir() else set()
    found |= {f"unit:{p.name}" for p in Path("/etc/systemd/system").glob("tunnel-core-*.service")}
    for pid in _run("ip", "netns", "pids", NETNS).stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if REMOTE_ROOT.encode() + b"/" in cmd:
            found.add(f"pid:{pid}")
    return found


class SSHHost:
    """The kit's ``FakeCloud`` for a real host: what is installed, and faults at each step."""

    failure_points = STEPS
    _SIGNALS = {Fault.INTERRUPT: "INT", Fault.TERMINATE: "TERM", Fault.KILL: "KILL"}

    def resources(self) -> set[str]:
        return _remote_resources()

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        sig = "ERROR" if fault is Fault.ERROR else self._SIGNALS[fault]
        pattern = STEP_COMMANDS[step].replace(" ", "?")  # one word for `read`

        def write(pid: int) -> None:
            tmp = ARM.with_suffix(".tmp")
            tmp.write_text(f"{pattern} {sig} {pid}\n")
            tmp.replace(ARM)

        if victim is None:
            write(os.getpid())
        else:  # the CLI's PID is known once it started
            threading.Thread(target=lambda: write(victim()), daemon=True).start()

    def struck(self, step: str) -> bool:
        return STRUCK.exists()

    def foreign_vm(self) -> None:
        """A host has no VMs of ours or anyone's: ownership is by path (tested below)."""
        return None


class TestSSHConformance(ProviderConformance):
    failure_points = STEPS
    faults = (Fault.ERROR, Fault.INTERRUPT, Fault.TERMINATE)
    cli_create_args = (
        "--tcp", "--ports", "8080", "--wait", "none", "--host", GUEST,
        "--ssh-key", str(KEY), "--known-hosts", str(KNOWN_HOSTS),
    )  # fmt: skip

    def make_spec(self, provider: Provider) -> HostSpec:
        return make_spec(provider)

    @pytest.fixture
    def provider(self, ssh: SSHProvider) -> SSHProvider:
        return ssh

    @pytest.fixture
    def fake(self, ssh: SSHProvider) -> SSHHost:
        return SSHHost()

    @pytest.fixture
    def cli_env(self, ssh: SSHProvider) -> dict[str, str]:
        return {}


def test_detached_server_files_and_get(ssh: SSHProvider) -> None:
    spec = make_spec(ssh)
    others = set(Path(REMOTE_ROOT).glob("*"))
    host = kit.create_host(ssh, spec)
    assert host.status is HostStatus.ACTIVE and host.ip == GUEST
    assert host.additional["supervisor"] == "detached"
    assert "no systemd" in host.additional["note"]
    d = Path(host.additional["remote_dir"])
    assert d == Path(REMOTE_ROOT) / spec.host_id
    secrets = {p.name: p.stat().st_mode & 0o777 for p in (d / "secrets").iterdir()}
    assert secrets == {"token.env": 0o600, "tls.crt": 0o600, "tls.key": 0o600}
    assert (d / "secrets").stat().st_mode & 0o777 == 0o700
    import cloud_init

    unit = (d / "tunnel-core.service").read_text()
    paths = cloud_init.UnitPaths(
        env_file=f"{d}/secrets/token.env", tls_cert=f"{d}/secrets/tls.crt",
        tls_key=f"{d}/secrets/tls.key", pyz=f"{d}/tunnel-core.pyz",
    )  # fmt: skip
    assert unit == cloud_init.render_unit(spec.server, paths), "the cloud-init's unit"
    assert "NoNewPrivileges=yes" in unit
    pid = int((d / "server.pid").read_text())
    assert host.additional["pid"] == str(pid)
    assert str(d).encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert "listening" in ssh.console_output(spec.host_id).lower()
    ssh.delete(host_id=host.id)
    assert not d.exists() and not pid_alive(pid)  # (a zombie until this machine's init reaps it)
    if not others:
        assert not Path(REMOTE_ROOT).exists(), "the parent goes with its last host"
    with pytest.raises(HostNotFound):
        ssh.status(host.id)


def test_unknown_host_key_is_refused_unless_accepted(ssh_host: str, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    mine = "# the user's own line\n"
    known.write_text(mine)
    opts = {**_options(), "known_hosts": str(known)}
    refusing = SSHProvider(ProviderConfig(state_dir=str(tmp_path / "a"), extra=opts))
    spec = make_spec(refusing)
    with pytest.raises(ProviderAPIError, match="host key is unknown") as refused:
        kit.create_host(refusing, spec)
    assert "--accept-new-host-key" in refused.value.hint
    assert known.read_text() == mine, "nothing was trusted"
    assert not (Path(REMOTE_ROOT) / spec.host_id).exists()
    assert not list(refusing.root.glob("*.json")), "the undo removed the local record"
    opts["accept_new_host_key"] = "1"
    accepting = SSHProvider(ProviderConfig(state_dir=str(tmp_path / "b"), extra=opts))
    host = kit.create_host(accepting, make_spec(accepting))
    try:
        lines = known.read_text().splitlines()
        assert lines[0] == mine.strip(), "the file's own lines stay"
        assert lines[1].split() == KNOWN_HOSTS.read_text().split(), "the key, OpenSSH's way"
    finally:
        accepting.delete(host_id=host.id)
    del opts["accept_new_host_key"]  # now known: accepted without the flag
    again = SSHProvider(ProviderConfig(state_dir=str(tmp_path / "c"), extra=opts))
    host = kit.create_host(again, make_spec(again))
    again.delete(host_id=host.id)
    assert len(known.read_text().splitlines()) == 2


def test_another_port_is_known_as_openssh_names_it(ssh_host: str, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    opts = {**_options(), "known_hosts": str(known), "ssh_port": str(ALT_PORT)}
    opts["accept_new_host_key"] = "1"
    provider = SSHProvider(ProviderConfig(state_dir=str(tmp_path), extra=opts))
    host = kit.create_host(provider, make_spec(provider))
    try:
        assert known.read_text().split()[0] == f"[{GUEST}]:{ALT_PORT}"
        assert host.additional["ssh"] == f"root@{GUEST}:{ALT_PORT}"
    finally:
        provider.delete(host_id=host.id)


def test_a_non_root_user_is_refused_and_nothing_is_left(ssh_host: str, tmp_path: Path) -> None:
    opts = {**_options(), "ssh_user": "nobody"}
    provider = SSHProvider(ProviderConfig(state_dir=str(tmp_path), extra=opts))
    with pytest.raises(ProviderAPIError):  # nobody logs in to nologin: the first command fails
        kit.create_host(provider, make_spec(provider))
    assert not list(provider.root.glob("*.json"))


def test_a_changed_host_key_is_refused(ssh_host: str, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other))
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{GUEST} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    opts = {**_options(), "known_hosts": str(wrong), "accept_new_host_key": "1"}
    provider = SSHProvider(ProviderConfig(state_dir=str(tmp_path / "s"), extra=opts))
    with pytest.raises(ProviderAPIError, match="not the one in"):
        kit.create_host(provider, make_spec(provider))


def test_options_are_checked_before_any_connection(tmp_path: Path) -> None:
    provider = SSHProvider(ProviderConfig(state_dir=str(tmp_path)))
    spec = make_spec(provider)
    for extra, message in (
        ({}, "--host"),
        ({"ssh_host": "-oProxyCommand=x"}, "--host"),
        ({"ssh_host": "h", "ssh_port": "70000"}, "port"),
        ({"ssh_host": "h", "ssh_key": str(tmp_path / "nope")}, "key file"),
    ):
        bad = SSHProvider(ProviderConfig(state_dir=str(tmp_path), extra=extra))
        with pytest.raises(InvalidSpec, match=message):
            bad.create(spec)
    server = dataclasses.replace(
        spec.server, mode=TunnelMode.HTTP, letsencrypt_domains=("tunnel.example.com",)
    )
    https = SSHProvider(ProviderConfig(state_dir=str(tmp_path), extra={"ssh_host": "h"}))
    with pytest.raises(InvalidSpec, match="needs Caddy") as refused:
        https.create(dataclasses.replace(spec, server=server))
    assert "--http" in refused.value.hint and "cloud provider" in refused.value.hint


def test_cli_create_get_delete(ssh_host: str, tmp_path: Path) -> None:
    env = {**os.environ, "INLETSCTL_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inletsctl", *args], env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip

    target = ("--host", GUEST, "--ssh-key", str(KEY), "--known-hosts", str(KNOWN_HOSTS))
    made = cli("create", "--provider", "ssh", "-o", "json", "--tcp", "--ports", "8080", *target)
    try:
        assert made.returncode == 0, made.stderr
        doc = json.loads(made.stdout)
        assert doc["status"] == "ready" and doc["ip"] == GUEST
        got = cli("get", doc["id"], "-o", "json")
        assert got.returncode == 0, got.stderr
        assert "no systemd" in json.loads(got.stdout)["note"]
        assert "pidfile" in cli("get", doc["id"]).stdout
        gone = cli("delete", "--id", doc["id"])
        assert gone.returncode == 0, gone.stderr
        assert not (Path(REMOTE_ROOT) / doc["id"]).exists()
    finally:  # whatever the CLI left, by our host id
        leftover = SSHProvider(ProviderConfig(state_dir=str(tmp_path / "state")))
        for path in leftover.root.glob("*.json") if leftover.root.is_dir() else ():
            leftover.purge(path.stem)
    for argv, message in (
        (("--provider", "ssh"), "needs --host"),
        (("--provider", "ssh", "--host", GUEST, "--ssh-port", "0"), "not a port"),
        (("--provider", "ssh", "--host", GUEST, "--ssh-key", str(tmp_path / "no")), "no such"),
        (("--provider", "local", "--host", GUEST), "only for --provider ssh"),
    ):
        refused = cli("create", "--tcp", "--ports", "8080", *argv)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
