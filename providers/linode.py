"""Linode (Akamai): an instance booted from our user-data, behind a Cloud Firewall of its own.

The firewall is made first (inbound policy DROP, our ports accepted) and named by
``firewall_id`` in the instance's create call, so the instance is never reachable on
a port we did not mean to open. Linode's tags are plain names, so both carry
``inletsctl`` and ``inletsctl-host-<host id>`` from the call that makes them: ``list``
selects on the first, ``purge`` finds everything by the second, the instances before
the firewalls. An instance without ``inletsctl`` is the user's: ``status`` does not
see it, ``delete`` refuses it unless forced. The API filters a list by tag
(``X-Filter``); every result is checked for the tag again here, because a filter that
is dropped on the way (a proxy, a typo) would otherwise return the whole account.

The user-data goes to the Metadata service, base64-encoded (``metadata.user_data``),
which only regions with the ``Metadata`` capability offer; ``create`` checks region
and type against the API's lists before anything is made. A root password is
required with an image: a random one is sent and kept nowhere (the firewall leaves
port 22 closed anyway).

linode_api4 is imported lazily. It retries 408, 429 and 502 answers itself, POSTs
too (linearly, ``retry_interval`` seconds apart, or what ``Retry-After`` says); after
a lost answer the retry meets Linode's "label must be unique" and the kit removes the
first instance by its tag. The endpoint comes from ``--endpoint-url`` or, as
linodego and Linode's Terraform provider read them, ``LINODE_URL`` and
``LINODE_API_VERSION``.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlsplit

from providers.cloudapi import (
    no_usable_answer,
    not_api_json,
    require_known,
    token_rejected,
    token_source,
)
from providers.credentials import resolve_token
from providers.errors import CapacityError, HostNotFound, ProviderAPIError
from providers.kit import (
    host_ids,
    host_tag,
    is_ours,
    name_tag_map,
    name_tags,
    remove_leftovers,
    require_ours,
)
from providers.models import (
    TAG_KEY,
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
)
from providers.ports import inbound_rules, port_spec

__all__ = ["LinodeProvider"]

NAME = "linode"
#: linodego and Linode's Terraform provider read LINODE_TOKEN, linode-cli LINODE_CLI_TOKEN
TOKEN_ENV = ("LINODE_TOKEN", "LINODE_CLI_TOKEN")
ENDPOINT_ENV = "LINODE_URL"
VERSION_ENV = "LINODE_API_VERSION"
DEFAULT_HOST = "https://api.linode.com"
DEFAULT_VERSION = "v4"
#: the region capability that serves user-data to cloud-init
METADATA = "Metadata"
#: reasons of a 400 that another region (or a raised account limit) could fix:
#: "Account Limit reached. Please open a support ticket.", a region out of capacity
_CAPACITY = re.compile(r"account limit|capacity|not available in (?:this|the) region", re.I)
#: Linode's private IPv4 range; a public address is any other
_PRIVATE_V4 = "192.168."
#: instance states as the API reports them, normalised
_STATUS = {
    "provisioning": HostStatus.CREATING,
    "booting": HostStatus.CREATING,
    "rebooting": HostStatus.CREATING,
    "rebuilding": HostStatus.CREATING,
    "cloning": HostStatus.CREATING,
    "restoring": HostStatus.CREATING,
    "migrating": HostStatus.CREATING,
    "resizing": HostStatus.CREATING,
    "running": HostStatus.ACTIVE,
    "shutting_down": HostStatus.FAILED,
    "offline": HostStatus.FAILED,
    "stopped": HostStatus.FAILED,
    "billing_suspension": HostStatus.FAILED,
    "deleting": HostStatus.DELETING,
}


class _Missing(ProviderAPIError):
    """The API's 404; callers turn it into a HostNotFound naming what is missing."""


def endpoint_url(config: ProviderConfig, environ: Mapping[str, str] | None = None) -> str:
    """The API's base URL: ``--endpoint-url`` as given, else ``LINODE_URL`` as linodego
    reads it (scheme and host; ``LINODE_API_VERSION``, default v4, is appended unless
    the URL already ends in a version such as ``/v4beta``)."""
    if config.endpoint_url:
        return config.endpoint_url.rstrip("/")
    env = os.environ if environ is None else environ
    base = env.get(ENDPOINT_ENV, "").strip().rstrip("/") or DEFAULT_HOST
    if re.search(r"/v[A-Za-z0-9]+$", urlsplit(base).path):
        return base
    return f"{base}/{env.get(VERSION_ENV, '').strip() or DEFAULT_VERSION}"


class LinodeProvider:
    """Instance + Cloud Firewall per host; found again by tag."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="us-ord",
        default_plan="g6-nanode-1",
        default_image="linode/debian12",
        # "Unencoded data must not exceed 65535 bytes, or about 16kb encoded", says the
        # API reference; the stricter reading, so what passes here passes there.
        user_data_limit=16 * 1024,
        user_data_encoding="base64",
    )

    def __init__(self, config: ProviderConfig, *, retry_interval: float = 1.0) -> None:
        """``retry_interval``: seconds between the SDK's retries of a 408, 429 or 502."""
        from linode_api4 import LinodeClient

        # The SDK's retries are urllib3's, which warns at each one ("Retrying
        # (LinearRetry(...)) after connection broken by ..."): a paragraph above the
        # one-line error. `-v` (DEBUG) still shows them.
        pool_log = logging.getLogger("urllib3.connectionpool")
        if pool_log.getEffectiveLevel() > logging.DEBUG:
            pool_log.setLevel(logging.ERROR)
        token = resolve_token(NAME, config, TOKEN_ENV)
        self._token_source = token_source(config, TOKEN_ENV)
        self._endpoint = endpoint_url(config)
        self._client: Any = LinodeClient(
            token,
            base_url=self._endpoint,
            user_agent="inletsctl",
            retry_rate_limit_interval=retry_interval,
        )

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        regions = self.known_regions()
        require_known(NAME, f"region with {METADATA} (cloud-init)", spec.region, regions)
        with self._errors():
            types = [t.id for t in self._client.linode.types()]
            require_known(NAME, "type", spec.plan, types)
        tags = name_tags(spec.host_id)
        firewall = self._create_firewall(spec, tags)
        with self._errors():
            instance = self._client.linode.instance_create(
                spec.plan,
                spec.region,
                image=spec.image,
                label=spec.name,
                tags=tags,
                firewall=firewall.id,
                root_pass=secrets.token_urlsafe(32),
                metadata=self._client.linode.build_instance_metadata(user_data=spec.user_data),
            )
            host = self._to_host(instance)
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
        instance = self._get(host_id)
        with self._errors():
            if not is_ours(name_tag_map(instance.tags or [])):
                raise HostNotFound(f"{NAME}: no linode tagged {TAG_KEY!r} with id {host_id}")
            return self._to_host(instance)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        instance = self._get(host_id) if host_id is not None else self._find_by_ip(ip or "")
        tags = name_tag_map(instance.tags or [])
        require_ours(NAME, f"linode {instance.id}", tags, force)
        ours = host_ids(tags) if is_ours(tags) else []
        for our_id in ours:  # the instance, then its firewall, found by the host tag
            self.purge(our_id)
        if not ours:  # forced, or ours without a host tag: the instance alone
            self._delete(instance)

    def purge(self, host_id: str) -> list[str]:
        from linode_api4 import Instance

        tag = host_tag(host_id)
        with self._errors():
            instances = [
                i for i in self._client.linode.instances(Instance.tags == tag) if tag in i.tags
            ]
        for instance in instances:
            self._delete(instance)
        with self._errors():
            firewalls = [f for f in self._client.networking.firewalls() if tag in (f.tags or [])]
        leftovers = [(f"firewall {f.id}", partial(self._delete, f)) for f in firewalls]
        return [f"linode {i.id}" for i in instances] + remove_leftovers(NAME, "linodes", leftovers)

    def list(self) -> list[Host]:
        return [self._to_host(i) for i in self._ours()]

    def known_regions(self) -> builtins.list[str]:
        """The regions whose Metadata service hands cloud-init our user-data (in any
        other the VM would boot without its server), so ``create --region a,b`` refuses
        a typo or such a region before the first create."""
        with self._errors():
            return [r.id for r in self._client.regions() if METADATA in (r.capabilities or [])]

    # -- helpers -----------------------------------------------------------
    def _create_firewall(self, spec: HostSpec, tags: Sequence[str]) -> Any:
        inbound = [
            {
                "protocol": "TCP",
                "ports": port_spec(*ports),
                "addresses": _addresses_by_family(sources),
                "action": "ACCEPT",
                "description": "inletsctl tunnel",
            }
            for ports, sources in inbound_rules(spec.server)
        ]
        rules = {
            "inbound": inbound,
            "inbound_policy": "DROP",
            "outbound": [],
            "outbound_policy": "ACCEPT",
        }
        with self._errors():
            return self._client.networking.firewall_create(
                f"inletsctl-{spec.host_id}", rules, tags=tags
            )

    def _delete(self, resource: Any) -> None:
        """Delete an instance or a firewall; one already gone is what we wanted."""
        try:
            with self._errors():
                resource.delete()
        except _Missing:
            pass

    def _get(self, host_id: str) -> Any:
        from linode_api4 import Instance

        if not host_id.isdigit():
            raise HostNotFound(f"{NAME}: no linode with id {host_id!r}")
        try:
            with self._errors():
                return self._client.load(Instance, int(host_id))
        except _Missing as exc:
            raise HostNotFound(f"{NAME}: no linode with id {host_id}") from exc

    def _ours(self) -> Sequence[Any]:
        from linode_api4 import Instance

        with self._errors():
            return [
                i
                for i in self._client.linode.instances(Instance.tags == TAG_KEY)
                if is_ours(name_tag_map(i.tags or []))
            ]

    def _find_by_ip(self, ip: str) -> Any:
        for instance in self._ours():
            if ip and ip in _public_ips(instance):
                return instance
        raise HostNotFound(f"{NAME}: no linode tagged {TAG_KEY!r} has IP {ip!r}")

    def _to_host(self, instance: Any) -> Host:
        ipv4, ipv6 = _public_ips(instance)
        ours = host_ids(instance.tags or [])
        return Host(
            id=str(instance.id),
            name=instance.label or "",
            provider=NAME,
            region=instance.region.id if instance.region else "",
            status=_STATUS.get(instance.status or "", HostStatus.CREATING),
            ip=ipv4,
            ipv6=ipv6,
            additional={
                "provider_status": instance.status or "",
                **({"host_id": ours[0]} if ours else {}),
            },
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate linode_api4's exceptions (and requests', which are OSErrors) to ours."""
        from linode_api4 import ApiError, UnexpectedResponseError

        try:
            yield
        except ApiError as exc:
            if exc.status == 401:
                raise token_rejected(NAME, self._token_source) from exc
            if not isinstance(exc.json, dict) or "errors" not in exc.json:
                fix = f"{ENDPOINT_ENV} / --endpoint-url"
                raise not_api_json(NAME, self._endpoint, exc.status, fix) from exc
            reasons = "; ".join(_reasons(exc.json)) or f"HTTP {exc.status}"
            if exc.status == 404:
                raise _Missing(NAME, reasons, code="404") from exc
            if exc.status == 400 and _CAPACITY.search(reasons):
                raise CapacityError(
                    NAME,
                    f"{reasons} ({exc.status})",
                    hint="Try another region (--region us-ord,us-iad tries each in turn) or "
                    "type, or open a support ticket to raise the account's limit.",
                    code=str(exc.status),
                ) from exc
            raise ProviderAPIError(
                NAME,
                f"{reasons} ({exc.status})",
                hint=f"The API failed: retry shortly, and check {ENDPOINT_ENV} / --endpoint-url."
                if exc.status >= 500
                else None,
                code=str(exc.status),
            ) from exc
        except (UnexpectedResponseError, OSError) as exc:
            raise no_usable_answer(NAME, self._endpoint, exc, ENDPOINT_ENV) from exc


def _reasons(body: Mapping[str, Any]) -> list[str]:
    """The API's ``errors`` list as one phrase each: ``field: reason`` or ``reason``."""
    return [
        f"{e['field']}: {e.get('reason', '')}" if e.get("field") else str(e.get("reason", ""))
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]


def _addresses_by_family(sources: tuple[str, ...]) -> dict[str, list[str]]:
    """CIDRs as a Cloud Firewall rule takes them: IPv4 and IPv6 in lists of their own."""
    by_family: dict[str, list[str]] = {}
    for cidr in sources:
        by_family.setdefault("ipv6" if ":" in cidr else "ipv4", []).append(cidr)
    return by_family


def _public_ips(instance: Any) -> tuple[str, str]:
    """(first public IPv4, the SLAAC IPv6 without its /128), as a user would reach them."""
    ipv4 = next((a for a in instance.ipv4 or [] if not a.startswith(_PRIVATE_V4)), "")
    ipv6 = (instance.ipv6 or "").split("/")[0]
    return ipv4, ipv6
