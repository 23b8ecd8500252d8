"""Hetzner Cloud: a server booted from our user-data, behind a Firewall of its own.

The firewall is made first and named in the server's create call, so the server
is never reachable on a port we did not mean to open. Both carry the labels
``inletsctl=exit-server`` and ``inletsctl-host=<host id>`` from the call that makes
them: ``list`` selects on the first, ``purge`` finds everything by the second. A
firewall applied to a server cannot be deleted, so ``purge`` removes the servers,
waits on their actions, then removes the firewalls. A server without our label is
the user's: ``status`` does not see it, ``delete`` refuses it unless forced.

hcloud retries a request answered 502/504, a POST too; after a lost answer the
retry then meets the API's ``uniqueness_error`` (names are unique per project), and
the kit removes the first server by its label.

hcloud is imported lazily; the endpoint comes from ``--endpoint-url`` or
``HCLOUD_ENDPOINT`` (as the hcloud CLI reads it). The SDK already retries a
``rate_limit_exceeded`` answer with backoff; the interval is injectable.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, ClassVar

from providers.cloudapi import no_usable_answer, require_known, token_rejected, token_source
from providers.credentials import resolve_token
from providers.errors import (
    CapacityError,
    HostNotFound,
    ProviderAPIError,
    ProvisionTimeout,
)
from providers.kit import is_ours, remove_leftovers, require_ours
from providers.models import (
    HOST_ID_TAG,
    TAG_KEY,
    TAG_VALUE,
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
)
from providers.ports import inbound_rules, port_spec

if TYPE_CHECKING:
    from hcloud.firewalls import BoundFirewall
    from hcloud.servers import BoundServer

__all__ = ["HetznerProvider"]

NAME = "hetzner"
TOKEN_ENV = ("HCLOUD_TOKEN",)
ENDPOINT_ENV = "HCLOUD_ENDPOINT"
DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
OURS = f"{TAG_KEY}={TAG_VALUE}"
#: server states as the API reports them, normalised
_STATUS = {
    "initializing": HostStatus.CREATING,
    "starting": HostStatus.CREATING,
    "rebuilding": HostStatus.CREATING,
    "migrating": HostStatus.CREATING,
    "running": HostStatus.ACTIVE,
    "stopping": HostStatus.FAILED,
    "off": HostStatus.FAILED,
    "deleting": HostStatus.DELETING,
}
#: error codes that mean "not here, not now" (no room for the type at the location) or
#: "not on this project" (its server limit): another location may work
_CAPACITY_CODES = ("resource_unavailable", "placement_error", "resource_limit_exceeded")


class _Missing(ProviderAPIError):
    """The API's ``not_found``; callers turn it into a HostNotFound naming what is missing."""


class HetznerProvider:
    """Server + Firewall per host; found again by label."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="hel1",
        default_plan="cx23",
        default_image="debian-13",
        user_data_limit=32 * 1024,
    )

    def __init__(
        self,
        config: ProviderConfig,
        *,
        poll_interval: float = 1.0,
        poll_max_retries: int = 120,
        retry_interval: Callable[[int], float] | None = None,
    ) -> None:
        """``poll_interval`` / ``poll_max_retries`` bound the wait on an action (deleting a
        server); ``retry_interval(n)`` replaces the SDK's backoff before retry n of a 429."""
        from hcloud import Client

        token = resolve_token(NAME, config, TOKEN_ENV)
        self._token_source = token_source(config, TOKEN_ENV)
        endpoint = config.endpoint_url or os.environ.get(ENDPOINT_ENV, "") or DEFAULT_ENDPOINT
        self._endpoint = endpoint.rstrip("/")
        self._client = Client(
            token,
            api_endpoint=self._endpoint,
            application_name="inletsctl",
            poll_interval=poll_interval,
            poll_max_retries=poll_max_retries,
        )
        if retry_interval is not None:
            # hcloud has no public setting for its retry backoff; this is its attribute.
            self._client._client._retry_interval_func = lambda retries: retry_interval(retries)

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        from hcloud.images import Image
        from hcloud.locations import Location
        from hcloud.server_types import ServerType

        with self._errors():
            require_known(NAME, "location", spec.region, self.known_regions())
            types = self._client.server_types.get_all()
            require_known(NAME, "server type", spec.plan, (t.name or "" for t in types))
        labels = {TAG_KEY: TAG_VALUE, HOST_ID_TAG: spec.host_id}
        firewall = self._create_firewall(spec, labels)
        with self._errors():
            server = self._client.servers.create(
                name=spec.name,
                server_type=ServerType(name=spec.plan),
                image=Image(name=spec.image),
                location=Location(name=spec.region),
                user_data=spec.user_data,
                labels=labels,
                firewalls=[firewall],
            ).server
        host = self._to_host(server)
        return Host(
            id=host.id,
            name=host.name,
            provider=NAME,
            region=spec.region,
            status=host.status,
            ip=host.ip,
            ipv6=host.ipv6,
            additional={**host.additional, "firewall_id": str(firewall.id)},
        )

    def status(self, host_id: str) -> Host:
        server = self._get(host_id)
        if not is_ours(server.labels or {}):
            raise HostNotFound(f"{NAME}: no server labelled {OURS!r} with id {host_id}")
        return self._to_host(server)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        server = self._get(host_id) if host_id is not None else self._find_by_ip(ip or "")
        labels = server.labels or {}
        require_ours(NAME, f"server {server.id}", labels, force)
        host_tag = labels.get(HOST_ID_TAG, "") if is_ours(labels) else ""
        if host_tag:
            self.purge(host_tag)
        else:
            self._delete_server(server)

    def purge(self, host_id: str) -> list[str]:
        selector = f"{HOST_ID_TAG}={host_id}"
        with self._errors():
            servers = self._client.servers.get_all(label_selector=selector)
        for server in servers:
            self._delete_server(server)
        with self._errors():
            firewalls = self._client.firewalls.get_all(label_selector=selector)
        leftovers = [(f"firewall {f.id}", partial(self._delete_firewall, f)) for f in firewalls]
        return [f"server {s.id}" for s in servers] + remove_leftovers(NAME, "servers", leftovers)

    def list(self) -> list[Host]:
        with self._errors():
            servers = self._client.servers.get_all(label_selector=OURS)
        return [self._to_host(s) for s in servers]

    def known_regions(self) -> builtins.list[str]:
        """The location names, so ``create --region a,b`` refuses a typo before any create."""
        with self._errors():
            return [loc.name or "" for loc in self._client.locations.get_all()]

    # -- helpers -----------------------------------------------------------
    def _create_firewall(self, spec: HostSpec, labels: dict[str, str]) -> BoundFirewall:
        from hcloud.firewalls import FirewallRule

        rules = [
            FirewallRule(
                direction=FirewallRule.DIRECTION_IN,
                protocol=FirewallRule.PROTOCOL_TCP,
                source_ips=list(sources),
                port=port_spec(*ports),
                description="inletsctl tunnel",
            )
            for ports, sources in inbound_rules(spec.server)
        ]
        with self._errors():
            return self._client.firewalls.create(
                name=f"inletsctl-{spec.host_id}",
                rules=rules,
                labels=labels,  # type: ignore[arg-type]  # hcloud annotates it as str; it is a dict
            ).firewall

    def _delete_firewall(self, firewall: BoundFirewall) -> None:
        try:
            with self._errors():
                self._client.firewalls.delete(firewall)
        except _Missing:
            pass  # already gone: what we wanted

    def _delete_server(self, server: BoundServer) -> None:
        try:
            with self._errors():
                self._client.servers.delete(server).wait_until_finished()
        except _Missing:
            pass

    def _get(self, host_id: str) -> BoundServer:
        if not host_id.isdigit():
            raise HostNotFound(f"{NAME}: no server with id {host_id!r}")
        try:
            with self._errors():
                return self._client.servers.get_by_id(int(host_id))
        except _Missing as exc:
            raise HostNotFound(f"{NAME}: no server with id {host_id}") from exc

    def _find_by_ip(self, ip: str) -> BoundServer:
        with self._errors():
            servers = self._client.servers.get_all(label_selector=OURS)
        for server in servers:
            if ip and ip in _addresses(server):
                return server
        raise HostNotFound(f"{NAME}: no server labelled {OURS!r} has IP {ip!r}")

    def _to_host(self, server: BoundServer) -> Host:
        ipv4, ipv6 = _addresses(server)
        host_id = (server.labels or {}).get(HOST_ID_TAG, "")
        return Host(
            id=str(server.id),
            name=server.name or "",
            provider=NAME,
            region=(server.location.name or "") if server.location else "",
            status=_STATUS.get(server.status or "", HostStatus.CREATING),
            ip=ipv4,
            ipv6=ipv6,
            additional={
                "provider_status": server.status or "",
                **({"host_id": host_id} if host_id else {}),
            },
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate hcloud's exceptions (and requests', which are OSErrors) to ours."""
        from hcloud import APIException, HCloudException
        from hcloud.actions import ActionFailedException, ActionTimeoutException

        try:
            yield
        except APIException as exc:
            if exc.code in ("unauthorized", 401):
                raise token_rejected(NAME, self._token_source) from exc
            if exc.code == "not_found":
                raise _Missing(NAME, exc.message, code="not_found") from exc
            if exc.code in _CAPACITY_CODES:
                raise CapacityError(
                    NAME,
                    f"{exc.message} ({exc.code})",
                    hint="Try another location (--region fsn1,nbg1 tries each in turn) or "
                    "server type, or ask Hetzner to raise the project's limit.",
                    code=str(exc.code),
                ) from exc
            server_side = str(exc.code).isdigit() and int(exc.code) >= 500  # no API JSON came
            raise ProviderAPIError(
                NAME,
                f"{exc.message} ({exc.code})",
                hint=f"The API or a proxy before it failed: retry shortly, and check "
                f"{ENDPOINT_ENV} / --endpoint-url."
                if server_side
                else None,
                code=str(exc.code),
            ) from exc
        except ActionTimeoutException as exc:
            raise ProvisionTimeout(f"{NAME}: action {exc.action.command} did not finish") from exc
        except ActionFailedException as exc:
            raise ProviderAPIError(NAME, f"action {exc.action.command} failed: {exc}") from exc
        except (HCloudException, OSError) as exc:
            raise no_usable_answer(NAME, self._endpoint, exc, ENDPOINT_ENV) from exc


def _addresses(server: BoundServer) -> tuple[str, str]:
    """(IPv4, first address of the IPv6 /64), as a user would ssh or curl them."""
    net = server.public_net
    if net is None:
        return "", ""
    ipv4 = net.ipv4.ip if net.ipv4 and net.ipv4.ip else ""
    ipv6 = net.ipv6.ip.split("/")[0] + "1" if net.ipv6 and net.ipv6.ip else ""
    return ipv4, ipv6
