"""Orchestration of a host's life: create (record, call, poll, undo), delete.

The record is written as ``creating`` before the first API call, so a crash at any
point leaves something ``delete --id`` can finish (by our host-id tag, which every
resource carries from the call that makes it). A create that fails midway is undone
by that tag; if the undo fails too, the host stays in state as ``failed``. A create
that only ran out of time is kept as ``unready``: it may just be slow.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import cloud_init
from inletsctl import readiness, release, tls
from inletsctl.errors import (
    HostUnknown,
    NotReady,
    ProviderFailure,
    UsageError,
    map_provider_errors,
)
from inletsctl.readiness import Probe, Wait
from inletsctl.store import READY, UNREADY, HostRecord, Store
from providers import kit
from providers.base import Provider
from providers.errors import HostNotFound, UndoFailed
from providers.models import (
    Engine,
    Host,
    HostSpec,
    HostStatus,
    Issuer,
    ServerSpec,
    TunnelMode,
)

#: Seconds to wait before poll ``n`` (1-based).
Backoff = Callable[[int], float]
#: Called after each poll with (n, host, tunnel) so the CLI can show progress; ``tunnel``
#: is "" until the server is probed, then ``ready`` or why not (``connection refused``).
Progress = Callable[[int, Host, str], None]

#: ``create --timeout`` default: cloud VMs take 30-90 s to boot and fetch the engine.
DEFAULT_TIMEOUT_S = 300.0
#: A ``tunnel-core.pyz`` for the ``ssh`` provider to upload instead of a local build.
SSH_PYZ_ENV = "INLETSCTL_SSH_PYZ"
#: Bounds on one readiness probe: a silent firewall must not eat the whole deadline.
PROBE_TIMEOUT_S = 5.0
MIN_PROBE_TIMEOUT_S = 0.5


def constant(seconds: float) -> Backoff:
    return lambda _n: seconds


@dataclass(frozen=True)
class Waiting:
    """How far and how long ``create`` waits; tests swap the clock, sleep and probe."""

    until: Wait = Wait.ready
    #: seconds from the start of ``create`` to giving up (the host is then kept)
    timeout: float = DEFAULT_TIMEOUT_S
    backoff: Backoff = constant(2.0)
    probe: Probe = readiness.probe
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


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
    #: None = not asked for (production); staging only makes sense with domains
    issuer: Issuer | None = None
    token: str = field(default="", repr=False)
    engine: Engine = Engine.TUNNEL_CORE
    #: ``--engine inlets-pro``'s release; "" = the one cloud_init pins
    inlets_version: str = ""
    release_url: str = ""
    #: what the printed client command forwards to; saved for `get` and `connect`
    upstream: str = ""
    #: ``--allow-ips``, normalised: the only sources of the data ports; () = everyone
    allow_ips: tuple[str, ...] = ()
    zone: str = ""
    #: provider-specific options (``vpc_id``, ``subnet_id``, ``aws_key_name``); empty ones dropped
    extra: tuple[tuple[str, str], ...] = ()


def new_host_id() -> str:
    return uuid.uuid4().hex[:12]


def _no_warning(message: str) -> None:
    pass


def build_spec(
    req: CreateRequest,
    provider: Provider,
    host_id: str,
    dry_run: bool = False,
    warn: Callable[[str], None] = _no_warning,
) -> HostSpec:
    """Everything the provider gets, user-data rendered and size-checked: no API call yet.

    A provider that boots no VM (``consumes_user_data = False``, as ``local``) gets no
    user-data unless it is a dry run, which saves building the release artifact.
    ``warn`` hears of what works but is probably not what the user wants.
    """
    _check_engine_options(req)
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
    if req.mode is TunnelMode.TCP and not public:
        warn(
            f"no --ports: the server accepts any port in {ServerSpec.allow_ports} that a "
            "client asks for, and the firewall opens all of them; pass --ports to narrow it."
        )
    boots_a_vm = getattr(provider, "consumes_user_data", True)
    wants_user_data = dry_run or boots_a_vm
    artifact = (
        release.artifact(req.release_url or None)
        if wants_user_data and req.engine is Engine.TUNNEL_CORE
        else None
    )
    uploads = bool(getattr(provider, "uploads_artifact", False))
    if (
        boots_a_vm
        and not uploads
        and artifact
        and artifact.local_build
        and release.is_default_base(req.release_url)
    ):
        warn(
            f"{artifact.name} is a local build (a source checkout), so {artifact.url} "
            "may not serve it, and the VM refuses any other file. Host it yourself "
            "(`make dist` builds it) and pass --release-url, or install a released inletsctl."
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
        allow_ips=req.allow_ips,
        engine=req.engine,
        letsencrypt_domains=req.domains,
        letsencrypt_email=req.email,
        letsencrypt_issuer=req.issuer or Issuer.PROD,
        inlets_pro_version=req.inlets_version,
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
        extra=_extra(req, uploads and artifact is not None and not dry_run),
    )


def _extra(req: CreateRequest, with_pyz: bool) -> dict[str, str]:
    """The provider's own options; one that uploads the engine (``ssh``) gets its file."""
    extra = {k: v for k, v in req.extra if v}
    if with_pyz:
        extra["pyz"] = os.environ.get(SSH_PYZ_ENV) or str(release.local_pyz())
    return extra


def _check_engine_options(req: CreateRequest) -> None:
    """Options that belong to another engine or mode would be ignored: refuse them."""
    if req.inlets_version and req.engine is not Engine.INLETS_PRO:
        raise UsageError(
            "--inlets-version picks the inlets-pro release; tunnel-core is this inletsctl's own",
            hint="Pass --engine inlets-pro with it, or drop it.",
        )
    if req.issuer is not None and not req.domains:
        raise UsageError(
            "--letsencrypt-issuer needs --letsencrypt-domain",
            hint="Pass --letsencrypt-domain DOMAIN --letsencrypt-email EMAIL as well.",
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
        upstream=req.upstream,
        allow_ips=",".join(req.allow_ips),
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
    waiting: Waiting,
    progress: Progress,
) -> HostRecord:
    """Record, create, wait as far as ``waiting.until`` says; undo on any failure but time.

    A time-out keeps the host (``unready``): it exists and may only be slow, and its
    console output is what tells the user why. Everything else (the host failed, an
    error, Ctrl-C, SIGTERM) removes it by our host-id tag, so even what a lost answer
    hid goes; the state says ``deleted`` only when that removal succeeded.
    """
    with kit.sigterm_raises():
        deadline = waiting.clock() + waiting.timeout
        record = store.add(record_for(req, spec))
        host = _create_call(store, provider, spec)
        try:
            record = store.update(record.id, **_observed(record, host))
            if waiting.until is Wait.none:
                return record
            return _wait(store, provider, record, host, waiting, deadline, progress)
        except NotReady:
            store.update(record.id, status=UNREADY)
            raise
        except BaseException as exc:
            _undo(store, provider, record.id, exc)
            raise


def _create_call(store: Store, provider: Provider, spec: HostSpec) -> Host:
    """The kit removes what a failed call made; the state records whether it managed to."""
    with map_provider_errors():
        try:
            return kit.create_host(provider, spec)
        except UndoFailed:
            store.update(spec.host_id, status=HostStatus.FAILED.value)
            raise
        except BaseException:
            store.update(spec.host_id, status=HostStatus.DELETED.value)
            raise


def _wait(
    store: Store,
    provider: Provider,
    record: HostRecord,
    host: Host,
    waiting: Waiting,
    deadline: float,
    progress: Progress,
) -> HostRecord:
    """Poll the cloud until the VM runs, then (for ``ready``) probe its tunnel server.

    Once the cloud says running, its status is not asked again: only the probe can
    tell more, and each poll shows both in one progress line.
    """
    n = 1
    while True:
        tunnel, ready = "", False
        if host.status is HostStatus.ACTIVE and waiting.until is Wait.ready:
            left = deadline - waiting.clock()
            reason = waiting.probe(
                record.ip, record.control_port, record.fingerprint, _probe_timeout(left)
            )
            tunnel, ready = reason or "ready", reason is None
        progress(n, host, tunnel)
        if host.status is HostStatus.FAILED:
            raise ProviderFailure(f"{record.provider}: host {host.id} failed while starting")
        if host.status is HostStatus.ACTIVE and waiting.until is Wait.running:
            return record
        if ready:
            return store.update(record.id, status=READY)
        left = deadline - waiting.clock()
        if left <= 0:
            raise _timed_out(record, host, tunnel, waiting.timeout)
        waiting.sleep(min(waiting.backoff(n), left))
        n += 1
        if host.status is not HostStatus.ACTIVE:
            with map_provider_errors():
                host = provider.status(host.id)
            record = store.update(record.id, **_observed(record, host))


def _probe_timeout(left: float) -> float:
    """A probe never outlives the deadline by much, and never gets too little to finish TLS."""
    return min(PROBE_TIMEOUT_S, max(MIN_PROBE_TIMEOUT_S, left))


def _timed_out(record: HostRecord, host: Host, tunnel: str, timeout: float) -> NotReady:
    after = f"after {timeout:g}s"
    if host.status is HostStatus.ACTIVE:
        what = f"is running but its tunnel server is not ready {after} ({tunnel})"
    else:
        word = host.additional.get("provider_status") or host.status.value
        what = f"is not running {after} (status: {word})"
    return NotReady(
        f"{record.provider}: host {record.id} {what}",
        hint=(
            f"It is kept as {UNREADY!r}: see its console with `inletsctl logs {record.id}`, "
            f"remove it with `inletsctl delete --id {record.id}`, or raise --timeout."
        ),
        host_id=record.id,
    )


def _undo(store: Store, provider: Provider, host_id: str, exc: BaseException) -> None:
    """Remove by tag what a create interrupted after its call made; ``deleted`` only if so."""
    try:
        kit.undo(provider, host_id, exc)
    except UndoFailed as failed:
        store.update(host_id, status=HostStatus.FAILED.value)
        raise ProviderFailure(failed.message, failed.hint) from failed
    except BaseException:
        store.update(host_id, status=HostStatus.FAILED.value)
        raise
    store.update(host_id, status=HostStatus.DELETED.value)


def delete(store: Store, provider: Provider, record: HostRecord) -> HostRecord:
    """Remove by our host id, not the provider's: that also finishes a create that was
    killed before the provider's id reached the state. Nothing tagged left = deleted.
    """
    store.update(record.id, status=HostStatus.DELETING.value)
    try:
        with map_provider_errors():
            kit.delete_host(provider, record.id)
    except HostUnknown:
        pass  # nothing carries our tag any more: already gone at the provider
    except BaseException:
        store.update(record.id, status=HostStatus.FAILED.value)
        raise
    return store.update(record.id, status=HostStatus.DELETED.value)


def delete_unrecorded(
    provider: Provider, host_id: str = "", ip: str = "", force: bool = False
) -> None:
    """A host the state never saw: ``host_id`` may be ours (a tag) or the provider's.

    Our id is tried first because removing by tag also takes the firewall and finds a
    VM whose create never answered; only then is it taken as the provider's own id,
    where the provider's ownership rule (``NotOurs`` unless ``force``) applies.
    """
    with map_provider_errors():
        if ip:
            provider.delete(ip=ip, force=force)
            return
        try:
            kit.delete_host(provider, host_id)
        except HostNotFound:
            provider.delete(host_id=host_id, force=force)
