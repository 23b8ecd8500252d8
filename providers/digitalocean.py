"""DigitalOcean: a droplet booted from our user-data, behind a Cloud Firewall.

The droplet carries two tags, ``inletsctl`` (so ``list`` finds every exit server)
and ``inletsctl-host-<host id>``, both set in the create call itself; the firewall
is attached by that second tag, so it follows the droplet without knowing its id,
and ``purge`` finds both the same way (a firewall has no tags of its own: its target
tag and its name ``inletsctl-<host id>`` are ours). The droplet goes before its
firewall, so a VM is never left running without one. A droplet without the
``inletsctl`` tag is the user's: ``status`` does not see it, ``delete`` refuses it
unless forced. python-digitalocean is imported lazily and reached through its own
``end_point`` setting (``DIGITALOCEAN_END_POINT``), so emulators and our test fake
see the SDK's real HTTP traffic.

The SDK drops the status code of a failed call, so a response hook on its session
remembers the last answer (status and ``ratelimit-*`` / ``retry-after`` headers);
POSTs bypass that session, and for them the documented error message tells a 401
or a 429 apart.
"""

from __future__ import annotations

import builtins
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from providers.cloudapi import (
    no_usable_answer,
    not_api_json,
    require_known,
    token_rejected,
    token_source,
)
from providers.credentials import resolve_token
from providers.errors import CapacityError, HostNotFound, ProviderAPIError
from providers.kit import host_ids, host_tag, is_ours, name_tag_map, name_tags, require_ours
from providers.models import (
    TAG_KEY,
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
)
from providers.ports import inbound_rules, port_spec

__all__ = ["DigitalOceanProvider"]

NAME = "digitalocean"
TOKEN_ENV = ("DIGITALOCEAN_ACCESS_TOKEN",)
ENDPOINT_ENV = "DIGITALOCEAN_END_POINT"
DEFAULT_ENDPOINT = "https://api.digitalocean.com/v2/"
ANYWHERE = ["0.0.0.0/0", "::/0"]
#: droplet states as the API reports them, normalised
_STATUS = {
    "new": HostStatus.CREATING,
    "active": HostStatus.ACTIVE,
    "off": HostStatus.FAILED,
    "archive": HostStatus.DELETED,
}
#: documented error messages, for calls whose status code the SDK hides
_MESSAGE_STATUS = {"Unable to authenticate you": 401, "API Rate limit exceeded": 429}
#: the 422 messages that mean "not here, not now" or "not on this account": a region
#: that stopped taking droplets, a size sold out there, the account's droplet limit
_CAPACITY_MESSAGES = (
    "region is not available",
    "size is not available in this region",
    "will exceed your droplet limit",
)
_CAPACITY_HINT = (
    "Try another region (--region lon1,fra1 tries each in turn), or ask DigitalOcean "
    "for a higher droplet limit."
)

T = TypeVar("T")


class _LastResponse:
    """A requests response hook: status and headers of the SDK's last answer."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.status = 0
        self.headers: Mapping[str, str] = {}

    def __call__(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        self.status = int(response.status_code)
        self.headers = response.headers
        return response


class DigitalOceanProvider:
    """Droplet + Cloud Firewall per host; found again by tag."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="lon1",
        default_plan="s-1vcpu-512mb-10gb",
        default_image="debian-13-x64",
        user_data_limit=64 * 1024,
    )

    def __init__(
        self,
        config: ProviderConfig,
        *,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``max_retries`` 429s are waited out, each for what the API asks (``retry-after``
        or ``ratelimit-reset``) or else ``backoff * 2**n`` seconds, never over ``max_wait``."""
        import digitalocean

        self._sdk: Any = digitalocean
        token = resolve_token(NAME, config, TOKEN_ENV)
        self._token_source = token_source(config, TOKEN_ENV)
        endpoint = config.endpoint_url or os.environ.get(ENDPOINT_ENV, "") or DEFAULT_ENDPOINT
        self._endpoint = endpoint.rstrip("/") + "/"
        self._max_retries = max_retries
        self._backoff = backoff
        self._max_wait = max_wait
        self._sleep = sleep
        self._clock = clock
        self._last = _LastResponse()
        self._manager: Any = digitalocean.Manager(token=token, end_point=self._endpoint)
        self._manager._session.hooks["response"].append(self._last)
        self._kw: dict[str, Any] = {
            "token": token,
            "end_point": self._endpoint,
            "_session": self._manager._session,
        }

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        sdk = self._sdk
        regions = {r.slug: r for r in self._call(self._manager.get_all_regions)}
        require_known(NAME, "region", spec.region, regions)
        if not regions[spec.region].available:  # a known region, closed to new droplets
            raise CapacityError(
                NAME, f"region {spec.region} takes no new droplets now", _CAPACITY_HINT
            )
        sizes = self._call(self._manager.get_all_sizes)
        require_known(NAME, "size", spec.plan, (s.slug for s in sizes if s.available))
        require_known(NAME, f"size in {spec.region}", spec.plan, regions[spec.region].sizes)
        tag = host_tag(spec.host_id)
        droplet = sdk.Droplet(
            name=spec.name,
            region=spec.region,
            size_slug=spec.plan,
            image=spec.image,
            user_data=spec.user_data,
            tags=name_tags(spec.host_id),
            ipv6=True,
            **self._kw,
        )
        self._call(droplet.create)
        firewall = self._create_firewall(spec, tag)
        return Host(
            id=str(droplet.id),
            name=spec.name,
            provider=NAME,
            region=spec.region,
            status=HostStatus.CREATING,
            additional={"host_id": spec.host_id, "firewall_id": str(firewall.id)},
        )

    def status(self, host_id: str) -> Host:
        droplet = self._load(host_id)
        if not is_ours(name_tag_map(droplet.tags or [])):
            raise HostNotFound(f"{NAME}: no droplet tagged {TAG_KEY!r} with id {host_id}")
        return self._to_host(droplet)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        if host_id is None:
            host_id = self._find_by_ip(ip or "")
        droplet = self._load(host_id)
        require_ours(NAME, f"droplet {host_id}", name_tag_map(droplet.tags or []), force)
        ours = host_ids(droplet.tags or [])
        for our_id in ours:  # the droplet, then its firewall, found by the host tag
            self.purge(our_id)
        if not ours:  # forced, or ours without a host tag: the droplet alone
            self._destroy(droplet)

    def purge(self, host_id: str) -> list[str]:
        tag = host_tag(host_id)
        removed = []
        droplets = self._call(lambda: self._manager.get_all_droplets(tag_name=tag))
        for droplet in droplets:
            # objects the SDK lists keep its default endpoint; act through our own
            self._destroy(self._sdk.Droplet(id=droplet.id, **self._kw))
            removed.append(f"droplet {droplet.id}")
        for firewall in self._call(self._manager.get_all_firewalls):
            if tag in (firewall.tags or []) or firewall.name == f"inletsctl-{host_id}":
                self._destroy(self._sdk.Firewall(id=firewall.id, **self._kw))
                removed.append(f"firewall {firewall.id}")
        return removed

    def list(self) -> list[Host]:
        droplets = self._call(lambda: self._manager.get_all_droplets(tag_name=TAG_KEY))
        return [self._to_host(d) for d in droplets]

    def known_regions(self) -> builtins.list[str]:
        """Every region slug, taking droplets now or not (a typo is told apart from a full one)."""
        return [r.slug for r in self._call(self._manager.get_all_regions)]

    # -- helpers -----------------------------------------------------------
    def _destroy(self, resource: Any) -> None:
        """Destroy; one already gone (a retried purge) is what we wanted."""
        try:
            self._call(resource.destroy)
        except _Missing:
            pass

    def _create_firewall(self, spec: HostSpec, tag: str) -> Any:
        sdk = self._sdk
        inbound = [
            sdk.InboundRule(
                protocol="tcp", ports=port_spec(*p), sources=sdk.Sources(addresses=list(sources))
            )
            for p, sources in inbound_rules(spec.server)
        ]
        outbound = [
            # "0" is every port (ICMP has none), as the API reference spells it
            sdk.OutboundRule(
                protocol=proto,
                ports="0",
                destinations=sdk.Destinations(addresses=ANYWHERE),
            )
            for proto in ("tcp", "udp", "icmp")
        ]
        firewall = sdk.Firewall(
            name=f"inletsctl-{spec.host_id}",
            tags=[tag],
            droplet_ids=[],
            inbound_rules=inbound,
            outbound_rules=outbound,
            **self._kw,
        )
        with warnings.catch_warnings():
            # The SDK's own jsonpickle call warns about a future default; not ours to fix.
            warnings.filterwarnings("ignore", "keys will default", DeprecationWarning)
            return self._call(firewall.create)

    def _load(self, host_id: str) -> Any:
        if not host_id.isdigit():
            raise HostNotFound(f"{NAME}: no droplet with id {host_id!r}")
        droplet = self._sdk.Droplet(id=int(host_id), **self._kw)
        try:
            return self._call(droplet.load)
        except _Missing as exc:
            raise HostNotFound(f"{NAME}: no droplet with id {host_id}") from exc

    def _find_by_ip(self, ip: str) -> str:
        for host in self.list():
            if ip and ip in (host.ip, host.ipv6):
                return host.id
        raise HostNotFound(f"{NAME}: no droplet tagged {TAG_KEY!r} has IP {ip!r}")

    def _to_host(self, droplet: Any) -> Host:
        def public(version: str) -> str:
            nets = (droplet.networks or {}).get(version) or []
            return next((n["ip_address"] for n in nets if n.get("type") == "public"), "")

        region = droplet.region
        ours = host_ids(droplet.tags or [])
        return Host(
            id=str(droplet.id),
            name=droplet.name,
            provider=NAME,
            region=region["slug"] if isinstance(region, dict) else str(region),
            status=_STATUS.get(droplet.status, HostStatus.CREATING),
            ip=public("v4"),
            ipv6=public("v6"),
            additional={
                "provider_status": str(droplet.status),
                **({"host_id": ours[0]} if ours else {}),
            },
        )

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one SDK call: wait out 429s, translate the SDK's errors to ours."""
        sdk = self._sdk
        attempt = 0
        while True:
            self._last.clear()
            try:
                return fn()
            except sdk.NotFoundError as exc:
                raise _Missing(f"{NAME}: not found") from exc
            except sdk.DataReadError as exc:
                status = self._status_of(str(exc))
                if status == 429 and attempt < self._max_retries:
                    self._sleep(self._retry_delay(attempt))
                    attempt += 1
                    continue
                if status == 401:
                    raise token_rejected(NAME, self._token_source) from exc
                if any(m in str(exc).lower() for m in _CAPACITY_MESSAGES):
                    raise CapacityError(
                        NAME, str(exc), _CAPACITY_HINT, code=str(status or "")
                    ) from exc
                raise ProviderAPIError(NAME, str(exc), code=str(status or "")) from exc
            except sdk.baseapi.JSONReadError as exc:  # an error page from a proxy, not the API
                fix = f"{ENDPOINT_ENV} / --endpoint-url"
                raise not_api_json(NAME, self._endpoint, self._last.status, fix) from exc
            except (sdk.Error, OSError) as exc:
                raise no_usable_answer(NAME, self._endpoint, exc, ENDPOINT_ENV) from exc

    def _status_of(self, message: str) -> int:
        if self._last.status >= 400:
            return self._last.status
        return next((s for m, s in _MESSAGE_STATUS.items() if message.startswith(m)), 0)

    def _retry_delay(self, attempt: int) -> float:
        headers = self._last.headers
        delay = self._backoff * 2.0**attempt
        try:
            if "retry-after" in headers:
                delay = float(headers["retry-after"])
            elif self._last.status == 429 and "ratelimit-reset" in headers:
                delay = float(headers["ratelimit-reset"]) - self._clock()
        except ValueError:
            pass
        return min(max(delay, 0.0), self._max_wait)


class _Missing(ProviderAPIError):
    """A 404 from the SDK; callers turn it into a HostNotFound naming what is missing."""

    def __init__(self, message: str) -> None:
        super().__init__(NAME, message, code="404")
