"""Vultr: an instance booted from our user-data, in a firewall group of its own.

No maintained Python SDK speaks Vultr's API v2, so this module calls its documented
REST API (``https://api.vultr.com/v2``, the API key as a bearer token) through
``providers.cloudapi.JsonApi`` (requests, imported lazily), as the DNS providers do.

The firewall group and its rules are made first and the instance is created with
``firewall_group_id``, so it is never reachable on a port we did not mean to open.
An instance carries the tags ``inletsctl=exit-server`` and ``inletsctl-host=<host
id>`` from its create call: ``list`` filters on the first, ``purge`` on the second.
A firewall group has no tags, only a description, so ours is described with the
same two ``key=value`` words in the call that makes it, and ``purge`` finds it by
them. ``purge`` removes the instances before their group. An instance without our
tag is the user's: ``status`` does not see it, ``delete`` refuses it unless forced.

Only a 429 is retried (Vultr allows about 30 requests a second per address): the
request was refused, not done, so even a POST is safe to send again. Nothing else
is repeated; after a lost answer the kit removes what the call made by its tag.
The endpoint comes from ``--endpoint-url`` or ``VULTR_API_ENDPOINT`` (as Ansible's
``vultr.cloud`` collection reads it; vultr-cli has no such setting).
"""

from __future__ import annotations

import base64
import ipaddress
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from providers.cloudapi import JsonApi, Missing, require_known, token_source
from providers.credentials import resolve_token
from providers.errors import HostNotFound, InvalidSpec
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
    ServerSpec,
)
from providers.ports import inbound_rules, port_spec

__all__ = ["VultrProvider"]

NAME = "vultr"
TOKEN_ENV = ("VULTR_API_KEY",)
ENDPOINT_ENV = "VULTR_API_ENDPOINT"
DEFAULT_ENDPOINT = "https://api.vultr.com/v2"
OURS = f"{TAG_KEY}={TAG_VALUE}"
#: rules a firewall group may hold (the API's ``max_rule_count``)
MAX_RULES = 50
#: the largest page the API serves: the fewest round trips
PER_PAGE = 500
#: 429s waited out before the call fails
MAX_RETRIES = 5

JSON = dict[str, Any]
#: list types by name: inside the class below, ``list`` is the Provider method
Items = list[JSON]
Regions = list[str]


def _backoff(retry: int) -> float:
    """Seconds before retry ``retry`` (0-based) of a 429: 0.5, 1, 2, 4, 8."""
    return min(0.5 * 2.0**retry, 8.0)


class VultrProvider:
    """Instance + firewall group per host; found again by tag and description."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="lhr",
        default_plan="vc2-1c-1gb",
        default_image="debian-12-x64",
        user_data_limit=64 * 1024,
        user_data_encoding="base64",
    )

    def __init__(
        self,
        config: ProviderConfig,
        *,
        retry_interval: Callable[[int], float] = _backoff,
        max_retries: int = MAX_RETRIES,
    ) -> None:
        """``retry_interval(n)`` is the wait in seconds before retry n of a 429."""
        token = resolve_token(NAME, config, TOKEN_ENV)
        endpoint = config.endpoint_url or os.environ.get(ENDPOINT_ENV, "") or DEFAULT_ENDPOINT
        self._api = JsonApi(
            NAME,
            endpoint,
            ENDPOINT_ENV,
            {"Authorization": f"Bearer {token}"},
            token_source(config, TOKEN_ENV),
            _message,
            hints={429: "Vultr allows about 30 requests a second per address: retry in a minute."},
            not_json_fix=f"{ENDPOINT_ENV} / --endpoint-url",
            retry_interval=retry_interval,
            max_retries=max_retries,
        )

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        rules = _rules(spec.server)
        if len(rules) > MAX_RULES:
            raise InvalidSpec(
                f"{NAME}: the firewall would need {len(rules)} rules; a group holds {MAX_RULES}",
                hint="Pass fewer --allow-ips networks or --ports (each port range needs one "
                "rule per network).",
            )
        require_known(NAME, "region", spec.region, self.known_regions())
        plans = self._list("plans", "/plans", {"type": "all"})
        require_known(NAME, "plan", spec.plan, (p["id"] for p in plans))
        offered = (p["id"] for p in plans if spec.region in (p.get("locations") or []))
        require_known(NAME, f"plan in {spec.region}", spec.plan, offered)
        os_id = self._os_id(spec.image)
        group = self._api.call(
            "POST", "/firewalls", body={"description": _description(spec.host_id)}
        )
        group_id = str(group["firewall_group"]["id"])
        for rule in rules:
            self._api.call("POST", f"/firewalls/{group_id}/rules", body=rule)
        made = self._api.call(
            "POST",
            "/instances",
            body={
                "region": spec.region,
                "plan": spec.plan,
                "os_id": os_id,
                "label": spec.name,
                "hostname": spec.name,
                "tags": [OURS, f"{HOST_ID_TAG}={spec.host_id}"],
                "user_data": base64.b64encode(spec.user_data.encode()).decode(),
                "firewall_group_id": group_id,
                "enable_ipv6": True,
                "backups": "disabled",
                "activation_email": False,
            },
        )
        host = self._to_host(made["instance"])
        return replace(host, additional={**host.additional, "firewall_id": group_id})

    def status(self, host_id: str) -> Host:
        instance = self._get(host_id)
        if not is_ours(_tags(instance)):
            raise HostNotFound(f"{NAME}: no instance tagged {OURS!r} with id {host_id}")
        return self._to_host(instance)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        instance = self._get(host_id) if host_id is not None else self._find_by_ip(ip or "")
        tags = _tags(instance)
        require_ours(NAME, f"instance {instance['id']}", tags, force)
        host_tag = tags.get(HOST_ID_TAG, "") if is_ours(tags) else ""
        if host_tag:
            self.purge(host_tag)
        else:
            self._delete(f"/instances/{instance['id']}")

    def purge(self, host_id: str) -> list[str]:
        tag = f"{HOST_ID_TAG}={host_id}"
        instances = [
            i
            for i in self._list("instances", "/instances", {"tag": tag})
            if tag in (i.get("tags") or [])  # the filter, checked: nothing else is deleted
        ]
        for instance in instances:
            self._delete(f"/instances/{instance['id']}")
        groups = [
            g
            for g in self._list("firewall_groups", "/firewalls")
            if _described(str(g.get("description") or ""), host_id)
        ]
        leftovers = [
            (f"firewall group {g['id']}", partial(self._delete, f"/firewalls/{g['id']}"))
            for g in groups
        ]
        made = [f"instance {i['id']}" for i in instances]
        return made + remove_leftovers(NAME, "instances", leftovers)

    def list(self) -> list[Host]:
        instances = self._list("instances", "/instances", {"tag": OURS})
        return [self._to_host(i) for i in instances if is_ours(_tags(i))]

    def known_regions(self) -> Regions:
        """The region ids, so ``create --region a,b`` can refuse a typo before any create."""
        return [str(r["id"]) for r in self._list("regions", "/regions")]

    # -- helpers -----------------------------------------------------------
    def _os_id(self, image: str) -> int:
        """The API's ``os_id`` for ``--image``: an id as vultr-cli takes it, or a name's slug."""
        systems = self._list("os", "/os")
        by_id = {str(s["id"]): int(s["id"]) for s in systems}
        if image in by_id:
            return by_id[image]
        by_slug = {_slug(str(s["name"])): int(s["id"]) for s in systems}
        require_known(NAME, "image", image, by_slug)
        return by_slug[image]

    def _get(self, host_id: str) -> JSON:
        try:
            uuid.UUID(host_id)
        except ValueError:
            raise HostNotFound(f"{NAME}: no instance with id {host_id!r}") from None
        try:
            instance: JSON = self._api.call("GET", f"/instances/{host_id}")["instance"]
        except Missing as exc:
            raise HostNotFound(f"{NAME}: no instance with id {host_id}") from exc
        return instance

    def _find_by_ip(self, ip: str) -> JSON:
        for instance in self._list("instances", "/instances", {"tag": OURS}):
            if ip and is_ours(_tags(instance)) and ip in _addresses(instance):
                return instance
        raise HostNotFound(f"{NAME}: no instance tagged {OURS!r} has IP {ip!r}")

    def _delete(self, path: str) -> None:
        try:
            self._api.call("DELETE", path)
        except Missing:
            pass  # already gone: what we wanted

    def _to_host(self, instance: JSON) -> Host:
        ipv4, ipv6 = _addresses(instance)
        host_id = _tags(instance).get(HOST_ID_TAG, "")
        return Host(
            id=str(instance["id"]),
            name=str(instance.get("label") or ""),
            provider=NAME,
            region=str(instance.get("region") or ""),
            status=_status(instance),
            ip=ipv4,
            ipv6=ipv6,
            additional={
                "provider_status": str(instance.get("status") or ""),
                "power_status": str(instance.get("power_status") or ""),
                "server_status": str(instance.get("server_status") or ""),
                **({"host_id": host_id} if host_id else {}),
            },
        )

    def _list(self, key: str, path: str, params: Mapping[str, str] | None = None) -> Items:
        """Every item of a list, following the cursor in ``meta.links.next``."""
        items: Items = []
        cursor = ""
        while True:
            query = {**(params or {}), "per_page": str(PER_PAGE)}
            if cursor:
                query["cursor"] = cursor
            answer = self._api.call("GET", path, params=query)
            items += answer.get(key) or []
            cursor = str(((answer.get("meta") or {}).get("links") or {}).get("next") or "")
            if not cursor:
                return items


def _message(body: object) -> str:
    """The API's error body: ``{"error": "...", "status": 404}``."""
    message = body.get("error") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""


def _rules(server: ServerSpec) -> list[JSON]:
    """The firewall group's rules: one per port range and source network (IPv4 or IPv6)."""
    rules = []
    for (first, last), sources in inbound_rules(server):
        port = port_spec(first, last).replace("-", ":")  # the API spells a range 1024:65535
        for source in sources:
            net = ipaddress.ip_network(source, strict=False)
            rules.append(
                {
                    "ip_type": f"v{net.version}",
                    "protocol": "tcp",
                    "subnet": str(net.network_address),
                    "subnet_size": net.prefixlen,
                    "port": port,
                    "notes": "inletsctl tunnel",
                }
            )
    return rules


def _pairs(words: Iterable[str]) -> dict[str, str]:
    """``key=value`` words as a map; a bare word maps to "" (as the kit's rule expects)."""
    return {key: value for key, _, value in (w.partition("=") for w in words)}


def _tags(instance: JSON) -> dict[str, str]:
    return _pairs(instance.get("tags") or [])


def _description(host_id: str) -> str:
    """A firewall group's description, the only text of its own it has: our two tags."""
    return f"{OURS} {HOST_ID_TAG}={host_id}"


def _described(description: str, host_id: str) -> bool:
    words = _pairs(description.split())
    return is_ours(words) and words.get(HOST_ID_TAG) == host_id


def _slug(name: str) -> str:
    """``Debian 12 x64 (bookworm)`` -> ``debian-12-x64``, as ``--image`` takes it."""
    return "-".join(name.split(" (")[0].lower().split())


def _addresses(instance: JSON) -> tuple[str, str]:
    """(IPv4, IPv6); a pending instance's ``0.0.0.0`` is no address yet."""
    ipv4 = str(instance.get("main_ip") or "")
    return ("" if ipv4 == "0.0.0.0" else ipv4), str(instance.get("v6_main_ip") or "")


def _status(instance: JSON) -> HostStatus:
    """``active`` and powered on, with an address, is running; ``pending`` is booting."""
    state = instance.get("status")
    if state == "active":
        if instance.get("power_status") != "running":
            return HostStatus.FAILED
        return HostStatus.ACTIVE if _addresses(instance)[0] else HostStatus.CREATING
    if state == "suspended":
        return HostStatus.FAILED
    return HostStatus.CREATING  # pending, resizing
