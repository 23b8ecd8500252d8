"""What a user needs to know about a host, as one model for every output format.

Commands build a ``Summary`` from a state record and hand it to ``output``; the
client command is built here once so `create`, `get` and `connect` agree on it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from inletsctl.store import READY, HostRecord

TOKEN_ENV = "INLETS_TOKEN"


def client_argv(record: HostRecord, upstream: str, token: str | None) -> list[str]:
    """The tunnel client's argv; with ``token=None`` it reads ``$INLETS_TOKEN`` instead."""
    inlets_pro = record.engine == "inlets-pro"
    argv = ["inlets-pro" if inlets_pro else "tunnel-core", record.mode, "client"]
    argv += ["--url", url(record)]
    argv += ["--token", token] if token is not None else ["--token-env", TOKEN_ENV]
    if not inlets_pro:  # inlets-pro's server made its own certificate (--auto-tls)
        argv += ["--tls-fingerprint", record.fingerprint]
    if record.mode == "tcp":
        argv += ["--upstream", upstream or "127.0.0.1", "--ports", record.ports]
    else:
        argv += ["--upstream", upstream or "http://127.0.0.1:8080"]
    return argv


def url(record: HostRecord) -> str:
    host = f"[{record.ip}]" if ":" in record.ip else record.ip
    return f"wss://{host or '<pending>'}:{record.control_port}"


@dataclass(frozen=True)
class Summary:
    id: str
    provider: str
    provider_id: str
    name: str
    region: str
    status: str
    ip: str
    mode: str
    engine: str
    url: str
    control_port: int
    data_port: int
    ports: str
    domains: str
    tls_fingerprint: str
    client_command: str
    delete_command: str
    #: the tunnel server answered with the pinned certificate (status ``ready``); scripts
    #: test this instead of knowing every status word
    ready: bool = False
    token: str | None = field(default=None, repr=False)


def summarise(record: HostRecord, show_token: bool, upstream: str = "") -> Summary:
    token = record.token if show_token else None
    return Summary(
        id=record.id,
        provider=record.provider,
        provider_id=record.provider_id,
        name=record.name,
        region=record.region,
        status=record.status,
        ip=record.ip,
        mode=record.mode,
        engine=record.engine,
        url=url(record),
        control_port=record.control_port,
        data_port=record.data_port,
        ports=record.ports,
        domains=record.domains,
        tls_fingerprint=record.fingerprint,
        client_command=shlex.join(client_argv(record, upstream, token)),
        delete_command=f"inletsctl delete --id {record.id}",
        ready=record.status == READY,
        token=token,
    )
