"""Every path a request can take to an upstream, started by the harness, on loopback.

`direct`, `socat` (a plain relay), `ssh-R` (OpenSSH's reverse tunnel: an sshd and an
`ssh -R` client), `stunnel` (a TLS relay pair) and ours, once per engine. Each path
exposes the same upstream ports on public ports of its own and names its server-side
and client-side processes, so the CPU each side spends per request or per byte can be
compared (the exit server is a 1-vCPU VM; sshd is the reference on that side).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.procs import BenchError, Procs, free_port, is_listening, tree_cpu_seconds, wait_for
from bench.tunnel import start_tunnel


@dataclass(frozen=True)
class Route:
    """One started path: upstream port -> public port, and its processes by side."""

    name: str
    public: Mapping[int, int]
    server_pids: tuple[int, ...] = ()
    client_pids: tuple[int, ...] = ()

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the (server side, client side) process trees."""
        return (
            sum(map(tree_cpu_seconds, self.server_pids)),
            sum(map(tree_cpu_seconds, self.client_pids)),
        )


def direct(ports: Sequence[int]) -> Route:
    return Route("direct", {p: p for p in ports})


def socat(procs: Procs, ports: Sequence[int], proto: str = "tcp") -> Route:
    """A plain relay per port; for UDP a child per public peer (socat's UDP-LISTEN,fork)."""
    public = {p: free_port() for p in ports}
    pids = []
    kind = proto.upper()
    for up, pub in public.items():
        proc = procs.start(
            f"socat-{proto}-{up}",
            ["socat", f"{kind}4-LISTEN:{pub},bind=127.0.0.1,fork,reuseaddr"]
            + [f"{kind}4:127.0.0.1:{up}"],
        )
        pids.append(proc.pid)
    _wait_listening(public.values(), proto)
    return Route("socat", public, server_pids=tuple(pids))


def ssh_r(procs: Procs, work: Path, ports: Sequence[int]) -> Route:
    """sshd on a free port (root only: it must switch users) and `ssh -N -R` to it."""
    if os.geteuid() != 0:
        raise BenchError("ssh -R needs root to run sshd; run bench/run.sh as root")
    d = work / "ssh"
    d.mkdir()
    for key in ("host", "user"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True
        )
    (d / "authorized_keys").write_bytes((d / "user.pub").read_bytes())
    (d / "authorized_keys").chmod(0o600)
    Path("/run/sshd").mkdir(exist_ok=True)
    port = free_port()
    sshd = procs.start(
        "sshd",
        ["/usr/sbin/sshd", "-D", "-e", "-f", "/dev/null", "-o", "ListenAddress=127.0.0.1"]
        + ["-o", f"Port={port}", "-o", f"HostKey={d / 'host'}", "-o", "StrictModes=no"]
        + ["-o", f"AuthorizedKeysFile={d / 'authorized_keys'}", "-o", "PidFile=none"]
        + ["-o", "PasswordAuthentication=no"],
    )
    wait_for("sshd listening", partial(is_listening, port))
    public = {p: free_port() for p in ports}
    forwards = [a for up, pub in public.items() for a in ("-R", f"127.0.0.1:{pub}:127.0.0.1:{up}")]
    ssh = procs.start(
        "ssh-R",
        ["ssh", "-N", "-i", str(d / "user"), "-p", str(port), "-o", "StrictHostKeyChecking=no"]
        + ["-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes", *forwards]
        + ["root@127.0.0.1"],
    )
    _wait_listening(public.values())
    # the session's forked sshd carries the traffic: CPU is counted over the process tree
    return Route("ssh-R", public, server_pids=(sshd.pid,), client_pids=(ssh.pid,))


STUNNEL_SERVICE = "[s{up}]\n{client}accept = 127.0.0.1:{accept}\nconnect = 127.0.0.1:{connect}\n"


def stunnel(procs: Procs, work: Path, ports: Sequence[int]) -> Route:
    """A TLS relay pair: client side (public port) -> server side (TLS) -> upstream."""
    d = work / "stunnel"
    d.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        + ["-nodes", "-days", "1", "-subj", "/CN=bench", "-keyout", str(d / "k.pem")]
        + ["-out", str(d / "c.pem")],
        check=True,
        capture_output=True,
    )
    public = {p: free_port() for p in ports}
    tls = {p: free_port() for p in ports}
    head = "foreground = yes\npid =\ndebug = 3\n"
    server = head + "".join(
        STUNNEL_SERVICE.format(up=up, client="", accept=tls[up], connect=up)
        + f"cert = {d / 'c.pem'}\nkey = {d / 'k.pem'}\n"
        for up in ports
    )
    client = head + "".join(
        STUNNEL_SERVICE.format(up=up, client="client = yes\n", accept=public[up], connect=tls[up])
        for up in ports
    )
    (d / "server.conf").write_text(server)
    (d / "client.conf").write_text(client)
    s = procs.start("stunnel-server", ["stunnel", str(d / "server.conf")])
    c = procs.start("stunnel-client", ["stunnel", str(d / "client.conf")])
    _wait_listening([*tls.values(), *public.values()])
    return Route("stunnel", public, server_pids=(s.pid,), client_pids=(c.pid,))


def ours(
    procs: Procs,
    work: Path,
    name: str,
    engine: Sequence[str],
    ports: Sequence[int],
    tag: str = "",
    mode: str = "tcp",
) -> Route:
    tunnel = start_tunnel(procs, work, engine, list(ports), tag or name, mode)
    return Route(name, tunnel.public, (tunnel.server.pid,), (tunnel.client.pid,))


def _wait_listening(ports: Iterable[int], proto: str = "tcp") -> None:
    for port in ports:
        wait_for(f"a relay on {proto} port {port}", partial(is_listening, port, proto))
