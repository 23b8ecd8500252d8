"""Orchestration of a host's life: create (record, call, poll, undo), delete, prune.

The record is written as ``creating`` before the first API call, so a crash at any
point leaves something ``delete --id`` can finish (by our host-id tag, which every
resource carries from the call that makes it). A create that fails midway is undone
by that tag; if the undo fails too, the host stays in state as ``failed``. A create
that only ran out of time is kept as ``unready``: it may just be slow. Given several
regions, create moves on only after a capacity refusal was undone that way. Bulk
delete is the single delete per host; prune only reads the providers' lists. DNS
records (``create --dns``) are placed before the VM is made, published once its IP
is known, and removed before the VM on undo and delete.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import cloud_init
from inletsctl import readiness, release, tls
from inletsctl.errors import (
    HostUnknown,
    InletsctlError,
    NoCapacity,
    NotReady,
    ProviderFailure,
    UsageError,
    map_provider_errors,
)
from inletsctl.readiness import Probe, Wait
from inletsctl.store import GONE, READY, UNREADY, HostRecord, Store
from inletsctl.summary import addresses
from providers import kit
from providers.base import Provider
from providers.dns import DnsConfig, Record, Zone, open_dns
from providers.dns.kit import Placement, place
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

#: Opens provider ``name`` configured for ``region`` (EC2's client and purge are per region).
Opener = Callable[[str, str], Provider]
#: The DNS credentials for records of a host of provider ``p`` at DNS provider ``d``.
DnsAccess = Callable[[str, str], DnsConfig]
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
    #: ``--acme-directory``: another ACME CA instead of Let's Encrypt; "" = the issuer's
    acme_directory: str = ""
    #: ``--acme-ca-root``'s PEM text: what Caddy trusts for that directory's HTTPS
    acme_ca_root: str = ""
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
    user-data unless it is a dry run, which saves building the release artifact; one
    whose exit servers download the engine themselves (``fetches_artifact``, as
    ``ecs-fargate``) still gets the release URL and SHA-256, and is the only kind that
    may take an ``s3://`` object URL.
    ``warn`` hears of what works but is probably not what the user wants.
    """
    _check_engine_options(req)
    acme_ca_root = _acme_ca_root(req)
    facts = provider.facts
    region = req.region or facts.default_region
    plan = req.plan or facts.default_plan
    _require_regions(req.provider, facts.regions, (region,))
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
    fetches = bool(getattr(provider, "fetches_artifact", False))
    object_url = release.is_object_url(req.release_url)
    if object_url and not fetches:
        raise UsageError(
            f"--release-url {req.release_url}: an s3:// object is read by ecs-fargate's task "
            "role; a VM downloads tunnel-core.pyz over https",
            hint="Pass --provider ecs-fargate, or an https:// release base.",
        )
    # an s3:// URL cannot go into user-data (no VM has the role that reads it)
    wants_user_data = boots_a_vm or (dry_run and not object_url)
    artifact = (
        release.artifact(req.release_url or None)
        if (wants_user_data or fetches) and req.engine is Engine.TUNNEL_CORE
        else None
    )
    uploads = bool(getattr(provider, "uploads_artifact", False))
    if (
        (boots_a_vm or fetches)
        and not object_url
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
        acme_directory=req.acme_directory,
        acme_ca_root=acme_ca_root,
        inlets_pro_version=req.inlets_version,
        release_url=artifact.url if artifact else "",
        artifact_sha256=artifact.sha256 if artifact else "",
    )
    user_data = ""
    if wants_user_data:
        with map_provider_errors():
            user_data = cloud_init.render(server, host_firewall=facts.host_firewall)
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


def _require_regions(name: str, known: Sequence[str], regions: Sequence[str]) -> None:
    """A usage error naming every region not in ``known``; () knows nothing, checks nothing."""
    unknown = [r for r in regions if known and r not in known]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise UsageError(
            f"{name}: unknown region{plural} {', '.join(map(repr, unknown))}",
            hint=f"Use one of: {', '.join(known)}.",
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


def _acme_ca_root(req: CreateRequest) -> str:
    """Another ACME CA: only for HTTPS, one directory at a time; its root, as PEM again."""
    if not (req.acme_directory or req.acme_ca_root):
        return ""
    if not req.domains:
        raise UsageError(
            "--acme-directory and --acme-ca-root need --letsencrypt-domain",
            hint="Pass --letsencrypt-domain DOMAIN --letsencrypt-email EMAIL as well.",
        )
    if not req.acme_directory:
        raise UsageError(
            "--acme-ca-root is the root of --acme-directory's HTTPS, and none was given",
            hint="Pass --acme-directory URL too; Let's Encrypt's own roots need no flag.",
        )
    if req.issuer is not None:
        raise UsageError(
            "--letsencrypt-issuer and --acme-directory both choose the ACME directory",
            hint="Pass one of them.",
        )
    with map_provider_errors():
        cloud_init.check_acme_directory(req.acme_directory)
        return cloud_init.check_ca_root(req.acme_ca_root) if req.acme_ca_root else ""


def record_for(
    req: CreateRequest, spec: HostSpec, placement: Placement | None = None
) -> HostRecord:
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
        dns=dns_json(placement) if placement else "",
    )


def plan_dns(name: str, domains: Sequence[str], zone: str, config: DnsConfig) -> Placement:
    """Each domain's zone, every name checked free: before the VM exists, at no cost."""
    with map_provider_errors():
        return place(open_dns(name, config), domains, zone)


def dns_json(placement: Placement, made: Sequence[Record] = ()) -> str:
    """What the state keeps of a host's records: enough for ``delete --id`` to find them
    (the provider and zones; the claims do the rest) and for ``get`` to show them."""
    return json.dumps(
        {
            "provider": placement.dns.name,
            "zones": {d: {"id": z.id, "name": z.name} for d, z in placement.zones.items()},
            "records": [{"name": r.name, "type": r.type, "value": r.value} for r in made],
        }
    )


def placement_of(record: HostRecord, dns: DnsAccess | None = None) -> Placement | None:
    """The DNS provider and zones of a host from its row; None when it has no records."""
    if not record.dns:
        return None
    doc = json.loads(record.dns)
    name = doc["provider"]
    config = dns(record.provider, name) if dns else DnsConfig()
    zones = {d: Zone(z["id"], z["name"]) for d, z in doc["zones"].items()}
    with map_provider_errors():
        return Placement(open_dns(name, config), zones)


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
    placement: Placement | None = None,
) -> HostRecord:
    """Record, create, wait as far as ``waiting.until`` says; undo on any failure but time.

    A time-out keeps the host (``unready``): it exists and may only be slow, and its
    console output is what tells the user why. Everything else (the host failed, an
    error, Ctrl-C, SIGTERM) removes it by our host-id tag, so even what a lost answer
    hid goes; the state says ``deleted`` only when that removal succeeded. With a
    ``placement``, the DNS records are made once the IP is known, and undone with it.
    """
    with kit.sigterm_raises():
        deadline = waiting.clock() + waiting.timeout
        record = store.add(record_for(req, spec, placement))
        host = _create_call(store, provider, spec)
        try:
            record = store.update(record.id, **_observed(record, host))
            if waiting.until is Wait.none:
                return record
            return _wait(store, provider, record, host, waiting, deadline, progress, placement)
        except NotReady:
            store.update(record.id, status=UNREADY)
            raise
        except BaseException as exc:
            _undo(store, provider, record.id, exc, placement)
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
    placement: Placement | None = None,
) -> HostRecord:
    """Poll the cloud until the VM runs, then (for ``ready``) probe its tunnel server.

    Once the cloud says running, its status is not asked again: only the probe can
    tell more, and each poll shows both in one progress line. The DNS records are made
    as soon as the cloud reports an IP, before the probe: Caddy on the VM retries its
    certificate order until the names resolve, so every second counts.
    """
    n = 1
    while True:
        if placement is not None and record.ip:
            record = _publish(store, placement, record, host, deadline - waiting.clock())
            placement = None
        tunnel, ready = "", False
        if host.status is HostStatus.ACTIVE and waiting.until is Wait.ready:
            left = deadline - waiting.clock()
            reason = _probe_every(waiting.probe, record, _probe_timeout(left))
            tunnel, ready = reason or "ready", reason is None
        progress(n, host, tunnel)
        if host.status is HostStatus.FAILED:
            raise ProviderFailure(f"{record.provider}: host {host.id} failed while starting")
        if host.status is HostStatus.ACTIVE and waiting.until is Wait.running and not placement:
            return record
        if ready:
            return store.update(record.id, status=READY)
        left = deadline - waiting.clock()
        if left <= 0:
            raise _timed_out(record, host, tunnel, waiting.timeout)
        waiting.sleep(min(waiting.backoff(n), left))
        n += 1
        if host.status is not HostStatus.ACTIVE or (placement is not None and not record.ip):
            with map_provider_errors():
                host = provider.status(host.id)
            record = store.update(record.id, **_observed(record, host))


def _publish(
    store: Store, placement: Placement, record: HostRecord, host: Host, left: float
) -> HostRecord:
    with map_provider_errors():
        made = placement.publish(record.id, host.ip, host.ipv6, max(left, 0.0))
    return store.update(record.id, dns=dns_json(placement, made))


def _probe_every(probe: Probe, record: HostRecord, timeout: float) -> str | None:
    """A group is ready when every member is: its client connects to each of them."""
    ips = addresses(record)
    for ip in ips:
        reason = probe(ip, record.control_port, record.fingerprint, timeout)
        if reason is not None:
            return f"{ip}: {reason}" if len(ips) > 1 else reason
    return None


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


def _undo(
    store: Store,
    provider: Provider,
    host_id: str,
    exc: BaseException,
    placement: Placement | None = None,
) -> None:
    """Remove by tag what a create interrupted after its call made; ``deleted`` only if so.

    DNS records go first and, if they cannot, the VM stays: a name left pointing at a
    released IP is one the next tenant of that address could take over.
    """
    try:
        if placement is not None:
            kit.undo_with(placement.purge, host_id, exc)
        kit.undo(provider, host_id, exc)
    except UndoFailed as failed:
        store.update(host_id, status=HostStatus.FAILED.value)
        raise ProviderFailure(failed.message, failed.hint) from failed
    except BaseException:
        store.update(host_id, status=HostStatus.FAILED.value)
        raise
    store.update(host_id, status=HostStatus.DELETED.value)


@dataclass(frozen=True)
class Attempt:
    """One region to try, with its own provider object, host id and spec (and certificate)."""

    req: CreateRequest
    provider: Provider
    spec: HostSpec


@dataclass(frozen=True)
class Skipped:
    """A region that ``--region a,b`` moved on from, and the provider's words for why."""

    region: str
    reason: str


def plan_regions(
    req: CreateRequest,
    regions: Sequence[str],
    opener: Opener,
    dry_run: bool = False,
    warn: Callable[[str], None] = _no_warning,
) -> list[Attempt]:
    """An attempt per region (``()``: the provider's default), everything checked that can
    be before the first paid call: every region known, every spec rendered and sized.

    Regions are checked against ``facts.regions``, or else what the provider's optional
    ``known_regions()`` lists (free to ask), so a typo in the last region stops the
    command before the first region bills anything. ``warn`` hears the first spec only:
    the others would repeat it.
    """
    if len(regions) > 1 and req.zone:
        raise UsageError(
            "--zone is a zone of one region; it cannot go with several --region values",
            hint="Pass one --region with --zone, or drop --zone.",
        )
    names = tuple(regions) or ("",)
    providers = [opener(req.provider, region) for region in names]
    if len(regions) > 1:
        first = providers[0]
        known: Sequence[str] = first.facts.regions
        lister = getattr(first, "known_regions", None)
        if not known and lister is not None:
            with map_provider_errors():
                known = lister()
        _require_regions(req.provider, known, regions)
    attempts = []
    for n, (region, provider) in enumerate(zip(names, providers, strict=True)):
        attempt_req = replace(req, region=region)
        say = warn if n == 0 else _no_warning
        spec = build_spec(attempt_req, provider, new_host_id(), dry_run, warn=say)
        attempts.append(Attempt(attempt_req, provider, spec))
    return attempts


def _no_move(skipped: Skipped, next_region: str) -> None:
    pass


def create_first_fit(
    store: Store,
    attempts: Sequence[Attempt],
    waiting: Waiting,
    progress: Progress,
    moving_on: Callable[[Skipped, str], None] = _no_move,
    placement: Placement | None = None,
) -> tuple[HostRecord, tuple[Skipped, ...]]:
    """:func:`create` in each region in turn, until one takes the host.

    Only a capacity or quota refusal (``NoCapacity``) moves on, and only after the
    refused attempt was removed by its host-id tag (its row then says ``deleted``):
    another region cannot fix a rejected token or a typo, and a removal that failed
    must be finished before anything else is made. ``moving_on`` hears each move.
    """
    skipped: list[Skipped] = []
    refused: NoCapacity | None = None
    for attempt in attempts:
        if refused is not None:
            moving_on(skipped[-1], attempt.spec.region)
        try:
            record = create(
                store, attempt.provider, attempt.req, attempt.spec, waiting, progress, placement
            )
            return record, tuple(skipped)
        except NoCapacity as exc:
            refused = exc
            skipped.append(Skipped(attempt.spec.region, exc.message))
    if refused is not None and len(attempts) == 1:
        raise refused
    tried = "; ".join(f"{s.region}: {s.reason}" for s in skipped)
    raise NoCapacity(
        f"no region of {len(skipped)} took the host ({tried})", refused.hint if refused else ""
    ) from refused


def delete(
    store: Store,
    provider: Provider,
    record: HostRecord,
    dns: DnsAccess | None = None,
    clients: Callable[[HostRecord], None] | None = None,
) -> HostRecord:
    """Remove by our host id, not the provider's: that also finishes a create that was
    killed before the provider's id reached the state. Nothing tagged left = deleted.

    DNS records (found by their claims in the zones the state names, with ``dns``'s
    credentials) go first; the VM stays until they are gone, so no name is left
    pointing at an address the cloud may hand to someone else. Before them, ``clients``
    removes the tunnel clients registered for the host (``connect --register``).
    """
    store.update(record.id, status=HostStatus.DELETING.value)
    try:
        if clients is not None:
            clients(record)
        placement = placement_of(record, dns)
        if placement is not None:
            with map_provider_errors():
                placement.purge(record.id)
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


def select(store: Store, provider: str = "", name: str = "") -> list[HostRecord]:
    """The hosts in the state that still exist, of ``provider`` and called ``name`` if given."""
    return [
        r
        for r in store.all()
        if (not provider or r.provider == provider) and (not name or r.name == name)
    ]


@dataclass(frozen=True)
class Outcome:
    """One host of a bulk delete: its row afterwards, and the error if it was not deleted."""

    record: HostRecord
    error: InletsctlError | None = None


def delete_each(
    store: Store,
    records: Sequence[HostRecord],
    opener: Opener,
    dns: DnsAccess | None = None,
    clients: Callable[[HostRecord], None] | None = None,
) -> list[Outcome]:
    """Each host as :func:`delete` removes it, each in its own region from the state.

    One host that fails (a rejected token, an API outage) does not stop the rest; its
    row says ``failed`` unless the provider could not even be opened, and ``delete
    --id`` finishes it later.
    """
    opened: dict[tuple[str, str], Provider] = {}
    outcomes = []
    for record in records:
        key = (record.provider, record.region)
        try:
            if key not in opened:
                opened[key] = opener(*key)
            outcomes.append(Outcome(delete(store, opened[key], record, dns, clients)))
        except InletsctlError as exc:
            outcomes.append(Outcome(store.get(record.id), exc))
    return outcomes


@dataclass(frozen=True)
class Unasked:
    """A provider (in one region) whose ``list`` failed: its hosts were left as they were."""

    provider: str
    region: str
    error: InletsctlError
    records: list[HostRecord]


@dataclass(frozen=True)
class Pruned:
    gone: list[HostRecord]
    #: the provider still lists them
    kept: list[HostRecord]
    unasked: list[Unasked]


def prune(store: Store, opener: Opener, provider: str = "") -> Pruned:
    """Mark ``gone`` the hosts in the state that their provider no longer lists.

    Nothing at a provider is changed: its ``list`` (by our tag) is the only call. A row
    is still there when a listed host carries its id as our tag, or has its provider
    id. A provider that cannot be asked keeps all its rows as they were: not knowing
    is not gone.
    """
    groups: dict[tuple[str, str], list[HostRecord]] = {}
    for record in select(store, provider):
        groups.setdefault((record.provider, record.region), []).append(record)
    result = Pruned([], [], [])
    for (name, region), records in groups.items():
        try:
            prov = opener(name, region)
            with map_provider_errors():
                listed = [h for h in prov.list() if h.status is not HostStatus.DELETED]
        except InletsctlError as exc:
            result.unasked.append(Unasked(name, region, exc, records))
            continue
        ours = {h.additional.get("host_id", "") for h in listed} - {""}
        ids = {h.id for h in listed}
        for record in records:
            if record.id in ours or (record.provider_id and record.provider_id in ids):
                result.kept.append(record)
            else:
                result.gone.append(store.update(record.id, status=GONE))
    return result
