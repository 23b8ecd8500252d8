"""The ``ssh`` provider's systemd path on a real systemd host: the qemu VM image.

The netns test (tests/providers/test_ssh.py) has sshd but no systemd, so only the
detached path runs there. Here the "server you already have" is a VM booted from the
image with a minimal user-data of this test's own: a host key made here (so known_hosts
is written before the boot, out of band, as a user would copy it from their hosting
panel) and an authorized key for root. qemu forwards a free host port to the guest's
sshd, another to the tunnel's data port, and 127.0.0.1:8123 to the guest's 8123: the
provider dials the control port it installed on the address it logged in to.

Everything reaches 127.0.0.1 only; the guest's network is qemu's ``restrict=on``. The
guest is inspected with OpenSSH's own client (not the provider's paramiko code), with
strict host key checking against the same known_hosts file.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import subprocess
from pathlib import Path

import pytest

from inletsctl import release
from providers.local import free_port
from providers.models import HostSpec, ProviderConfig, TunnelMode
from providers.qemu import QemuProvider, boot_stage
from providers.ssh import SSHProvider, remote_dir, unit_name, unit_path
from providers.testing.conformance import make_server_spec
from tests.vm.conftest import BOOT_TIMEOUT_S, run_cli, serial_tail, wait_for
from tests.vm.test_qemu import (
    PAYLOAD,
    byte_source,
    read_all,
    tunnel_client,
    wait_client_connected,
)

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

#: The control port the provider installs (ServerSpec's default): the same on both sides.
CONTROL_PORT = 8123
#: The TCP port the tunnel serves in the guest.
GUEST_DATA_PORT = 8080
#: Bound on one command over ssh in the guest (``cloud-init status --wait`` included).
GUEST_COMMAND_TIMEOUT_S = 120
#: Bound on ``create`` once sshd answers: upload, unit, start, /healthz.
CREATE_TIMEOUT_S = 180
#: What "nothing else changed" compares: every path under these, its type, mode and size.
SNAPSHOT = r"find /etc /opt /srv /usr -xdev -printf '%y %m %s %p\n' | sort"


class Guest:
    """Commands in the VM over OpenSSH: strict host key checking, our key only."""

    def __init__(self, port: int, key: Path, known_hosts: Path) -> None:
        self.port = port
        self.key = key
        self.known_hosts = known_hosts

    def run(self, command: str, check: bool = True) -> str:
        argv = [
            "ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(self.key),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "UpdateHostKeys=no", "-o", "ConnectTimeout=10",
            "root@127.0.0.1", command,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=GUEST_COMMAND_TIMEOUT_S)
        if check:
            assert done.returncode == 0, f"in the guest: {command}: {done.stderr.strip()}"
        return done.stdout.strip()

    def answers(self) -> bool | None:
        """sshd's banner: hostfwd accepts before the guest listens, so a connect proves nothing."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                return True if s.recv(64).startswith(b"SSH-") else None
        except OSError:
            return None


def keygen(path: Path) -> tuple[str, str]:
    """(private, public) of a fresh ed25519 key written to ``path``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


def user_data(host_key: tuple[str, str], authorized: str) -> str:
    """Only what an ssh host needs: our host key (no other), root's key (no forced command)."""
    doc = {
        "disable_root": False,
        "ssh_pwauth": False,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_key[0], "ed25519_public": host_key[1]},
        "ssh_authorized_keys": [authorized],
    }
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


def require_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            pytest.fail(
                f"127.0.0.1:{port} is taken ({exc.strerror}): qemu must forward it to the "
                "guest's control port, which the ssh provider dials on the address it logs in to"
            )


def boot_ssh_host(
    state: Path, image: Path, tmp: Path, forwards: dict[int, int]
) -> tuple[QemuProvider, str, Path, Path]:
    """The VM, its known_hosts line written before it boots; (provider, id, key, known_hosts)."""
    host_key = keygen(tmp / "guest_host_key")
    key = tmp / "id_ed25519"
    _, authorized = keygen(key)
    known_hosts = tmp / "known_hosts"
    ssh_port = next(h for h, g in forwards.items() if g == 22)
    known_hosts.write_text(f"[127.0.0.1]:{ssh_port} {host_key[1]}\n")  # OpenSSH's name for it
    extra = {"image_dir": str(image), "forwards": ",".join(f"{h}:{g}" for h, g in forwards.items())}
    qemu = QemuProvider(ProviderConfig(state_dir=str(state), extra=extra))
    spec = HostSpec(
        host_id=secrets.token_hex(6),
        name="ssh-target",
        region="local",
        plan="small",
        image="debian-12",
        user_data=user_data(host_key, authorized),
        server=make_server_spec(TunnelMode.TCP, ports=()),  # no server: the forwards are ours
    )
    return qemu, qemu.create(spec).id, key, known_hosts


def test_ssh_provider_installs_a_systemd_unit_and_removes_exactly_it(
    state_dir: Path, vm_image: Path, tmp_path: Path
) -> None:
    require_free(CONTROL_PORT)
    ssh_port, data_port = free_port(), free_port()
    forwards = {ssh_port: 22, CONTROL_PORT: CONTROL_PORT, data_port: GUEST_DATA_PORT}
    qemu, vm_id, key, known_hosts = boot_ssh_host(state_dir, vm_image, tmp_path, forwards)
    vm = qemu.status(vm_id)
    guest = Guest(ssh_port, key, known_hosts)
    step = "boot"
    try:
        wait_for("sshd in the VM", guest.answers, BOOT_TIMEOUT_S)
        step = "cloud-init on the VM"
        guest.run("cloud-init status --wait >/dev/null; test -d /run/systemd/system")
        pinned = known_hosts.read_text().split()[2]
        assert pinned in qemu.console_output(vm_id), "the console shows the key we pinned"
        before = guest.run(SNAPSHOT)
        pyz_sha = release.sha256_file(release.local_pyz())
        target = (
            "--host", "127.0.0.1", "--ssh-port", str(ssh_port),
            "--ssh-key", str(key), "--known-hosts", str(known_hosts),
        )  # fmt: skip
        with byte_source(PAYLOAD) as upstream:
            step = "inletsctl create --provider ssh"
            made = run_cli(
                "create", "--provider", "ssh", *target, "--tcp",
                "--ports", f"{GUEST_DATA_PORT}:{upstream}", "--timeout", f"{CREATE_TIMEOUT_S}s",
                "-o", "json", timeout=CREATE_TIMEOUT_S + 60,
            )  # fmt: skip
            assert made.returncode == 0, made.stderr[-4000:]
            doc = json.loads(made.stdout)
            host_id = str(doc["id"])
            assert doc["status"] == "ready" and doc["ready"] is True, doc
            assert (doc["ip"], doc["control_port"]) == ("127.0.0.1", CONTROL_PORT)
            d, unit = remote_dir(host_id), unit_name(host_id)

            step = "the unit under systemd"
            assert guest.run(f"systemctl is-active {unit}") == "active"
            assert guest.run(f"systemctl is-enabled {unit}") == "enabled"
            assert guest.run(f"systemctl show -p FragmentPath --value {unit}") == unit_path(host_id)
            guest.run(f"cmp {unit_path(host_id)} {d}/tunnel-core.service")
            pid = guest.run(f"systemctl show -p MainPID --value {unit}")
            cmdline = guest.run(f"tr '\\0' ' ' </proc/{pid}/cmdline")
            assert f"{d}/tunnel-core.pyz tcp server" in cmdline, cmdline
            uid = guest.run(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status")
            assert uid != "0", "DynamicUser: the server does not run as root"
            assert guest.run(f"sha256sum {d}/tunnel-core.pyz").split()[0] == pyz_sha
            modes = guest.run(f"stat -c '%a %U %n' {d}/secrets {d}/secrets/*").splitlines()
            assert modes == [
                f"700 root {d}/secrets",
                *(f"600 root {d}/secrets/{f}" for f in ("tls.crt", "tls.key", "token.env")),
            ]

            step = "a tunnel client through the forwarded control port"
            status = SSHProvider(ProviderConfig(state_dir=str(state_dir))).status(host_id)
            with tunnel_client(
                str(doc["client_command"]), str(doc["token"]), tmp_path / "client.log"
            ) as client:
                wait_client_connected(status, str(doc["tls_fingerprint"]), client)
                got = read_all(data_port)
            assert hashlib.sha256(got).digest() == hashlib.sha256(PAYLOAD).digest()

        step = "inletsctl get and logs"
        got_doc = json.loads(run_cli("get", host_id, "-o", "json").stdout)
        assert got_doc["status"] == "ready"
        assert f"systemd: {unit}" in str(got_doc["note"]), got_doc
        assert f"systemd: {unit}" in run_cli("get", host_id).stdout
        assert "control port listening" in run_cli("logs", host_id).stdout

        step = "inletsctl delete --id"
        gone = run_cli("delete", "--id", host_id)
        assert gone.returncode == 0, gone.stderr
        assert guest.run(f"systemctl is-active {unit}", check=False) in ("inactive", "unknown")
        assert guest.run("systemctl list-unit-files --no-legend 'tunnel-core-*'; true") == ""
        assert guest.run(f"test -e {d} || test -e {unit_path(host_id)}; echo $?") == "1"
        assert guest.run("pgrep -af '/opt/inletsct[l]/' || true") == "", "a server is left"

        step = "create --letsencrypt-domain over ssh"
        https = run_cli(
            "create", "--provider", "ssh", *target, "--http",
            "--letsencrypt-domain", "tunnel.example.com", "--letsencrypt-email", "a@example.com",
        )  # fmt: skip
        assert https.returncode == 2, https.stderr
        assert "--letsencrypt-domain" in https.stderr and "Caddy" in https.stderr, https.stderr

        step = "nothing else changed on the VM"
        after = guest.run(SNAPSHOT)
        assert after == before, "\n".join(
            sorted(set(before.splitlines()) ^ set(after.splitlines()))[:40]
        )
    except BaseException as exc:
        stage = boot_stage(qemu.console_output(vm_id)) or "none"
        raise AssertionError(
            f"ssh on systemd, at {step} (boot stage: {stage}): {exc}\n"
            f"--- serial console ---\n{serial_tail(vm)}"
        ) from exc
    qemu.delete(host_id=vm_id)
