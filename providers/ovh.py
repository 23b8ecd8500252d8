"""OVHcloud Public Cloud: an instance booted from our user-data, firewalled by itself.

The OVHcloud API (``/cloud/project/{serviceName}/instance``) has neither tags nor
metadata on an instance, and no firewall or security group for its public network
(OVHcloud's own guides say to filter with a firewall on the instance). So:

* the firewall is the user-data's nftables ruleset (``facts.host_firewall``), rendered
  from the same port list as every cloud firewall and loaded before the tunnel
  starts; there is no firewall resource to create or delete;
* the instance's name is the only mark the API keeps, and it is set in the create
  call: ``<name>.inletsctl-host-<host id>``. ``list`` and ``delete --ip`` see only
  instances so named, ``purge`` deletes only those carrying that exact, random host
  id, so a VM of the user's is touched only if it was named after one of our ids.

Credentials are the ovh SDK's own: ``OVH_ENDPOINT``, ``OVH_APPLICATION_KEY``,
``OVH_APPLICATION_SECRET`` and ``OVH_CONSUMER_KEY``, else the ``ovh.conf`` files it
reads (``./ovh.conf``, ``~/.ovh.conf``, ``/etc/ovh.conf``); ``--access-token-file``
may be such a file, or hold the consumer key as ``--access-token`` does. The project
is ``OVH_CLOUD_PROJECT_SERVICE`` (as Terraform's OVH provider reads it), or the
account's only one. ``OVH_ENDPOINT`` / ``--endpoint-url`` take an endpoint name
(``ovh-eu``) or a URL, as go-ovh and Terraform do. The SDK signs every request with
the application secret and the API's clock (``/auth/time``); it does not retry.
"""

from __future__ import annotations

import builtins
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from providers.cloudapi import no_usable_answer, require_known
from providers.credentials import INLETS_TOKEN_ENV, resolve_token
from providers.errors import (
    CapacityError,
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    ProviderAPIError,
)
from providers.kit import host_tag, require_ours
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

if TYPE_CHECKING:
    from ovh import Client

__all__ = ["OVHProvider"]

NAME = "ovh"
ENDPOINT_ENV = "OVH_ENDPOINT"
KEY_ENV = "OVH_APPLICATION_KEY"
SECRET_ENV = "OVH_APPLICATION_SECRET"
CONSUMER_ENV = "OVH_CONSUMER_KEY"
PROJECT_ENV = "OVH_CLOUD_PROJECT_SERVICE"
DEFAULT_ENDPOINT = "ovh-eu"
#: what joins the user's name and our host id in an instance's name
MARK = "." + host_tag("")
#: instance states (cloud.instance.InstanceStatusEnum), normalised; others are CREATING
_STATUS = {
    "ACTIVE": HostStatus.ACTIVE,
    "DELETING": HostStatus.DELETING,
    "DELETED": HostStatus.DELETED,
    "SOFT_DELETED": HostStatus.DELETED,
    **dict.fromkeys(
        ("ERROR", "SHUTOFF", "STOPPED", "SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED"),
        HostStatus.FAILED,
    ),
}
#: states of an instance whose delete the API has already taken
_GOING = ("DELETING", "DELETED", "SOFT_DELETED")
#: the API's words for "no room for this flavor here now" or "the project's quota is
#: used up" (OpenStack's own, passed through): another region may work
_CAPACITY = re.compile(
    r"quota|insufficient|not enough|no valid host|out of stock|capacity", re.IGNORECASE
)
#: path segments we put into URLs: ids and project names, never a "/" or ".."
_SEGMENT = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_INI_SECTION = re.compile(r"^\s*\[[^\]]+\]\s*$", re.MULTILINE)


class _Missing(ProviderAPIError):
    """The API's 404; callers turn it into a HostNotFound naming what is missing."""


@dataclass(frozen=True)
class _Credentials:
    endpoint: str
    application_key: str
    application_secret: str
    consumer_key: str
    #: where each came from, in the words a user would fix it with
    key_source: str
    secret_source: str
    consumer_source: str


class OVHProvider:
    """One instance per host, marked by its name, firewalled by its own nftables."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="GRA11",
        default_plan="d2-2",
        default_image="Debian 12",
        # OpenStack takes at most 65535 bytes of user-data base64-encoded; the OVHcloud
        # API takes it as text and encodes it: 49149 bytes encode to 65532.
        user_data_limit=49149,
        host_firewall=True,
    )

    def __init__(self, config: ProviderConfig) -> None:
        from ovh import Client
        from ovh.client import ENDPOINTS

        self._creds = _credentials(config)
        endpoint = self._creds.endpoint
        named = endpoint in ENDPOINTS
        if not named and not endpoint.startswith(("https://", "http://")):
            raise InvalidSpec(
                f"{NAME}: unknown API endpoint {endpoint!r}",
                hint=f"Set {ENDPOINT_ENV} or --endpoint-url to one of "
                f"{', '.join(ENDPOINTS)}, or to the API's URL.",
            )
        self._endpoint = ENDPOINTS[endpoint] if named else endpoint.rstrip("/")
        with self._errors():
            self._client: Client = Client(
                endpoint=endpoint if named else DEFAULT_ENDPOINT,
                application_key=self._creds.application_key,
                application_secret=self._creds.application_secret,
                consumer_key=self._creds.consumer_key,
            )
        if not named:
            # The SDK knows endpoints by name only; this is the attribute it calls.
            self._client._endpoint = self._endpoint
        self._project_name = os.environ.get(PROJECT_ENV, "").strip()

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        region = spec.region
        require_known(NAME, "region", region, self.known_regions())
        flavor = self._flavor(region, spec.plan)
        image = self._image(region, spec.image)
        with self._errors():
            detail = self._client.post(
                self._path("instance"),
                name=f"{spec.name}{MARK}{spec.host_id}",
                region=region,
                flavorId=flavor,
                imageId=image,
                userData=spec.user_data,
                monthlyBilling=False,
            )
        return self._to_host(detail)

    def status(self, host_id: str) -> Host:
        instance = self._get(host_id)
        if not _host_id(instance):
            raise HostNotFound(f"{NAME}: no instance named *{MARK}<id> with id {host_id}")
        return self._to_host(instance)

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        instance = self._get(host_id) if host_id is not None else self._find_by_ip(ip or "")
        ours = _host_id(instance)
        tags = {TAG_KEY: TAG_VALUE, HOST_ID_TAG: ours} if ours else {}
        require_ours(NAME, f"instance {instance['id']}", tags, force)
        if ours:
            self.purge(ours)
        else:
            self._delete(instance["id"])

    def purge(self, host_id: str) -> list[str]:
        mine = [
            i for i in self._instances() if _host_id(i) == host_id and i.get("status") not in _GOING
        ]
        for instance in mine:
            self._delete(instance["id"])
        return [f"instance {i['id']}" for i in mine]

    def list(self) -> list[Host]:
        return [self._to_host(i) for i in self._instances() if _host_id(i)]

    def known_regions(self) -> builtins.list[str]:
        """The project's regions, so ``create --region a,b`` refuses a typo before any create."""
        with self._errors():
            return [str(r) for r in self._client.get(self._path("region"))]

    # -- helpers -----------------------------------------------------------
    @property
    def _project(self) -> str:
        """The project named by OVH_CLOUD_PROJECT_SERVICE, else the account's only one."""
        if not self._project_name:
            with self._errors():
                projects = [str(p) for p in self._client.get("/cloud/project")]
            if len(projects) != 1:
                listed = f" (the account has {', '.join(projects)})" if projects else ""
                raise CredentialsMissing(
                    f"{NAME}: which Public Cloud project? {PROJECT_ENV} is not set{listed}",
                    hint=f"Set {PROJECT_ENV} to the project's id (its serviceName).",
                )
            self._project_name = projects[0]
        if not _SEGMENT.match(self._project_name):
            raise InvalidSpec(f"{NAME}: {PROJECT_ENV} is not a project id: {self._project_name!r}")
        return self._project_name

    def _path(self, *parts: str) -> str:
        return "/".join(("/cloud/project", self._project, *parts))

    def _flavor(self, region: str, plan: str) -> str:
        with self._errors():
            flavors = self._client.get(self._path("flavor"), region=region)
        linux = [f for f in flavors if f.get("osType") != "windows"]
        require_known(NAME, f"flavor in {region}", plan, (f["name"] for f in linux))
        flavor = next(f for f in linux if f["name"] == plan)
        if not flavor.get("available", True) or flavor.get("quota", 1) == 0:
            raise CapacityError(
                NAME,
                f"flavor {plan} is not available in {region} now",
                hint="Try another region (--region GRA11,SBG5 tries each in turn) or flavor.",
                code="unavailable",
            )
        return str(flavor["id"])

    def _image(self, region: str, image: str) -> str:
        with self._errors():
            images = self._client.get(self._path("image"), region=region, osType="linux")
        usable = [i for i in images if i.get("status", "active") == "active"]
        matches = [i for i in usable if image in (i["name"], i["id"])]
        if not matches:
            require_known(NAME, f"image in {region}", image, (i["name"] for i in usable))
        return str(max(matches, key=lambda i: str(i.get("creationDate", "")))["id"])

    def _instances(self) -> builtins.list[dict[str, Any]]:
        with self._errors():
            return builtins.list(self._client.get(self._path("instance")))

    def _get(self, host_id: str) -> dict[str, Any]:
        if not _SEGMENT.match(host_id):
            raise HostNotFound(f"{NAME}: no instance with id {host_id!r}")
        try:
            with self._errors():
                return dict(self._client.get(self._path("instance", host_id)))
        except _Missing as exc:
            raise HostNotFound(f"{NAME}: no instance with id {host_id}") from exc

    def _find_by_ip(self, ip: str) -> dict[str, Any]:
        for instance in self._instances():
            if ip and _host_id(instance) and ip in _addresses(instance):
                return instance
        raise HostNotFound(f"{NAME}: no instance named *{MARK}<id> has IP {ip!r}")

    def _delete(self, instance_id: str) -> None:
        try:
            with self._errors():
                self._client.delete(self._path("instance", instance_id))
        except _Missing:
            pass  # already gone: what we wanted

    def _to_host(self, instance: dict[str, Any]) -> Host:
        ipv4, ipv6 = _addresses(instance)
        host_id = _host_id(instance)
        name = str(instance.get("name", ""))
        status = str(instance.get("status", ""))
        return Host(
            id=str(instance["id"]),
            name=name.removesuffix(f"{MARK}{host_id}") if host_id else name,
            provider=NAME,
            region=str(instance.get("region", "")),
            status=_STATUS.get(status, HostStatus.CREATING),
            ip=ipv4,
            ipv6=ipv6,
            additional={"provider_status": status, **({"host_id": host_id} if host_id else {})},
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate the ovh SDK's exceptions (the API's answers and requests') to ours."""
        from ovh.exceptions import (
            APIError,
            BadParametersError,
            HTTPError,
            InvalidConfiguration,
            InvalidCredential,
            InvalidKey,
            InvalidResponse,
            NotCredential,
            NotGrantedCall,
            ResourceNotFoundError,
        )

        creds = self._creds
        try:
            yield
        except (HTTPError, InvalidResponse) as exc:
            raise no_usable_answer(NAME, self._endpoint, exc, ENDPOINT_ENV) from exc
        except InvalidConfiguration as exc:
            raise CredentialsMissing(
                f"{NAME}: {_message(exc)}",
                hint="Use the application key, secret and consumer key (OVH_CLIENT_ID / "
                "OVH_CLIENT_SECRET, OAuth2, is not supported).",
            ) from exc
        except ResourceNotFoundError as exc:
            raise _Missing(NAME, _message(exc), code="not_found") from exc
        except InvalidKey as exc:
            raise _rejected("application key", creds.key_source, "403 INVALID_KEY") from exc
        except (InvalidCredential, NotCredential) as exc:
            answer = f"403 {_code(exc) or 'INVALID_CREDENTIAL'}"
            raise _rejected("consumer key", creds.consumer_source, answer) from exc
        except NotGrantedCall as exc:
            raise ProviderAPIError(
                NAME,
                f"the consumer key from {creds.consumer_source} may not make this call "
                "(403 NOT_GRANTED_CALL)",
                hint="Create a consumer key with GET, POST and DELETE on /cloud/project/*.",
                code="unauthorized",
            ) from exc
        except BadParametersError as exc:
            if _code(exc) == "INVALID_SIGNATURE":
                raise ProviderAPIError(
                    NAME,
                    "the API rejected the request's signature (400 INVALID_SIGNATURE)",
                    hint=f"Set {creds.secret_source} to the secret of the application "
                    f"key from {creds.key_source}.",
                    code="unauthorized",
                ) from exc
            raise _answered(exc) from exc
        except APIError as exc:
            if exc.response is not None and exc.response.status_code == 401:
                answer = "401 Unauthorized"
                raise _rejected("consumer key", creds.consumer_source, answer) from exc
            raise _answered(exc) from exc


def _rejected(what: str, source: str, answer: str) -> ProviderAPIError:
    """The one-line error for a refused credential: which one, and where it was set."""
    return ProviderAPIError(
        NAME,
        f"the API rejected the {what} from {source} ({answer})",
        hint=f"Set {source} to a valid {what}.",
        code="unauthorized",
    )


def _answered(exc: Any) -> ProviderAPIError:
    """Any other answer of the API: capacity, quota, validation or its own failure."""
    status = exc.response.status_code if exc.response is not None else 0
    message = _message(exc)
    query = f" (OVH-Query-ID {exc.query_id})" if exc.query_id else ""
    if _CAPACITY.search(message):
        return CapacityError(
            NAME,
            f"{message}{query}",
            hint="Try another region (--region GRA11,SBG5 tries each in turn) or flavor, "
            "or raise the project's quota in the control panel.",
            code=str(status),
        )
    return ProviderAPIError(
        NAME,
        f"{message} ({status}){query}",
        hint=f"The API failed: retry shortly, and check {ENDPOINT_ENV} / --endpoint-url."
        if status >= 500
        else None,
        code=_code(exc) or str(status),
    )


def _message(exc: Any) -> str:
    """The API's message alone: the SDK's str() adds the query id on a second line."""
    first = exc.args[0] if exc.args else ""
    return " ".join(str(first or type(exc).__name__).split())


def _code(exc: Any) -> str:
    """The answer's ``errorCode``, where the API sends one."""
    try:
        return str(exc.response.json().get("errorCode") or "")
    except (AttributeError, ValueError):
        return ""


def _host_id(instance: dict[str, Any]) -> str:
    """Our host id from the instance's name; "" for an instance we did not name."""
    _, mark, host_id = str(instance.get("name", "")).rpartition(MARK)
    return host_id if mark and _SEGMENT.match(host_id) else ""


def _addresses(instance: dict[str, Any]) -> tuple[str, str]:
    """(public IPv4, public IPv6), as a user would ssh or curl them."""
    public = [a for a in instance.get("ipAddresses") or [] if a.get("type") == "public"]
    ipv4 = next((str(a["ip"]) for a in public if a.get("version") == 4), "")
    ipv6 = next((str(a["ip"]) for a in public if a.get("version") == 6), "")
    return ipv4, ipv6


def _credentials(config: ProviderConfig) -> _Credentials:
    """The keys as the ovh SDK finds them: its variables, then the ovh.conf files.

    ``--access-token-file`` may be an ovh.conf (read after the SDK's own files, so it
    wins over them); otherwise ``--access-token`` is the consumer key, tried before the
    SDK's and then ``INLETS_ACCESS_TOKEN``, as every provider does.
    """
    from ovh.config import ConfigurationManager

    conf = ConfigurationManager()
    flag = config.access_token
    if flag and _INI_SECTION.search(flag):
        conf.config.read_string(flag, source="--access-token-file")
        flag = ""
    endpoint = config.endpoint_url or conf.get("default", "endpoint") or DEFAULT_ENDPOINT
    key = conf.get(endpoint, "application_key") or ""
    secret = conf.get(endpoint, "application_secret") or ""
    if not key or not secret:
        raise CredentialsMissing(
            f"{NAME}: no application key and secret found",
            hint=f"Set {KEY_ENV} and {SECRET_ENV} (create them at "
            "https://eu.api.ovh.com/createApp/), or put them in ovh.conf "
            "(or pass one with --access-token-file).",
        )
    sdks = conf.get(endpoint, "consumer_key") or ""
    environ = {**os.environ, CONSUMER_ENV: sdks}
    consumer = resolve_token(NAME, replace(config, access_token=flag), (CONSUMER_ENV,), environ)
    if flag:
        consumer_source = "--access-token"
    elif sdks:
        consumer_source = _source(CONSUMER_ENV, "consumer_key")
    else:
        consumer_source = INLETS_TOKEN_ENV
    return _Credentials(
        endpoint=endpoint,
        application_key=key,
        application_secret=secret,
        consumer_key=consumer,
        key_source=_source(KEY_ENV, "application_key"),
        secret_source=_source(SECRET_ENV, "application_secret"),
        consumer_source=consumer_source,
    )


def _source(env: str, option: str) -> str:
    """``OVH_X`` when the variable set it, else the ovh.conf option that did."""
    return env if os.environ.get(env) else f"{option} in ovh.conf"
