"""Scaleway: an Instance booted from our user-data, behind a security group of its own.

Four resources per host, each tagged ``inletsctl=exit-server`` and
``inletsctl-host=<host id>`` (Scaleway tags are plain strings) in the call that makes
it: a security group (inbound policy ``drop``, accept rules for our ports only), a
routed flexible IPv4, and the server, created stopped with the group and the IP named
in its create call, so it is never reachable on a port we did not mean to open. The
Instance API takes user-data as a separate key on the server: ``cloud-init`` is set
with a ``PATCH`` while the server is still stopped, then the ``poweron`` action boots it.

The root volume is local (``l_ssd``: the image is the label's ``instance_local``
variant), because ``terminate`` deletes a running server together with its local
volumes while an SBS root volume would be left behind. A flexible IP outlives its
server, so ``purge`` removes the servers (a stopped one is deleted and its local
volumes after it), waits until they are gone, then the IPs and the security groups
carrying our host id. A server without our tag is the user's: ``status`` does not see
it, ``delete`` refuses it unless forced.

Credentials follow the Scaleway SDK and CLI: ``SCW_SECRET_KEY`` (the only secret the
API takes, as ``X-Auth-Token``), ``SCW_DEFAULT_PROJECT_ID``, ``SCW_DEFAULT_ZONE`` and
``SCW_API_URL``, else the profile of the scw config file (``SCW_CONFIG_PATH``,
``SCW_PROFILE`` or ``--profile``). The SDK is imported lazily and does not retry.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from providers.cloudapi import no_usable_answer, require_known, token_rejected, token_source
from providers.credentials import resolve_token
from providers.errors import (
    CapacityError,
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
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
from providers.ports import inbound_rules

if TYPE_CHECKING:
    from scaleway_core.profile import Profile

__all__ = ["ScalewayProvider"]

NAME = "scaleway"
SECRET_ENV = "SCW_SECRET_KEY"
TOKEN_ENV = (SECRET_ENV,)
ACCESS_ENV = "SCW_ACCESS_KEY"
PROJECT_ENV = "SCW_DEFAULT_PROJECT_ID"
ZONE_ENV = "SCW_DEFAULT_ZONE"
ENDPOINT_ENV = "SCW_API_URL"
PROFILE_ENV = "SCW_PROFILE"
DEFAULT_ENDPOINT = "https://api.scaleway.com"
TCP = "TCP"
#: the user-data key cloud-init reads from the metadata API
USER_DATA_KEY = "cloud-init"
OURS = f"{TAG_KEY}={TAG_VALUE}"
#: server states as the API reports them, normalised
_STATUS = {
    "starting": HostStatus.CREATING,
    "running": HostStatus.ACTIVE,
    "stopped": HostStatus.FAILED,
    "stopped in place": HostStatus.FAILED,
    "stopping": HostStatus.FAILED,
    "locked": HostStatus.FAILED,
}
#: error types that mean "not here, not now": another zone or type may work
_CAPACITY_TYPES = ("out_of_stock", "quotas_exceeded")
#: states a server leaves by itself; purge waits them out before acting
_TRANSIENT = ("starting", "stopping")


class _Missing(ProviderAPIError):
    """The API's 404; callers turn it into a HostNotFound, or "already gone"."""


class ScalewayProvider:
    """Security group + flexible IP + Instance per host; found again by tag."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="fr-par-1",
        default_plan="STARDUST1-S",
        default_image="debian_bookworm",
        user_data_limit=64 * 1024,
    )

    def __init__(
        self,
        config: ProviderConfig,
        *,
        poll_interval: float = 2.0,
        poll_max_retries: int = 150,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``poll_interval`` / ``poll_max_retries`` bound the wait for a server to finish
        starting or to be gone after ``terminate``; ``sleep`` is injectable for tests."""
        from scaleway import Client
        from scaleway.instance.v1.custom_api import InstanceUtilsV1API

        # At DEBUG the SDK logs every request body, and the user-data carries the tunnel
        # token and the TLS key: `-v` must not print them.
        sdk_log = logging.getLogger("scaleway")
        sdk_log.setLevel(max(sdk_log.getEffectiveLevel(), logging.INFO))
        profile, origin = _profile(config)
        secret, self._secret_source = _secret(config, profile, origin)
        env = os.environ
        self._project = env.get(PROJECT_ENV, "").strip() or _field(profile, "default_project_id")
        self._zone = (
            config.region
            or env.get(ZONE_ENV, "").strip()
            or _field(profile, "default_zone")
            or self.facts.default_region
        )
        endpoint = config.endpoint_url or env.get(ENDPOINT_ENV, "").strip()
        self._endpoint = (endpoint or _field(profile, "api_url") or DEFAULT_ENDPOINT).rstrip("/")
        self._poll_interval = poll_interval
        self._poll_max_retries = poll_max_retries
        self._sleep = sleep
        #: zones this object created in, and the zone of each server it made: the CLI
        #: may create in ``--region`` while its config zone is the default one
        self._zones: set[str] = {self._zone}
        self._server_zones: dict[str, str] = {}
        self._client = Client(
            access_key=env.get(ACCESS_ENV, "").strip() or _field(profile, "access_key") or None,
            secret_key=secret,
            api_url=self._endpoint,
            default_zone=self._zone,
            default_project_id=self._project or None,
        )
        # The access key and the id formats are not needed to call the API (it takes the
        # secret key alone); the SDK's own check would refuse a key passed by flag alone.
        self._api = InstanceUtilsV1API(self._client, bypass_validation=True)

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        from scaleway.instance.v1 import IpType, ServerAction

        if not self._project:
            raise CredentialsMissing(
                f"{NAME}: no project id",
                hint=f"Set {PROJECT_ENV} (the project's settings in the console show its id), "
                "or default_project_id in the scw config profile.",
            )
        zone = spec.region
        require_known(NAME, "zone", zone, _zones())
        self._zones.add(zone)  # before anything exists, so an undo looks there
        image = self._image(spec, zone)
        tags = [OURS, f"{HOST_ID_TAG}={spec.host_id}"]
        group = self._create_security_group(spec, zone, tags)
        with self._errors():
            ip = self._api.create_ip(
                zone=zone, project=self._project, tags=tags, type_=IpType.ROUTED_IPV4
            ).ip
            server = self._api.create_server(
                zone=zone,
                commercial_type=spec.plan,
                name=spec.name,
                image=image,
                dynamic_ip_required=False,
                routed_ip_enabled=True,
                public_ips=[ip.id],
                project=self._project,
                tags=tags,
                security_group=group.id,
            ).server
            self._server_zones[server.id] = zone
            self._api.set_server_user_data(
                server_id=server.id,
                key=USER_DATA_KEY,
                content=spec.user_data.encode(),
                zone=zone,
            )
            self._api.server_action(server_id=server.id, zone=zone, action=ServerAction.POWERON)
        host = self._to_host(server)
        return dataclasses.replace(
            host,
            status=HostStatus.CREATING,
            ip=host.ip or ip.address,
            additional={**host.additional, "security_group_id": group.id, "ip_id": ip.id},
        )

    def status(self, host_id: str) -> Host:
        server = self._get(host_id)
        if not is_ours(_tag_map(server.tags)):
            raise HostNotFound(f"{NAME}: no server tagged {OURS!r} with id {host_id}")
        return self._to_host(server)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        server = self._get(host_id) if host_id is not None else self._find_by_ip(ip or "")
        tags = _tag_map(server.tags)
        require_ours(NAME, f"server {server.id}", tags, force)
        host_tag = tags.get(HOST_ID_TAG, "") if is_ours(tags) else ""
        if host_tag:
            self.purge(host_tag)
        else:
            self._delete_server(server)

    def purge(self, host_id: str) -> list[str]:
        tag = f"{HOST_ID_TAG}={host_id}"
        removed: list[str] = []
        for zone in sorted(self._zones):
            removed += self._purge_zone(zone, tag)
        return removed

    def list(self) -> list[Host]:
        hosts: list[Host] = []
        for zone in sorted(self._zones):
            with self._errors():
                servers = self._api.list_servers_all(zone=zone, tags=[OURS])
            hosts += [self._to_host(s) for s in servers if OURS in s.tags]
        return hosts

    def known_regions(self) -> builtins.list[str]:
        """The zones, so ``create --region a,b`` refuses a typo before any create."""
        return _zones()

    # -- create's parts -------------------------------------------------------
    def _image(self, spec: HostSpec, zone: str) -> str:
        """The id of the label's local-volume image in ``zone`` that runs ``spec.plan``,
        as the Go SDK and the scw CLI resolve a label through the marketplace API."""
        from scaleway.marketplace.v2 import LocalImageType, MarketplaceV2API

        if _is_uuid(spec.image):
            return spec.image
        marketplace = MarketplaceV2API(self._client, bypass_validation=True)
        with self._errors():
            images = marketplace.list_local_images_all(
                image_label=spec.image, zone=zone, type_=LocalImageType.INSTANCE_LOCAL
            )
        if not images:
            raise InvalidSpec(
                f"{NAME}: no image {spec.image!r} with a local volume in {zone}",
                hint="Use a marketplace label such as debian_bookworm or ubuntu_noble "
                "(`scw marketplace image list`), or an image id.",
            )
        compatible = {plan: i.id for i in images for plan in i.compatible_commercial_types}
        require_known(NAME, f"commercial type for {spec.image}", spec.plan, compatible)
        return str(compatible[spec.plan])

    def _create_security_group(self, spec: HostSpec, zone: str, tags: Sequence[str]) -> Any:
        """Inbound drop by default; one accept rule per (port range, source) we open.

        Stateful, so the answers to the VM's own downloads come back in."""
        from scaleway.instance.v1 import (
            SecurityGroupPolicy,
            SecurityGroupRuleAction,
            SecurityGroupRuleDirection,
            SetSecurityGroupRulesRequestRule,
        )

        pairs = [(ports, s) for ports, sources in inbound_rules(spec.server) for s in sources]
        rules = [
            SetSecurityGroupRulesRequestRule(
                action=SecurityGroupRuleAction.ACCEPT,
                # The API spells protocols in upper case (its reference, and the Go SDK's
                # recorded traffic); the Python SDK's enum has "tcp".
                protocol=TCP,
                direction=SecurityGroupRuleDirection.INBOUND,
                ip_range=source,
                position=position,
                dest_port_from=first,
                dest_port_to=last if last != first else None,
            )
            for position, ((first, last), source) in enumerate(pairs, 1)
        ]
        with self._errors():
            group = self._api.create_security_group(
                zone=zone,
                project=self._project,
                name=f"inletsctl-{spec.host_id}",
                description="inletsctl exit server: the tunnel's ports only",
                stateful=True,
                tags=[*tags],
                inbound_default_policy=SecurityGroupPolicy.DROP,
                outbound_default_policy=SecurityGroupPolicy.ACCEPT,
            ).security_group
            self._api.set_security_group_rules(security_group_id=group.id, zone=zone, rules=rules)
        return group

    # -- purge's parts --------------------------------------------------------
    def _purge_zone(self, zone: str, tag: str) -> Sequence[str]:
        with self._errors():
            servers = [
                s for s in self._api.list_servers_all(zone=zone, tags=[tag]) if tag in s.tags
            ]
        for server in servers:
            self._delete_server(server)
        with self._errors():
            ips = [i for i in self._api.list_ips_all(zone=zone, tags=[tag]) if tag in i.tags]
            groups = self._api.list_security_groups_all(zone=zone, tags=[tag])
            groups = [g for g in groups if tag in g.tags]
        leftovers = [
            (f"ip {i.address}", functools.partial(self._api.delete_ip, ip=i.id, zone=zone))
            for i in ips
        ] + [
            (
                f"security group {g.id}",
                functools.partial(
                    self._api.delete_security_group, security_group_id=g.id, zone=zone
                ),
            )
            for g in groups
        ]
        removals = [(what, functools.partial(self._gone_is_fine, call)) for what, call in leftovers]
        return [f"server {s.id}" for s in servers] + remove_leftovers(NAME, "servers", removals)

    def _delete_server(self, server: Any) -> None:
        """Terminate a running server (its local volumes go with it); delete a stopped
        one, then its local volumes. Returns once the server is gone."""
        from scaleway.instance.v1 import ServerAction

        zone = server.zone
        current = self._wait(server.id, zone, lambda s: s is None or s.state not in _TRANSIENT)
        if current is None:
            return
        if ServerAction.TERMINATE in current.allowed_actions:
            self._gone_is_fine(
                lambda: self._api.server_action(
                    server_id=current.id, zone=zone, action=ServerAction.TERMINATE
                )
            )
            self._wait(current.id, zone, lambda s: s is None)
            return
        self._gone_is_fine(lambda: self._api.delete_server(server_id=current.id, zone=zone))
        for volume in current.volumes.values():
            if volume.volume_type == "l_ssd":
                self._gone_is_fine(
                    functools.partial(self._api.delete_volume, volume_id=volume.id, zone=zone)
                )

    def _wait(self, server_id: str, zone: str, done: Callable[[Any], bool]) -> Any:
        """The server (None once gone) as soon as ``done`` says so, polling at most
        ``poll_max_retries`` times."""
        for _ in range(self._poll_max_retries):
            current = self._read(server_id, zone)
            if done(current):
                return current
            self._sleep(self._poll_interval)
        raise ProvisionTimeout(f"{NAME}: server {server_id} did not settle in {zone}")

    def _read(self, server_id: str, zone: str) -> Any:
        try:
            with self._errors():
                return self._api.get_server(server_id=server_id, zone=zone).server
        except _Missing:
            return None

    def _gone_is_fine(self, call: Callable[[], object]) -> None:
        try:
            with self._errors():
                call()
        except _Missing:
            pass  # already gone: what we wanted

    # -- lookups ------------------------------------------------------------
    def _get(self, host_id: str) -> Any:
        if not _is_uuid(host_id):
            raise HostNotFound(f"{NAME}: no server with id {host_id!r}")
        zone = self._server_zones.get(host_id, self._zone)
        server = self._read(host_id, zone)
        if server is None:
            raise HostNotFound(f"{NAME}: no server with id {host_id} in {zone}")
        return server

    def _find_by_ip(self, ip: str) -> Any:
        for zone in sorted(self._zones):
            with self._errors():
                servers = self._api.list_servers_all(zone=zone, tags=[OURS])
            for server in servers:
                if ip and OURS in server.tags and ip in _addresses(server):
                    return server
        raise HostNotFound(f"{NAME}: no server tagged {OURS!r} has IP {ip!r}")

    def _to_host(self, server: Any) -> Host:
        ipv4, ipv6 = _addresses(server)
        host_id = _tag_map(server.tags).get(HOST_ID_TAG, "")
        state = str(server.state)
        return Host(
            id=server.id,
            name=server.name,
            provider=NAME,
            region=str(server.zone),
            status=_STATUS.get(state, HostStatus.CREATING),
            ip=ipv4,
            ipv6=ipv6,
            additional={
                "provider_status": state,
                **({"host_id": host_id} if host_id else {}),
            },
        )

    # -- the error boundary ---------------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate the SDK's exceptions (and requests', which are OSErrors) to ours."""
        from scaleway_core.api import ScalewayException

        try:
            yield
        except ScalewayException as exc:
            raise self._translate(exc) from exc
        except OSError as exc:
            raise no_usable_answer(NAME, self._endpoint, exc, ENDPOINT_ENV) from exc

    def _translate(self, exc: Any) -> ProviderAPIError:
        status = int(exc.status_code or 0)
        body = _json_body(exc.response)
        kind = str(body.get("type") or status)
        message = str(body.get("message") or exc.response.reason or "error")
        if body.get("fields"):
            message += f" {json.dumps(body['fields'], sort_keys=True)}"
        if status == 401:
            return token_rejected(NAME, self._secret_source)
        if status == 403:
            return ProviderAPIError(
                NAME,
                f"the API key from {self._secret_source} may not do this "
                f"in project {self._project or '(none set)'} (403 {kind})",
                hint=f"Give the key an IAM policy with InstancesFullAccess on the project "
                f"in {PROJECT_ENV}, or set {PROJECT_ENV} to a project it may use.",
                code=kind,
            )
        if status == 404:
            return _Missing(NAME, message, code=kind)
        if kind in _CAPACITY_TYPES:
            return CapacityError(
                NAME,
                f"{message} ({kind})",
                hint="Try another zone (--region fr-par-1,nl-ams-1 tries each in turn) or "
                "commercial type, or ask Scaleway to raise the project's quota.",
                code=kind,
            )
        hint = None
        if status == 429:
            hint = "The API's rate limit was reached: retry shortly."
        elif status >= 500:
            hint = (
                "The API or a proxy before it failed: retry shortly, and check "
                f"{ENDPOINT_ENV} / --endpoint-url."
            )
        return ProviderAPIError(NAME, f"{message} ({kind})", hint=hint, code=kind)


def _profile(config: ProviderConfig) -> tuple[Profile | None, str]:
    """The scw config file's profile, as the scw CLI picks it; (None, "") without a file."""
    from scaleway_core.profile import Profile
    from yaml import YAMLError

    path = Profile.get_default_config_file_path()
    name = config.profile or os.environ.get(PROFILE_ENV, "").strip() or "default"
    if not os.path.exists(path):
        if config.profile:
            raise CredentialsMissing(
                f"{NAME}: --profile {name} needs the scw config file, and {path} does not exist",
                hint="Run `scw init`, or point SCW_CONFIG_PATH at the file.",
            )
        return None, ""
    try:
        return Profile.from_config_file(path, name), f"the {name!r} profile of {path}"
    except (OSError, ValueError, YAMLError) as exc:
        raise CredentialsMissing(
            f"{NAME}: cannot use profile {name!r} of {path}: {exc}",
            hint=f"Fix the file (`scw init` writes it), or set {SECRET_ENV} and {PROJECT_ENV}.",
        ) from exc


def _secret(config: ProviderConfig, profile: Profile | None, origin: str) -> tuple[str, str]:
    """The secret key and where it came from: the flag, SCW_SECRET_KEY, the config
    file's profile, then INLETS_ACCESS_TOKEN."""
    from_file = _field(profile, "secret_key")
    if from_file and not config.access_token and not os.environ.get(SECRET_ENV, "").strip():
        return from_file, origin
    try:
        return resolve_token(NAME, config, TOKEN_ENV), token_source(config, TOKEN_ENV)
    except CredentialsMissing as exc:
        raise CredentialsMissing(
            f"{NAME}: no API secret key found",
            hint=f"{exc.hint} Or run `scw init`, whose config file is read as the scw CLI does.",
        ) from exc


def _field(profile: Profile | None, name: str) -> str:
    value = getattr(profile, name, None) if profile is not None else None
    return str(value).strip() if value else ""


def _zones() -> list[str]:
    from scaleway_core.bridge.zone import ALL_ZONES

    return list(ALL_ZONES)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _tag_map(tags: Iterable[str]) -> dict[str, str]:
    """``key=value`` tag strings as the map :func:`providers.kit.is_ours` reads."""
    return dict(tag.partition("=")[::2] for tag in tags)


def _addresses(server: Any) -> tuple[str, str]:
    """(IPv4, IPv6) among the server's public IPs."""
    ipv4 = next((i.address for i in server.public_ips if str(i.family) == "inet"), "")
    ipv6 = next((i.address for i in server.public_ips if str(i.family) == "inet6"), "")
    return ipv4, ipv6


def _json_body(response: Any) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
