"""Orchestration of a host's life: create (record, call, poll, undo), delete.

The record is written as ``creating`` before the first API call, so a crash at any
point leaves something ``delete --id`` can finish. A create that fails midway is
undone; if the undo fails too, the host stays in state as ``failed``.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import cloud_init
from inletsctl import release, tls
from inletsctl.errors import (
    HostUnknown,
    InletsctlError,
    ProviderFailure,
    UsageError,
    map_provider_errors,
)
from inletsctl.store import HostRecord, Store
from providers.base import Provider
from providers.errors import HostNotFound, ProviderError
from providers.models import Engine, Host, HostSpec, HostStatus, ServerSpec, TunnelMode

#: Seconds to wait before poll ``n`` (1-based).
Backoff = Callable[[int], float]
#: Called after each poll with (n, max_polls, host) so the CLI can show progress.
Progress = Callable[[int, int, Host], None]


def constant(seconds: float) -> Backoff:
    return lambda _n: seconds


@dataclass(frozen=True)
class CreateRequest:
    provider: str
    mode: TunnelMode
    name: str = ""
    region: str = ""
    plan: str = ""
    image: str = ""
    #: (public, upstream) pairs; the server opens the public ones, the client maps them.
    ports: tuple[tuple[int, int], ...] = ()
    domains: tuple[str, ...] = ()
    email: str = ""
    token: str = field(default="", repr=False)
    engine: Engine = Engine.TUNNEL_CORE
    release_url: str = ""
    zone: str = ""
    #: provider-specific options (``vpc_id``, ``subnet_id``, ``aws_key_name``); empty ones dropped
    extra: tuple[tuple[str, str], ...] = ()


def new_host_id() -> str:
    return uuid.uuid4().hex[:12]


def build_spec(
    req: CreateRequest, provider: Provider, host_id: str, dry_run: bool = False
) -> HostSpec:
    """Everything the provider gets, user-data rendered and size-checked: no API call yet.

    A provider that boots no VM (``consumes_user_data = False``, as ``local``) gets no
    user-data unless it is a dry run, which saves building the release artifact.
    """
    facts = provider.facts
    region = req.region or facts.default_region
    plan = req.plan or facts.default_plan
    if facts.regions and region not in facts.regions:
        raise UsageError(
            f"{req.provider}: unknown region {region!r}",
            hint=f"Use one of: {', '.join(facts.regions)}.",
        )
    if facts.plans and plan not in facts.plans:
        raise UsageError(
            f"{req.provider}: unknown plan {plan!r}", hint=f"Use one of: {', '.join(facts.plans)}."
        )
    ident = tls.generate(ip="127.0.0.1" if req.provider == "local" else "")
    public = tuple(p for p, _ in req.ports)
    wants_user_data = dry_run or getattr(provider, "consumes_user_data", True)
    artifact = (
        release.artifact(req.release_url or None)
        if wants_user_data and req.engine is Engine.TUNNEL_CORE
        else None
    )
    if req.token:
        with map_provider_errors():
            cloud_init.check_token(req.token)
    server = ServerSpec(
        mode=req.mode,
        token=req.token or secrets.token_urlsafe(32),
        tls_cert_pem=ident.cert_pem,
        tls_key_pem=ident.key_pem,
        tls_fingerprint=ident.fingerprint,
        ports=public,
        allow_ports=",".join(map(str, public)) or ServerSpec.allow_ports,
        engine=req.engine,
        letsencrypt_domains=req.domains,
        letsencrypt_email=req.email,
        release_url=artifact.url if artifact else "",
        artifact_sha256=artifact.sha256 if artifact else "",
    )
    user_data = ""
    if wants_user_data:
        with map_provider_errors():
            user_data = cloud_init.render(server)
            cloud_init.check_size(user_data, facts, req.provider)
    return HostSpec(
        host_id=host_id,
        name=req.name or f"inlets-{host_id[:6]}",
        region=region,
        plan=plan,
        image=req.image or facts.default_image,
        user_data=user_data,
        server=server,
        zone=req.zone,
        extra={k: v for k, v in req.extra if v},
    )


def record_for(req: CreateRequest, spec: HostSpec) -> HostRecord:
    s = spec.server
    return HostRecord(
        id=spec.host_id,
        provider=req.provider,
        name=spec.name,
        status=HostStatus.CREATING.value,
        mode=s.mode.value,
        engine=s.engine.value,
        control_port=s.control_port,
        data_port=s.data_port,
        fingerprint=s.tls_fingerprint,
        token=s.token,
        region=spec.region,
        ports=",".join(f"{p}:{u}" if p != u else str(p) for p, u in req.ports),
        domains=",".join(s.letsencrypt_domains),
    )


def _observed(record: HostRecord, host: Host) -> dict[str, object]:
    """Columns to update from what the provider reports (local reports its own ports)."""
    extra = dict(host.additional)
    return {
        "provider_id": host.id,
        "status": host.status.value,
        "ip": host.ip,
        "control_port": int(extra.get("control_port") or record.control_port),
        "data_port": int(extra.get("data_port") or record.data_port),
        "additional": extra,
    }


def create(
    store: Store,
    provider: Provider,
    req: CreateRequest,
    spec: HostSpec,
    max_polls: int,
    backoff: Backoff,
    progress: Progress,
) -> HostRecord:
    record = store.add(record_for(req, spec))
    try:
        with map_provider_errors():
            host = provider.create(spec)
        record = store.update(record.id, **_observed(record, host))
        for n in range(1, max_polls + 1):
            progress(n, max_polls, host)
            if host.status is HostStatus.ACTIVE:
                return store.update(record.id, **_observed(record, host))
            if host.status is HostStatus.FAILED:
                raise ProviderFailure(f"{req.provider}: host {host.id} failed while starting")
            time.sleep(backoff(n))
            with map_provider_errors():
                host = provider.status(host.id)
            record = store.update(record.id, **_observed(record, host))
        raise ProviderFailure(
            f"{req.provider}: host {host.id} not active after {max_polls} polls",
            hint="Raise --max-polls or --poll.",
        )
    except BaseException as exc:
        _undo(store, provider, store.get(record.id), exc)
        raise


def _undo(store: Store, provider: Provider, record: HostRecord, exc: BaseException) -> None:
    """Remove what a failed create made; if that fails too, leave it for `delete --id`."""
    if not record.provider_id:  # the provider's create itself failed and cleaned up
        store.update(record.id, status=HostStatus.DELETED.value)
        return
    try:
        provider.delete(host_id=record.provider_id)
    except HostNotFound:
        pass
    except ProviderError as undo_exc:
        store.update(record.id, status=HostStatus.FAILED.value)
        if isinstance(exc, InletsctlError):
            exc.hint = (
                f"Undo failed too ({undo_exc.message}); "
                f"finish it with `inletsctl delete --id {record.id}`."
            )
        return
    store.update(record.id, status=HostStatus.DELETED.value)


def delete(store: Store, provider: Provider, record: HostRecord) -> HostRecord:
    """Remove the host at its provider; a host the provider no longer has is deleted too."""
    store.update(record.id, status=HostStatus.DELETING.value)
    try:
        with map_provider_errors():
            provider.delete(host_id=record.provider_id or record.id)
    except HostUnknown:
        pass  # already gone at the provider: nothing left to remove
    except BaseException:
        store.update(record.id, status=HostStatus.FAILED.value)
        raise
    return store.update(record.id, status=HostStatus.DELETED.value)


def refreshed(store: Store, provider: Provider, record: HostRecord) -> HostRecord:
    with map_provider_errors():
        host = provider.status(record.provider_id or record.id)
    return store.update(record.id, **_observed(record, host))
