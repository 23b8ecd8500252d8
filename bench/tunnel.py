"""Our tunnel under test: `tunnel-core tcp|udp server` and its client on 127.0.0.1.

It runs exactly as a user would run it: real TLS with a pinned certificate made the
way `inletsctl create` makes it, a token from a file, the client dialling its
upstreams. Holding the certificate also lets the bench verify the health endpoint
against it instead of skipping verification.
"""

from __future__ import annotations

import json
import secrets
import ssl
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from bench.procs import BenchError, Procs, free_port, is_listening, wait_for
from inletsctl import tls


@dataclass(frozen=True)
class Tunnel:
    server: Popen[bytes]
    client: Popen[bytes]
    control_port: int
    public: Mapping[int, int]
    """Upstream port -> the public port on the tunnel server that reaches it."""


def health(control_port: int, cafile: Path) -> dict[str, object] | None:
    """The server's /healthz document, or None while it is not answering yet."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{control_port}/healthz", context=ctx, timeout=2
        ) as resp:
            doc: dict[str, object] = json.load(resp)
            return doc
    except OSError:
        return None


def start_tunnel(
    procs: Procs,
    work: Path,
    engine: Sequence[str],
    upstream_ports: Sequence[int],
    tag: str,
    mode: str = "tcp",
) -> Tunnel:
    """Start a server and a client exposing each of `upstream_ports` on a fresh public port.

    Returns once the client is connected and every public port listens, so the
    first measured connection never races the tunnel's setup.
    """
    work = work / tag
    work.mkdir()
    identity = tls.generate(ip="127.0.0.1")
    cert, key = work / "server.crt", work / "server.key"
    cert.write_text(identity.cert_pem)
    key.touch(mode=0o600)
    key.write_text(identity.key_pem)
    token = work / "token"
    token.touch(mode=0o600)
    token.write_text(secrets.token_urlsafe(32))
    control = free_port()
    public = {port: free_port() for port in upstream_ports}
    server = procs.start(
        f"{tag}-server",
        [*engine, mode, "server", "--bind", "127.0.0.1", "--control-port", str(control)]
        + ["--token-file", str(token), "--tls-cert", str(cert), "--tls-key", str(key)]
        + ["--allow-ports", "1024-65535"],
    )

    def serving() -> bool:
        if server.poll() is not None:
            raise BenchError(f"tunnel-core server exited:\n{procs.log(f'{tag}-server')}")
        return health(control, cert) is not None

    wait_for("tunnel-core server health", serving)
    client = procs.start(
        f"{tag}-client",
        [*engine, mode, "client", "--url", f"wss://127.0.0.1:{control}"]
        + ["--token-file", str(token), "--tls-fingerprint", identity.fingerprint]
        + ["--upstream", "127.0.0.1"]
        + ["--ports", ",".join(f"{pub}:{up}" for up, pub in public.items())],
    )

    def connected() -> bool:
        if client.poll() is not None:
            raise BenchError(f"tunnel-core client exited:\n{procs.log(f'{tag}-client')}")
        doc = health(control, cert)
        clients = doc.get("clients") if doc else None
        bound = all(is_listening(port, mode) for port in public.values())
        return isinstance(clients, int) and clients >= 1 and bound

    wait_for("tunnel-core client connected with every public port listening", connected)
    return Tunnel(server, client, control, public)
