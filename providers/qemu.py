"""A local Debian VM under qemu, booted from the same user-data a cloud would get.

For people who want the whole path offline, and for the test that proves the real
user-data works: the rendered ``#cloud-config`` goes onto a NoCloud seed disk
(label ``cidata``), and qemu boots a fresh copy-on-write overlay of the image that
``make vm-image`` (``scripts/vm_image.sh``) builds and caches.

Networking is qemu's user mode with ``restrict=on``: the guest reaches nothing but
what is forwarded explicitly. ``hostfwd`` maps free ports on the host's 127.0.0.1 to
the control port and the data ports in the guest (80 and 443 for HTTPS, as a cloud
firewall opens them); ``guestfwd`` makes ``10.0.2.100:PORT`` in the guest reach
``127.0.0.1:PORT`` on the host, so a release server on the host's loopback
(``INLETSCTL_RELEASE_URL=http://10.0.2.100:PORT/...``) serves the engine to the VM, and
an ACME server there (``--acme-directory https://10.0.2.100:PORT/...``) issues Caddy's
certificates, without the VM reaching the internet.

Each host is a directory ``<state_dir>/qemu/<host_id>/`` with the overlay, the seed,
the serial console log and ``host.json`` (PID, ports). qemu's command line names that
directory: that is this provider's host-id tag, by which ``purge`` finds the VM even
when the CLI was killed before the PID reached ``host.json``, and without which it
signals nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import platformdirs

from providers.errors import HostNotFound, InvalidSpec, ProviderAPIError
from providers.local import (
    free_port,
    healthz,
    host_dir,
    new_host_dir,
    processes_naming,
    stop_processes,
    write_private,
)
from providers.models import (
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
    ServerSpec,
    TunnelMode,
)
from providers.ports import http_ports

LOOPBACK = "127.0.0.1"
META = "host.json"
#: Under the provider's root: each deleted host's serial console log, kept for diagnosis.
LOGS = "logs"
#: The guest address that ``guestfwd`` connects to the host's loopback.
GUESTFWD_ADDR = "10.0.2.100"
#: Where ``scripts/vm_image.sh`` caches images; ``current`` points at the newest.
IMAGE_DIR_ENV = "INLETSCTL_VM_DIR"
#: ``kvm`` to use KVM when /dev/kvm answers; the default is ``tcg`` (see :func:`accel`).
ACCEL_ENV = "INLETSCTL_QEMU_ACCEL"
#: ``extra["forwards"]`` for a CLI user: ``HOST:GUEST,...`` (see :func:`parse_forwards`).
FORWARDS_ENV = "INLETSCTL_QEMU_FORWARDS"
#: The port of a URL that names none, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Seconds ``create`` waits for qemu to write its pidfile (it has started the VM).
START_TIMEOUT_S = 30.0
#: Serial console lines that show how far the boot got, in boot order.
BOOT_MARKERS = (
    ("Linux version", "kernel"),
    ("Welcome to", "systemd"),
    ("Cloud-init v.", "cloud-init"),
    ("modules:final", "cloud-init final (runcmd)"),
    ("INLETSCTL-BOOT: cloud-init", "cloud-init finished"),
)
#: Written by the image's marker unit when cloud-init ends with an error.
BOOT_FAILED = "INLETSCTL-BOOT: cloud-init error"
#: ioctl KVM_GET_API_VERSION; a usable /dev/kvm answers 12.
_KVM_GET_API_VERSION = 0xAE00
PLANS = {"small": ("1", "1024"), "medium": ("2", "2048")}  # plan -> (cpus, MiB)


def parse_forwards(text: str) -> dict[int, int]:
    """``extra["forwards"]``: ``HOST:GUEST,...`` TCP ports forwarded as given.

    Beside the free host ports the spec's own ports get, for a port that must keep its
    number on both sides: the ``ssh`` provider dials the control port it installed
    (8123) on the address it logged in to; or one that must be known before the VM
    exists: an ACME server checks the guest's 80 and 443 at ports of its own config.
    """
    pairs: dict[int, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, guest = item.partition(":")
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in (host, guest)):
            raise InvalidSpec(
                f"qemu: not a HOST:GUEST pair of ports: {item!r}",
                hint="Give forwards as HOST:GUEST[,HOST:GUEST...], e.g. 2222:22,8123:8123.",
            )
        pairs[int(host)] = int(guest)
    return pairs


def image_dir(config: ProviderConfig) -> Path:
    """``extra['image_dir']``, else ``$INLETSCTL_VM_DIR/current``, else the user cache's."""
    if configured := config.extra.get("image_dir"):
        return Path(configured)
    base = os.environ.get(IMAGE_DIR_ENV) or str(
        Path(platformdirs.user_cache_dir("inletsctl")) / "vm"
    )
    return Path(base) / "current"


def accel(wanted: str) -> str:
    """TCG unless KVM is asked for and /dev/kvm answers.

    KVM is opt-in because a /dev/kvm that opens and answers is not proof that it runs
    a guest: on nested or sandboxed hosts qemu then hangs or aborts, where TCG
    (slower, about a minute to boot) works everywhere.
    """
    if wanted not in ("tcg", "kvm"):
        raise InvalidSpec(
            f"qemu: unknown accelerator {wanted!r}", hint=f"Set {ACCEL_ENV}=tcg or kvm."
        )
    return "kvm" if wanted == "kvm" and kvm_usable() else "tcg"


def kvm_usable() -> bool:
    """/dev/kvm opens and speaks the KVM API version qemu expects."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _KVM_GET_API_VERSION) == 12
    except OSError:
        return False
    finally:
        os.close(fd)


class QemuProvider:
    name: ClassVar[str] = "qemu"
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="local",
        default_plan="small",
        default_image="debian-12",
        user_data_limit=512 * 1024,
        regions=("local",),
        plans=tuple(PLANS),
    )

    def __init__(self, config: ProviderConfig) -> None:
        if not config.state_dir:
            raise InvalidSpec("qemu: no state directory configured")
        self.root = Path(config.state_dir) / "qemu"
        self.image = image_dir(config)
        self.qemu = config.extra.get("qemu_binary", "qemu-system-x86_64")
        self.accel = accel(config.extra.get("accel") or os.environ.get(ACCEL_ENV, "tcg"))
        self.forwards = parse_forwards(
            config.extra.get("forwards") or os.environ.get(FORWARDS_ENV, "")
        )
        self.start_timeout = START_TIMEOUT_S
        #: qemu processes started by this object, reaped by ``delete`` (no zombies).
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # -- contract -----------------------------------------------------------------

    def create(self, spec: HostSpec) -> Host:
        self._check_tools()
        return self._boot(spec, new_host_dir(self.root, spec.host_id, self.name))

    def status(self, host_id: str) -> Host:
        meta = self._meta(host_id)
        serial = self._serial(host_id)
        if int(str(meta["pid"])) not in processes_naming(self.root / host_id):
            state = HostStatus.FAILED
        elif self._healthy(meta):
            state = HostStatus.ACTIVE
        elif BOOT_FAILED in serial:
            state = HostStatus.FAILED
        else:
            state = HostStatus.CREATING
        return self._host(meta, state, boot_stage(serial))

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        """Every qemu host is ours by construction; ``force`` changes nothing."""
        if host_id is None:
            host_id = self._find_by_ip(ip)
        self._meta(host_id)
        self.purge(host_id)

    def purge(self, host_id: str) -> list[str]:
        """Stop the VM if it is still ours, reap it, then remove overlay and seed.

        The serial log, the one clue to a failed boot, is kept under ``logs/``.
        """
        hdir = host_dir(self.root, host_id)
        if hdir is None or host_id == LOGS or not hdir.is_dir():
            return []
        stopped = stop_processes(hdir, self._children.pop(host_id, None))
        serial = hdir / "serial.log"
        if serial.is_file():
            (self.root / LOGS).mkdir(exist_ok=True, mode=0o700)
            serial.replace(self.root / LOGS / f"{host_id}-serial.log")
        shutil.rmtree(hdir, ignore_errors=True)
        return [f"qemu process {pid}" for pid in stopped] + [f"directory {hdir}"]

    def console_output(self, host_id: str) -> str:
        """The serial console: the VM's own, or the log kept of a deleted one."""
        for path in (
            self.root / host_id / "serial.log",
            self.root / LOGS / f"{host_id}-serial.log",
        ):
            if host_dir(self.root, host_id) is not None and path.is_file():
                return path.read_text(errors="replace")
        raise HostNotFound(f"qemu: no console log for host {host_id!r}")

    def list(self) -> list[Host]:
        if not self.root.is_dir():
            return []
        dirs = sorted(d for d in self.root.iterdir() if d.name != LOGS)
        return [self.status(d.name) for d in dirs if (d / META).is_file()]

    # -- boot ---------------------------------------------------------------------

    def _check_tools(self) -> None:
        for tool in (self.qemu, "qemu-img", "mkfs.vfat", "mcopy"):
            if shutil.which(tool) is None:
                raise InvalidSpec(
                    f"qemu: {tool} is not installed",
                    hint="`make vm-image` installs qemu-system-x86 qemu-utils dosfstools mtools.",
                )
        for name in ("image.qcow2", "vmlinuz", "initrd.img"):
            if not (self.image / name).is_file():
                raise InvalidSpec(
                    f"qemu: no VM image at {self.image} ({name} missing)",
                    hint="Build it once with `make vm-image` (scripts/vm_image.sh).",
                )

    def _boot(self, spec: HostSpec, hdir: Path) -> Host:
        server = spec.server
        control = free_port()
        guest_ports = http_ports(server) if server.mode is TunnelMode.HTTP else list(server.ports)
        forwards = {free_port(): p for p in guest_ports} | self.forwards
        write_private(hdir / "user-data", spec.user_data)
        meta_data = f"instance-id: {spec.host_id}\nlocal-hostname: {spec.name}\n"
        write_private(hdir / "meta-data", meta_data)
        _run(["mkfs.vfat", "-n", "CIDATA", "-C", str(hdir / "seed.img"), "2048"])
        _run(
            [
                "mcopy",
                "-i",
                str(hdir / "seed.img"),
                str(hdir / "user-data"),
                str(hdir / "meta-data"),
                "::",
            ]
        )
        base = (self.image / "image.qcow2").resolve()
        _run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(base),
                str(hdir / "overlay.qcow2"),
            ]
        )
        fwd = {control: server.control_port, **forwards}
        nic = "user,model=virtio-net-pci,restrict=on"
        nic += "".join(f",hostfwd=tcp:{LOOPBACK}:{h}-:{g}" for h, g in fwd.items())
        nic += self._relays(server)
        cpus, mem = PLANS.get(spec.plan, PLANS[self.facts.default_plan])
        image = self.image.resolve()
        argv = [
            self.qemu, "-name", f"inletsctl-{spec.host_id}", "-accel", self.accel,
            "-smp", cpus, "-m", mem, "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{hdir / 'serial.log'}", "-pidfile", str(hdir / "qemu.pid"),
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
            "-append", "root=/dev/vda rw console=ttyS0 panic=-1",
            "-drive", f"file={hdir / 'overlay.qcow2'},if=virtio,format=qcow2",
            "-drive", f"file={hdir / 'seed.img'},if=virtio,format=raw,readonly=on",
            "-nic", nic,
        ]  # fmt: skip
        try:
            with open(hdir / "qemu.log", "wb") as log:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=hdir,
                )  # fmt: skip
        except OSError as exc:
            raise ProviderAPIError(
                "qemu", f"cannot start {self.qemu}: {exc.strerror}", code="exec"
            ) from exc
        self._children[spec.host_id] = proc
        meta = {
            "id": spec.host_id,
            "name": spec.name,
            "pid": proc.pid,
            "control_port": control,
            "data_port": next(iter(forwards), 0) if server.mode is TunnelMode.HTTP else 0,
            "forwards": ",".join(f"{h}:{g}" for h, g in forwards.items()),
            "fingerprint": server.tls_fingerprint,
            "mode": server.mode.value,
            "accel": self.accel,
        }
        write_private(hdir / META, json.dumps(meta))
        self._wait_started(hdir, proc)
        return self.status(spec.host_id)

    def _relays(self, server: ServerSpec) -> str:
        """A ``guestfwd`` per port of :data:`GUESTFWD_ADDR` that the guest fetches from (the
        release, the ACME directory), relaying to the same port on the host's loopback."""
        urls = [urlsplit(u) for u in (server.release_url, server.acme_directory)]
        ports = {
            u.port or DEFAULT_PORTS.get(u.scheme, 80) for u in urls if u.hostname == GUESTFWD_ADDR
        }
        return "".join(
            f",guestfwd=tcp:{GUESTFWD_ADDR}:{port}-cmd:"
            f"{sys.executable} -m providers.qemu relay {LOOPBACK} {port}"
            for port in sorted(ports)
        )

    def _wait_started(self, hdir: Path, proc: subprocess.Popen[bytes]) -> None:
        """qemu writes its pidfile once the VM runs; a bad option makes it exit first."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ProviderAPIError(
                    "qemu",
                    f"qemu exited ({proc.returncode}): {_tail(hdir / 'qemu.log')}",
                    hint="Run the qemu command line from the log by hand to see why.",
                    code="qemu-exited",
                )
            if (hdir / "qemu.pid").is_file():
                return
            time.sleep(0.05)
        raise ProviderAPIError(
            "qemu", f"qemu did not start within {self.start_timeout:.0f}s", code="qemu-timeout"
        )

    # -- helpers ------------------------------------------------------------------

    def _find_by_ip(self, ip: str | None) -> str:
        live = [h.id for h in self.list() if h.ip == ip]
        if len(live) != 1:
            found = "no qemu host" if not live else f"{len(live)} qemu hosts ({', '.join(live)})"
            raise HostNotFound(
                f"qemu: {found} with IP {ip}",
                hint="Every qemu host is on 127.0.0.1: delete it with --id.",
            )
        return live[0]

    def _meta(self, host_id: str) -> dict[str, object]:
        path = self.root / host_id / META
        if not host_id or "/" in host_id or not path.is_file():
            raise HostNotFound(f"qemu: no host {host_id!r}")
        doc = json.loads(path.read_text())
        assert isinstance(doc, dict)
        return doc

    def _serial(self, host_id: str) -> str:
        try:
            return (self.root / host_id / "serial.log").read_text(errors="replace")
        except OSError:
            return ""

    def _host(self, meta: dict[str, object], state: HostStatus, stage: str) -> Host:
        host_id = str(meta["id"])
        hdir = self.root / host_id
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
                "forwards": str(meta["forwards"]),
                "accel": str(meta["accel"]),
                "boot_stage": stage,
                "serial_log": str(hdir / "serial.log"),
                "state_dir": str(hdir),
            },
        )

    def _healthy(self, meta: dict[str, object]) -> bool:
        try:
            healthz(LOOPBACK, int(str(meta["control_port"])), str(meta["fingerprint"]), 2.0)
        except (OSError, ValueError):
            return False
        return True


def boot_stage(serial: str) -> str:
    """The furthest boot marker seen on the serial console ("" before the kernel speaks)."""
    stage = ""
    for needle, label in BOOT_MARKERS:
        if needle in serial:
            stage = label
    return "cloud-init failed" if BOOT_FAILED in serial else stage


def _run(argv: list[str]) -> None:
    try:
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip()
        raise ProviderAPIError("qemu", f"{argv[0]} failed: {err}", code="tool-failed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ProviderAPIError(
            "qemu", f"{argv[0]} did not finish in 60s", code="tool-timeout"
        ) from exc


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def relay(host: str, port: int, timeout: float = 300.0) -> None:
    """Copy bytes between stdin/stdout (one guest connection, from ``guestfwd``) and host:port.

    qemu's ``guestfwd`` to a chardev would open one connection at start; ``cmd:`` runs
    this once per guest connection instead, so every download gets its own socket.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    sel = selectors.DefaultSelector()
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    sel.register(stdin, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    while events := sel.select(timeout):
        for key, _ in events:
            if key.fileobj == stdin:
                if data := os.read(stdin, 1 << 16):
                    sock.sendall(data)
                else:  # the guest is done sending; keep relaying the answer
                    sock.shutdown(socket.SHUT_WR)
                    sel.unregister(stdin)
            elif data := sock.recv(1 << 16):
                _write_all(stdout, data)
            else:  # the host side is done: exiting closes the guest's connection
                return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "relay":
        relay(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit("usage: python -m providers.qemu relay HOST PORT")
