"""What a user needs to know about a host, as one model for every output format.

Commands build a ``Summary`` from a state record and hand it to ``output``; the
client command is built here once so `create`, `get` and `connect` agree on it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from inletsctl.errors import UsageError
from inletsctl.store import ENDED, READY, HostRecord

TOKEN_ENV = "INLETS_TOKEN"
DEFAULT_UPSTREAM = {"tcp": "127.0.0.1", "http": "http://127.0.0.1:8080"}
_TCP_HOST = re.compile(r"^[A-Za-z0-9._:-]+$")


def check_upstream(mode: str, engine: str, upstream: str) -> str:
    """Refuse an upstream the client of ``mode`` would reject, before anything is paid for.

    TCP clients dial a host (the ports come from ``--ports``); HTTP clients proxy to a
    URL: tunnel-core's speaks http:// only (its own parser decides), inlets-pro's https too.
    """
    if not upstream:
        return upstream
    if mode == "tcp":
        if not _TCP_HOST.match(upstream) or "://" in upstream:
            raise UsageError(
                f"--upstream {upstream!r}: TCP mode forwards to a host, not a URL",
                hint="Pass a host or IP, e.g. --upstream 127.0.0.1 (ports go in --ports).",
            )
        return upstream
    if engine == "inlets-pro":
        parts = urlsplit(upstream)
        if parts.scheme in ("http", "https") and parts.hostname:
            return upstream
        problem = "expected http://ADDRESS[:PORT] or https://ADDRESS[:PORT]"
    else:
        from tunnel_core.http.upstream import parse_upstream  # the engine's own rule

        try:
            parse_upstream(upstream)
            return upstream
        except ValueError as exc:
            problem = str(exc).removeprefix(f"--upstream {upstream!r}: ")
    raise UsageError(
        f"--upstream {upstream!r}: {problem}", hint="Pass e.g. --upstream http://127.0.0.1:8080."
    )


#: what the client command says for the ports of a TCP host made without --ports
PORTS_PLACEHOLDER = "PORTS"


def client_argv(record: HostRecord, upstream: str = "", ports: str = "") -> list[str]:
    """The tunnel client's argv; the token comes from ``$INLETS_TOKEN``, never argv (``ps``).

    ``upstream`` overrides the one saved at create, which overrides the mode's default;
    ``ports`` likewise, for a TCP host whose server allows any port the client asks for.
    """
    inlets_pro = record.engine == "inlets-pro"
    argv = ["inlets-pro" if inlets_pro else "tunnel-core", record.mode, "client"]
    argv += [arg for u in urls(record) for arg in ("--url", u)]
    argv += ["--token-env", TOKEN_ENV]
    if not inlets_pro:  # inlets-pro's server made its own certificate (--auto-tls)
        argv += ["--tls-fingerprint", record.fingerprint]
    argv += ["--upstream", upstream or record.upstream or DEFAULT_UPSTREAM[record.mode]]
    if record.mode == "tcp":
        argv += ["--ports", ports or record.ports or PORTS_PLACEHOLDER]
    return argv


def delete_argv(record: HostRecord) -> list[str]:
    """With the provider and region, it works from another machine or without the state."""
    argv = ["inletsctl", "delete", "--id", record.id, "--provider", record.provider]
    return argv + (["--region", record.region] if record.region else [])


def netloc(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def url(record: HostRecord) -> str:
    return f"wss://{netloc(record.ip) or '<pending>'}:{record.control_port}"


def addresses(record: HostRecord) -> list[str]:
    """Every exit server's IP: a load-balanced group's members, else the one host's; the
    host's ``ip`` alone (a load balancer's name) when clients reach the control port
    through it (``control``: ``load_balancer``; the members' IPs are then private)."""
    if record.additional.get("control") == "load_balancer":
        return [record.ip]
    members = [ip for ip in record.additional.get("member_ips", "").split(",") if ip]
    return members or [record.ip]


def urls(record: HostRecord) -> list[str]:
    """One control URL per exit server; the client keeps a session to each."""
    return [url(replace(record, ip=ip)) for ip in addresses(record)]


def public_url(record: HostRecord) -> str | None:
    """Where the world reaches an HTTP tunnel (Caddy's HTTPS name, else the data port).

    None for TCP, whose public side is the IP and its ports, and before there is an IP.
    """
    if record.mode != "http":
        return None
    if record.domains:
        return f"https://{record.domains.split(',')[0]}"
    if record.additional.get("dns_name"):  # a load balancer listening on 80
        return f"http://{record.additional['dns_name']}"
    return f"http://{netloc(record.ip)}:{record.data_port}" if record.ip else None


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
    #: ``http://IP:8000`` or ``https://DOMAIN``; None in TCP mode (see ``ports``)
    public_url: str | None = None
    #: the tunnel server answered with the pinned certificate (status ``ready``); scripts
    #: test this instead of knowing every status word
    ready: bool = False
    token: str | None = field(default=None, repr=False)
    #: what the provider says the user should know (``ssh``: the server runs detached,
    #: no systemd on the host); None when it says nothing
    note: str | None = None
    #: ``create --region a,b``: the regions passed over, in order, each with the provider's
    #: words for why (``region`` is the one that won); None when one region was given
    skipped_regions: list[dict[str, str]] | None = None
    #: ``create --dns``: ``{"provider", "zones", "records": [{"name", "type", "value"}]}``,
    #: the claims (TXT) included; None when the host has no DNS records
    dns: dict[str, Any] | None = None
    #: ``--load-balancer``: its type and public DNS name (where the TCP ports, or HTTP's
    #: port 80, are served), and each exit server behind it; None for a single host
    load_balancer: dict[str, str] | None = None
    members: list[dict[str, str]] | None = None


def summarise(
    record: HostRecord,
    show_token: bool,
    upstream: str = "",
    ports: str = "",
    skipped_regions: Sequence[tuple[str, str]] | None = None,
) -> Summary:
    """A deleted or gone host has nothing to connect to or delete: its commands are empty."""
    token = record.token if show_token else None
    gone = record.status in ENDED
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
        client_command="" if gone else shlex.join(client_argv(record, upstream, ports)),
        delete_command="" if gone else shlex.join(delete_argv(record)),
        public_url=public_url(record),
        ready=record.status == READY,
        token=token,
        note=_note(record),
        skipped_regions=None
        if skipped_regions is None
        else [{"region": region, "reason": reason} for region, reason in skipped_regions],
        dns=_dns(record),
        **_group(record),
    )


def _group(record: HostRecord) -> dict[str, Any]:
    """``load_balancer`` and ``members`` of a group; nothing for a single host."""
    extra = record.additional
    if not extra.get("load_balancer"):
        return {}
    ids, ips, zones = (extra.get(k, "").split(",") for k in ("members", "member_ips", "zones"))
    return {
        "load_balancer": {"type": extra["load_balancer"], "dns_name": extra.get("dns_name", "")},
        "members": [
            {"id": i, "ip": ip, "zone": zone}
            for i, ip, zone in zip(ids, ips, zones, strict=False)  # one entry per member
            if i
        ],
    }


def _dns(record: HostRecord) -> dict[str, Any] | None:
    if not record.dns:
        return None
    doc = json.loads(record.dns)
    zones = sorted({z["name"] for z in doc["zones"].values()})
    return {"provider": doc["provider"], "zones": zones, "records": doc["records"]}


def _note(record: HostRecord) -> str | None:
    extra = record.additional
    note = extra.get("note")
    if not note:
        return None
    pid = f": pid {extra['pid']}, pidfile {extra['pidfile']}" if extra.get("pidfile") else ""
    return f"{note}{pid}"
