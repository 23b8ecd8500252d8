"""kopf handlers: a LoadBalancer Service gets an exit server, a tunnel client and an IP.

The order of writes is what makes an interrupted operator harmless. For a Service,
the Tunnel (same name) is written first, with the host id the exit server will be
tagged with, and only then is the server created, through the same library path as
``inletsctl create`` (``hosts.create``: the kit undoes a failed create by that tag).
A Tunnel whose phase is not ``Ready`` therefore names the only thing an operator
killed at any step can have left, and the next run removes it by that id before it
makes a server again: one server per Service, never two. The Deployment, its Secret
and ``status.loadBalancer`` follow once the server runs. Any change to what the
Service asks for (ports, provider, region, plan, HTTP host) replaces the server the
same way; deleting the Service runs the delete handler first (kopf's finalizer),
which removes the server, then the client and the Tunnel. The Tunnel has the same
finalizer, so a Tunnel deleted by hand removes the server it names as well.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import kopf

from inletsctl import hosts, release
from inletsctl.errors import HostUnknown, InletsctlError, UsageError, map_provider_errors
from inletsctl.operator import resources as r
from inletsctl.operator.kube import Kube, KubeError
from inletsctl.providers_config import Access, open_provider, provider_class
from inletsctl.readiness import Wait
from inletsctl.store import HostRecord, Store
from providers.base import Provider
from providers.models import Host, TunnelMode

#: Seconds before kopf retries a handler whose cloud or API call failed.
RETRY_DELAY_S = 30.0


@dataclass(frozen=True)
class OperatorConfig:
    """The operator's flags: defaults for Services that do not say, and how to reach clouds."""

    state_dir: Path
    provider: str = ""
    region: str = ""
    plan: str = ""
    #: only Services annotated ``inletsctl.dev/manage: "true"``
    annotated_only: bool = False
    wait: Wait = Wait.ready
    timeout: float = hosts.DEFAULT_TIMEOUT_S
    poll: float = 2.0
    access: Access = field(default_factory=Access)
    release_url: str = ""
    client_image: str = r.CLIENT_IMAGE
    #: seconds before a handler whose cloud or API call failed runs again
    retry_delay: float = RETRY_DELAY_S


class Operator:
    """What the handlers share: the config, the host state, one provider per (name, region)."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self.store = Store(config.state_dir)
        self.kube: Kube | None = None
        self._providers: dict[tuple[str, str], Provider] = {}
        self._lock = threading.Lock()

    @property
    def api(self) -> Kube:
        if self.kube is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        return self.kube

    def provider(self, name: str, region: str) -> Provider:
        """One object per cloud and region: ``local`` reaps the servers it started."""
        with self._lock:
            key = (name, region)
            if key not in self._providers:
                self._providers[key] = open_provider(
                    name, replace(self.config.access, region=region), self.config.state_dir
                )
            return self._providers[key]

    # -- the handlers -----------------------------------------------------------------

    def login(self, **kwargs: Any) -> kopf.ConnectionInfo:
        """In a pod, its service account; elsewhere, the kubeconfig (``KUBECONFIG``)."""
        info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if info is None:
            raise kopf.LoginError(
                "no service account token and no kubeconfig: set KUBECONFIG or run in a pod"
            )
        self.kube = Kube(info)
        return info

    def reconcile(self, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        """Make the Service's exit server match what it asks for, then point everything at it."""
        service = _plain(body)
        meta = service["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        try:
            want = r.desired(service, self.config.provider, self.config.region, self.config.plan)
        except UsageError as exc:
            raise kopf.PermanentError(_line(exc)) from exc
        with _retried(self.config.retry_delay):
            current = self.api.get(r.tunnel_path(namespace, name))
            status = (current or {}).get("status") or {}
            secret = self.api.get(r.namespaced(namespace, "secrets", r.client_name(service)))
            if (
                current is not None
                and status.get("phase") == "Ready"
                and current.get("spec") == want.as_spec()
                and secret is not None
            ):
                self._point_at(service, want, _from_status(status, want), None, patch)
                return
            if current is not None:
                self._remove_host(status)
            else:
                self.api.create(r.tunnel_path(namespace), r.tunnel(service, want))
            record = self._create(service, want, logger)
            self._point_at(service, want, record, record.token, patch)
            self._set_status(  # Ready: the client already points at it
                namespace,
                name,
                phase="Ready",
                providerId=record.provider_id,
                ip=record.ip,
                controlPort=record.control_port,
                fingerprint=record.fingerprint,
            )
            logger.info(f"exit server {record.id} ({record.provider}) serves {record.ip}")

    def remove(self, body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        """The Service is going (or is no LoadBalancer now): its exit server first, then
        the client and the Tunnel, and the IP it no longer has."""
        service = _plain(body)
        meta = service["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        with _retried(self.config.retry_delay, give_up_on_usage=False):
            current = self.api.get(r.tunnel_path(namespace, name))
            if current is not None:
                status = current.get("status") or {}
                self._set_status(namespace, name, phase="Deleting")
                self._remove_host(status)
                logger.info(f"exit server {status.get('hostId') or '(none)'} removed")
            for plural, api in (("deployments", "apps/v1"), ("secrets", "v1")):
                self.api.delete(r.namespaced(namespace, plural, r.client_name(service), api))
            self.api.delete(r.tunnel_path(namespace, name))
        patch.status["loadBalancer"] = {"ingress": None}

    def forget(self, body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
        """A Tunnel is going (with its Service, or by hand): the host it names goes first,
        so deleting the record never leaves a server that nothing remembers."""
        status = dict(body.get("status") or {})
        with _retried(self.config.retry_delay, give_up_on_usage=False):
            self._remove_host(status)
        if status.get("hostId"):
            logger.info(f"exit server {status['hostId']} of a deleted Tunnel removed")

    # -- steps ------------------------------------------------------------------------

    def _create(
        self, service: Mapping[str, Any], want: r.Desired, logger: kopf.Logger
    ) -> HostRecord:
        """Record the new host id in the Tunnel, then create the host under it."""
        meta = service["metadata"]
        namespace, name = meta.get("namespace", "default"), meta["name"]
        # the region it lands in, also when the provider's default: the Tunnel records it,
        # and removal opens the provider there (EC2 finds its hosts per region)
        region = want.region or provider_class(want.provider).facts.default_region
        provider = self.provider(want.provider, region)
        mode = TunnelMode(want.mode)
        req = hosts.CreateRequest(
            provider=want.provider,
            mode=mode,
            name=f"inlets-{name}"[:40],
            region=region,
            plan=want.plan,
            ports=tuple((p, p) for p in want.ports) if mode is TunnelMode.TCP else (),
            upstream=want.client_upstream,
            release_url=self.config.release_url,
        )
        spec = hosts.build_spec(req, provider, hosts.new_host_id())
        self.api.patch(
            r.tunnel_path(namespace, name),
            {"spec": want.as_spec()},
        )
        self._set_status(
            namespace,
            name,
            phase="Creating",
            hostId=spec.host_id,
            provider=want.provider,
            region=spec.region,
            providerId=None,
            ip=None,
            controlPort=None,
            fingerprint=None,
        )
        waiting = hosts.Waiting(
            until=self.config.wait,
            timeout=self.config.timeout,
            backoff=hosts.constant(self.config.poll),
        )

        def progress(n: int, host: Host, tunnel: str) -> None:
            logger.debug(f"host {spec.host_id}: {host.status.value} {tunnel}".rstrip())

        return hosts.create(self.store, provider, req, spec, waiting, progress)

    def _point_at(
        self,
        service: Mapping[str, Any],
        want: r.Desired,
        record: HostRecord,
        token: str | None,
        patch: kopf.Patch,
    ) -> None:
        """The client follows the host (its Secret only when the token is new); then the IP."""
        namespace = service["metadata"].get("namespace", "default")
        if token is not None:
            self.api.apply(r.namespaced(namespace, "secrets"), r.client_secret(service, token))
        artifact = release.artifact(self.config.release_url or None)
        deployment = r.client_deployment(
            service, want, record, artifact.url, artifact.sha256, self.config.client_image
        )
        self.api.apply(r.namespaced(namespace, "deployments", api="apps/v1"), deployment)
        patch.status["loadBalancer"] = r.ingress(record.ip)

    def _remove_host(self, status: Mapping[str, Any]) -> None:
        """Remove everything tagged with the Tunnel's host id (none recorded: nothing made)."""
        host_id = str(status.get("hostId") or "")
        if not host_id:
            return
        provider = self.provider(str(status.get("provider")), str(status.get("region") or ""))
        try:
            record = self.store.get(host_id)
        except HostUnknown:
            with map_provider_errors():
                provider.purge(host_id)
            return
        hosts.delete(self.store, provider, record)

    def _set_status(self, namespace: str, name: str, **status: Any) -> None:
        self.api.patch(r.tunnel_path(namespace, name) + "/status", {"status": status})


def _from_status(status: Mapping[str, Any], want: r.Desired) -> HostRecord:
    """The host as its Tunnel records it: enough for the client, even with a new state dir."""
    return HostRecord(
        id=str(status["hostId"]),
        provider=str(status.get("provider", want.provider)),
        name="",
        status="ready",
        mode=want.mode,
        engine="tunnel-core",
        control_port=int(status.get("controlPort") or 8123),
        data_port=8000,
        fingerprint=str(status.get("fingerprint", "")),
        token="",
        provider_id=str(status.get("providerId", "")),
        region=str(status.get("region", "")),
        ip=str(status.get("ip", "")),
    )


def _plain(body: kopf.Body) -> dict[str, Any]:
    """kopf's read-only view of the object as the plain dict the builders take."""
    return dict(body)


def _line(exc: InletsctlError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


@contextmanager
def _retried(delay: float, give_up_on_usage: bool = True) -> Iterator[None]:
    """Cloud and API failures become kopf's retry after ``delay`` s, with our message.

    A usage error (a bad annotation, an unknown region) is not retried when making a
    server; when removing one it is (say, credentials missing until the Secret is
    fixed): a delete handler that gave up would let kopf drop the finalizer, and the
    exit server would outlive its Service.
    """
    try:
        yield
    except UsageError as exc:
        if give_up_on_usage:
            raise kopf.PermanentError(_line(exc)) from exc
        raise kopf.TemporaryError(_line(exc), delay=delay) from exc
    except InletsctlError as exc:
        raise kopf.TemporaryError(_line(exc), delay=delay) from exc
    except KubeError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=delay) from exc


def _is_load_balancer(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("type") == "LoadBalancer"


def _not_load_balancer(spec: kopf.Spec, **_: Any) -> bool:
    return not _is_load_balancer(spec)


def build(config: OperatorConfig) -> tuple[kopf.OperatorRegistry, kopf.OperatorSettings]:
    """The handlers bound to ``config``, in a registry of their own, and kopf's settings.

    Progress and the last-handled state live in our annotations, not ``status.kopf``:
    a Service's status has a fixed schema that would drop it.
    """
    op = Operator(config)
    registry = kopf.OperatorRegistry()
    only = {r.MANAGE: "true"} if config.annotated_only else None
    # `when`, not `field=`: on an update handler, `field` would narrow it to that field
    selected: dict[str, Any] = {"when": _is_load_balancer}
    if only:
        selected["annotations"] = only
    kopf.on.login(registry=registry)(op.login)
    for decorator, hid in ((kopf.on.create, "create"), (kopf.on.resume, "resume")):
        decorator("v1", "services", registry=registry, id=hid, **selected)(op.reconcile)
    kopf.on.update("v1", "services", registry=registry, id="update", **selected)(op.reconcile)
    kopf.on.delete("v1", "services", registry=registry, id="delete", **selected)(op.remove)
    kopf.on.delete(r.GROUP, r.VERSION, r.TUNNELS, registry=registry, id="forget")(op.forget)
    # a Service that stops being a LoadBalancer keeps nothing: its server goes as on delete
    retired: dict[str, Any] = {**selected, "when": _not_load_balancer, "field": "spec.type"}
    kopf.on.update("v1", "services", registry=registry, id="retire", **retired)(op.remove)

    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = r.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=r.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=r.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    return registry, settings
