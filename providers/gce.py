"""Google Compute Engine: an instance booted from our user-data, fenced by VPC firewall rules.

Firewall rules in GCE belong to a network, not to an instance: ours target a network
tag unique to the host (``inletsctl-<host id>``) on the ``default`` network, and are
made before the instance that carries the tag, so it is never reachable on a port we
did not mean to open. One rule denies all ingress at priority 910, above the default
network's own ``default-allow-ssh`` (65534) and a user's rules at the default 1000;
the rules at 900 allow only the tunnel's ports. ``purge`` deletes the instance, waits
for its zone operation, then deletes the rules, so the instance never outlives them.

Instances and their boot disks carry the labels ``inletsctl=exit-server`` and
``inletsctl-host=<host id>`` from the insert call; firewall rules have no labels, so
they are found by their name (``inletsctl-<host id>-...``) and their target tag. Label
values and names allow only lowercase letters, digits and ``-`` (labels ``_`` too), so
the host id is lowercased and anything else becomes ``-`` (inletsctl's own ids, 12 hex
digits, are unchanged). An instance without our label is the user's: ``status`` does
not see it, ``delete`` refuses it unless forced.

Every insert and delete is a long-running operation; its outcome is awaited with the
Operation API's ``wait`` (the server answers when the operation is done, or after about
two minutes), so no client-side sleep is involved. A failed operation is raised as the
SDK's own exception (as its ``ExtendedOperation`` does), so the one error boundary sees
it too: ``ZONE_RESOURCE_POOL_EXHAUSTED`` and ``QUOTA_EXCEEDED`` become CapacityErrors.

google-cloud-compute (REST transport) and google-auth are imported lazily. The endpoint
is ``--endpoint-url`` or ``CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`` (as gcloud reads it).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from providers.cloudapi import no_usable_answer, require_known, token_source
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
from providers.ports import inbound_rules, port_spec

if TYPE_CHECKING:
    from google.api_core.exceptions import GoogleAPICallError
    from google.auth.credentials import Credentials
    from google.cloud.compute_v1 import Firewall, Instance, Operation

__all__ = ["GceProvider", "endpoint_url"]

NAME = "gce"
#: a service-account key (or any ADC file), as every Google SDK reads it
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
#: an OAuth 2.0 access token, as Google's Terraform provider reads it
TOKEN_ENV = ("GOOGLE_OAUTH_ACCESS_TOKEN",)
#: the project, as google-auth and gcloud read it (before the credentials' own project)
PROJECT_ENV = ("GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT")
ENDPOINT_ENV = "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"
DEFAULT_ENDPOINT = "https://compute.googleapis.com"
SCOPES = ["https://www.googleapis.com/auth/compute"]
NETWORK = "global/networks/default"
ALLOW_PRIORITY = 900
DENY_PRIORITY = 910
#: where cloud-init's GCE datasource reads the user-data
USER_DATA_KEY = "user-data"
#: calls of the Operation API's ``wait`` (each returns within about 2 minutes) per operation
MAX_WAITS = 10
#: instance names, network tags and firewall names (RFC 1035)
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
#: instance states as the API reports them, normalised
_STATUS = {
    "PROVISIONING": HostStatus.CREATING,
    "STAGING": HostStatus.CREATING,
    "REPAIRING": HostStatus.CREATING,
    "RUNNING": HostStatus.ACTIVE,
    "STOPPING": HostStatus.FAILED,
    "STOPPED": HostStatus.FAILED,
    "SUSPENDING": HostStatus.FAILED,
    "SUSPENDED": HostStatus.FAILED,
    "TERMINATED": HostStatus.FAILED,
}
#: operation error codes and HTTP error reasons that mean "no room in this zone now" or
#: "this region's quota is used up": another zone (or region) may work
_CAPACITY = (
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "QUOTA_EXCEEDED",
    "quotaExceeded",
)
#: the Compute Engine API is not enabled in the project
_DISABLED = ("accessNotConfigured", "SERVICE_DISABLED")


class _Missing(ProviderAPIError):
    """The API's 404; callers turn it into a HostNotFound naming what is missing."""


def endpoint_url(config: ProviderConfig, environ: Mapping[str, str] | None = None) -> str:
    """The API's root: ``--endpoint-url``, else gcloud's override, which names the API's
    versioned root (``https://compute.googleapis.com/compute/v1/``); the SDK adds the
    ``/compute/v1`` itself, so it is removed here."""
    env = os.environ if environ is None else environ
    url = config.endpoint_url or env.get(ENDPOINT_ENV, "").strip() or DEFAULT_ENDPOINT
    return url.rstrip("/").removesuffix("/compute/v1")


def host_label(host_id: str) -> str:
    """Our host id as a label value and inside names: lowercase, ``[a-z0-9-]``, short
    enough that ``inletsctl-<it>-allow-N`` stays within 63 characters."""
    return re.sub(r"[^a-z0-9-]", "-", host_id.lower())[:40]


def network_tag(host_id: str) -> str:
    """The tag our firewall rules target; also the prefix of their names."""
    return f"{TAG_KEY}-{host_label(host_id)}"


class GceProvider:
    """Instance + tag-targeted firewall rules per host; found again by label and name."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="us-central1-a",
        default_plan="e2-micro",
        default_image="debian-cloud/debian-12",
        # "size must be less than or equal to 262144 bytes (256 KiB)" per metadata value
        user_data_limit=256 * 1024,
    )

    def __init__(self, config: ProviderConfig, *, max_waits: int = MAX_WAITS) -> None:
        """``max_waits``: calls of the Operation API's ``wait`` before an operation that
        is still running is a ProvisionTimeout."""
        from google.cloud import compute_v1

        credentials, self._project, self._source = _authenticate(config)
        self._endpoint = endpoint_url(config)
        self._zone = config.region or self.facts.default_region
        self._max_waits = max_waits
        options = {"api_endpoint": self._endpoint}

        def client(cls: Any) -> Any:
            return cls(credentials=credentials, transport="rest", client_options=options)

        self._instances = client(compute_v1.InstancesClient)
        self._firewalls = client(compute_v1.FirewallsClient)
        self._zones = client(compute_v1.ZonesClient)
        self._machine_types = client(compute_v1.MachineTypesClient)
        self._zone_operations = client(compute_v1.ZoneOperationsClient)
        self._global_operations = client(compute_v1.GlobalOperationsClient)

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        from google.cloud import compute_v1

        if not _NAME.fullmatch(spec.name):
            raise InvalidSpec(
                f"{NAME}: {spec.name!r} is not a valid instance name",
                hint="Use 1-63 lowercase letters, digits and '-', starting with a letter.",
            )
        image = _image_url(spec.image)
        zone = spec.region
        require_known(NAME, "zone", zone, self.known_regions())
        self._require_machine_type(zone, spec.plan)
        labels = {TAG_KEY: TAG_VALUE, HOST_ID_TAG: host_label(spec.host_id)}
        tag = network_tag(spec.host_id)
        rules = self._create_firewalls(spec, tag)
        instance = compute_v1.Instance(
            name=spec.name,
            machine_type=f"zones/{zone}/machineTypes/{spec.plan}",
            labels=labels,
            tags=compute_v1.Tags(items=[tag]),
            metadata=compute_v1.Metadata(
                items=[compute_v1.Items(key=USER_DATA_KEY, value=spec.user_data)]
            ),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=image, labels=labels
                    ),
                )
            ],
            network_interfaces=[
                compute_v1.NetworkInterface(
                    network=NETWORK,
                    access_configs=[
                        compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")
                    ],
                )
            ],
        )
        with self._errors():
            self._wait(
                self._instances.insert_unary(
                    project=self._project, zone=zone, instance_resource=instance
                )
            )
        host = self._to_host(self._instance(zone, spec.name))
        return Host(
            id=host.id,
            name=host.name,
            provider=NAME,
            region=zone,
            status=host.status,
            ip=host.ip,
            additional={**host.additional, "firewalls": ",".join(rules)},
        )

    def status(self, host_id: str) -> Host:
        return self._to_host(self._our_instance(host_id))

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        instance = self._get(host_id) if host_id is not None else self._find_by_ip(ip or "")
        labels = dict(instance.labels)
        require_ours(NAME, f"instance {_instance_id(instance)}", labels, force)
        ours = labels.get(HOST_ID_TAG, "") if is_ours(labels) else ""
        if ours:
            self.purge(ours)
        else:  # forced, or ours without a host label: the instance alone
            self._delete_instance(instance)

    def purge(self, host_id: str) -> list[str]:
        from google.cloud import compute_v1

        label = host_label(host_id)
        instances = [i for i in self._ours() if i.labels.get(HOST_ID_TAG) == label]
        for instance in instances:
            self._delete_instance(instance)
        tag = network_tag(host_id)
        with self._errors():
            found = self._firewalls.list(
                request=compute_v1.ListFirewallsRequest(
                    project=self._project, filter=f'name eq "{tag}-.*"'
                )
            )
            rules = [
                f for f in found if f.name.startswith(f"{tag}-") and list(f.target_tags) == [tag]
            ]
        leftovers = [(f"firewall rule {r.name}", partial(self._delete_firewall, r)) for r in rules]
        made = [f"instance {_instance_id(i)}" for i in instances]
        return made + remove_leftovers(NAME, "instances", leftovers)

    def list(self) -> list[Host]:
        return [self._to_host(i) for i in self._ours()]

    def known_regions(self) -> builtins.list[str]:
        """The zones (instances are zonal, so ``--region`` names one), so ``create
        --region a,b`` refuses a typo before the first create."""
        with self._errors():
            return [z.name for z in self._zones.list(project=self._project)]

    def console_output(self, host_id: str) -> str:
        """The serial port's output: cloud-init's log, for ``inletsctl logs``."""
        instance = self._our_instance(host_id)
        with self._errors():
            return str(
                self._instances.get_serial_port_output(
                    project=self._project, zone=_last(instance.zone), instance=instance.name
                ).contents
            )

    # -- helpers -----------------------------------------------------------
    def _require_machine_type(self, zone: str, plan: str) -> None:
        try:
            with self._errors():
                self._machine_types.get(project=self._project, zone=zone, machine_type=plan)
        except _Missing:
            with self._errors():
                known = [m.name for m in self._machine_types.list(project=self._project, zone=zone)]
            require_known(NAME, f"machine type in {zone}", plan, known)

    def _create_firewalls(self, spec: HostSpec, tag: str) -> builtins.list[str]:
        """The deny-all rule, then one allow rule per set of sources; their names."""
        from google.cloud import compute_v1

        description = f"{TAG_KEY}={TAG_VALUE} {HOST_ID_TAG}={spec.host_id}"
        common = {"network": NETWORK, "direction": "INGRESS", "target_tags": [tag]}
        rules = [
            compute_v1.Firewall(
                name=f"{tag}-deny",
                description=f"{description}: nothing else reaches the exit server",
                priority=DENY_PRIORITY,
                source_ranges=["0.0.0.0/0"],
                denied=[compute_v1.Denied(I_p_protocol="all")],
                **common,
            )
        ]
        for n, (sources, ports) in enumerate(_allowed(spec).items()):
            rules.append(
                compute_v1.Firewall(
                    name=f"{tag}-allow-{n}",
                    description=f"{description}: inletsctl tunnel",
                    priority=ALLOW_PRIORITY,
                    source_ranges=list(sources),
                    allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=ports)],
                    **common,
                )
            )
        for rule in rules:
            with self._errors():
                self._wait(
                    self._firewalls.insert_unary(project=self._project, firewall_resource=rule)
                )
        return [r.name for r in rules]

    def _wait(self, operation: Operation) -> None:
        """Wait until ``operation`` is done; its error raised as the SDK raises one."""
        from google.api_core.exceptions import from_http_status
        from google.cloud.compute_v1 import Operation

        waits = 0
        while operation.status != Operation.Status.DONE:
            if waits == self._max_waits:
                raise ProvisionTimeout(
                    f"{NAME}: operation {operation.name} ({operation.operation_type} of "
                    f"{_last(operation.target_link)}) did not finish"
                )
            waits += 1
            if operation.zone:
                operation = self._zone_operations.wait(
                    project=self._project, zone=_last(operation.zone), operation=operation.name
                )
            else:
                operation = self._global_operations.wait(
                    project=self._project, operation=operation.name
                )
        if operation.error.errors:
            raise from_http_status(  # type: ignore[no-untyped-call]
                operation.http_error_status_code or 500,
                operation.http_error_message or "operation failed",
                errors=list(operation.error.errors),
            )

    def _delete_instance(self, instance: Instance) -> None:
        try:
            with self._errors():
                self._wait(
                    self._instances.delete_unary(
                        project=self._project, zone=_last(instance.zone), instance=instance.name
                    )
                )
        except _Missing:
            pass  # already gone: what we wanted

    def _delete_firewall(self, rule: Firewall) -> None:
        try:
            with self._errors():
                self._wait(self._firewalls.delete_unary(project=self._project, firewall=rule.name))
        except _Missing:
            pass

    def _instance(self, zone: str, name: str) -> Instance:
        with self._errors():
            instance: Instance = self._instances.get(
                project=self._project, zone=zone, instance=name
            )
            return instance

    def _get(self, host_id: str) -> Instance:
        """``zone/name`` as ``Host.id`` spells it, or a bare name in the configured zone."""
        zone, _, name = host_id.rpartition("/")
        if not _NAME.fullmatch(name) or not re.fullmatch(r"[a-z0-9-]*", zone):
            raise HostNotFound(f"{NAME}: no instance {host_id!r}")
        try:
            return self._instance(zone or self._zone, name)
        except _Missing as exc:
            raise HostNotFound(f"{NAME}: no instance {host_id}") from exc

    def _our_instance(self, host_id: str) -> Instance:
        instance = self._get(host_id)
        if not is_ours(dict(instance.labels)):
            raise HostNotFound(f"{NAME}: no instance labelled {TAG_KEY}={TAG_VALUE} is {host_id}")
        return instance

    def _ours(self) -> Sequence[Instance]:
        """Our instances in every zone, the label checked again on each (a filter lost
        on the way must never widen a delete)."""
        from google.cloud import compute_v1

        with self._errors():
            pages = self._instances.aggregated_list(
                request=compute_v1.AggregatedListInstancesRequest(
                    project=self._project, filter=f'labels.{TAG_KEY} = "{TAG_VALUE}"'
                )
            )
            return [i for _, scoped in pages for i in scoped.instances if is_ours(dict(i.labels))]

    def _find_by_ip(self, ip: str) -> Instance:
        for instance in self._ours():
            if ip and ip == _public_ip(instance):
                return instance
        raise HostNotFound(f"{NAME}: no instance labelled {TAG_KEY}={TAG_VALUE} has IP {ip!r}")

    def _to_host(self, instance: Instance) -> Host:
        ours = instance.labels.get(HOST_ID_TAG, "")
        return Host(
            id=_instance_id(instance),
            name=instance.name,
            provider=NAME,
            region=_last(instance.zone),
            status=_STATUS.get(instance.status, HostStatus.CREATING),
            ip=_public_ip(instance),
            additional={
                "provider_status": instance.status,
                **({"host_id": ours} if ours else {}),
            },
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate google-api-core's and google-auth's exceptions (and requests', which
        are OSErrors) to ours."""
        from google.api_core.exceptions import GoogleAPICallError, RetryError
        from google.auth.exceptions import RefreshError, TransportError

        try:
            yield
        except GoogleAPICallError as exc:
            raise self._api_error(exc) from exc
        except RefreshError as exc:  # a 401 that google-auth could not answer with a new token
            raise self._rejected() from exc
        except RetryError as exc:
            raise ProviderAPIError(
                NAME,
                f"{self._endpoint} kept failing: {exc.message}",
                hint=f"The API is unavailable: retry later, and check {ENDPOINT_ENV} / "
                "--endpoint-url.",
            ) from exc
        except (TransportError, OSError) as exc:
            raise no_usable_answer(NAME, self._endpoint, exc, ENDPOINT_ENV) from exc

    def _rejected(self) -> ProviderAPIError:
        return ProviderAPIError(
            NAME,
            f"the API rejected the credentials from {self._source} (401 Unauthorized)",
            hint=_credentials_hint(self._source),
            code="unauthorized",
        )

    def _api_error(self, exc: GoogleAPICallError) -> ProviderAPIError:
        codes = _codes(exc)
        text = _text(exc)
        status = int(exc.code or 0)
        if status == 401:
            return self._rejected()
        capacity = next((c for c in codes if c in _CAPACITY), "")
        if capacity:
            return CapacityError(
                NAME,
                f"{text} ({capacity})",
                hint="Try another zone (--region us-central1-a,us-east1-b tries each in turn) "
                "or machine type, or ask for more quota (IAM & Admin, Quotas).",
                code=capacity,
            )
        if status == 404:
            return _Missing(NAME, text, code="notFound")
        hint = None
        if status == 403 and any(c in _DISABLED for c in codes):
            hint = (
                "Enable the Compute Engine API: "
                f"gcloud services enable compute.googleapis.com --project {self._project}"
            )
        elif status == 403:
            hint = (
                f"The credentials from {self._source} lack that permission in project "
                f"{self._project}: grant roles/compute.instanceAdmin.v1 and "
                "roles/compute.securityAdmin, or pick the project with GOOGLE_CLOUD_PROJECT."
            )
        elif status >= 500:
            hint = f"The API failed: retry shortly, and check {ENDPOINT_ENV} / --endpoint-url."
        return ProviderAPIError(
            NAME, f"{text} ({codes[0] if codes else status})", hint=hint, code=str(status)
        )


def _authenticate(config: ProviderConfig) -> tuple[Credentials, str, str]:
    """(credentials, project, where they came from in the words a user would fix it with).

    In this order: ``--access-token(-file)`` (a key file's JSON, or an access token),
    ``GOOGLE_APPLICATION_CREDENTIALS``, ``GOOGLE_OAUTH_ACCESS_TOKEN`` or
    ``INLETS_ACCESS_TOKEN``, then the rest of Application Default Credentials (gcloud's
    ``application-default login`` file, the metadata server on a Google VM).
    """
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    # Where Application Default Credentials find nothing, google-auth logs a warning for
    # each place it looked (the metadata server), above the one-line error; -v shows it.
    lookup_log = logging.getLogger("google.auth._default")
    if lookup_log.getEffectiveLevel() > logging.DEBUG:
        lookup_log.setLevel(logging.ERROR)

    found: tuple[Any, str | None]
    try:
        if not config.access_token and os.environ.get(CREDENTIALS_ENV, "").strip():
            source = CREDENTIALS_ENV
            found = google.auth.default(scopes=SCOPES)
        else:
            try:
                token = resolve_token(NAME, config, TOKEN_ENV)
            except CredentialsMissing:
                source = "Application Default Credentials"
                found = google.auth.default(scopes=SCOPES)
            else:
                source = token_source(config, TOKEN_ENV)
                found = _from_text(token)
    except (DefaultCredentialsError, ValueError) as exc:
        raise CredentialsMissing(
            f"{NAME}: no usable Google credentials: {exc}",
            hint=f"Set {CREDENTIALS_ENV} to a service-account key file, pass it with "
            f"--access-token-file, set {' or '.join(TOKEN_ENV)} to an access token, or run "
            "`gcloud auth application-default login`.",
        ) from exc
    credentials, from_credentials = found
    named = [os.environ.get(v, "").strip() for v in PROJECT_ENV]
    project = next((p for p in named if p), from_credentials or "")
    if not project:
        raise CredentialsMissing(
            f"{NAME}: no project: the credentials from {source} name none",
            hint=f"Set {' or '.join(PROJECT_ENV)} to the project to create hosts in.",
        )
    return credentials, project, source


def _from_text(text: str) -> tuple[Any, str | None]:
    """What ``--access-token-file`` holds: a service-account key file's JSON, or an
    access token."""
    from google.oauth2 import credentials, service_account

    if not text.startswith("{"):
        return credentials.Credentials(text), None  # type: ignore[no-untyped-call]
    info = json.loads(text)
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        key = service_account.Credentials.from_service_account_info(info, scopes=SCOPES)  # type: ignore[no-untyped-call]
        return key, info.get("project_id")
    raise ValueError(f"a key file of type {kind!r}: only a service account's works here")


def _credentials_hint(source: str) -> str:
    if source == CREDENTIALS_ENV:
        return (
            f"Point {CREDENTIALS_ENV} at a valid service-account key file (a deleted or "
            "disabled key is refused)."
        )
    if source == "Application Default Credentials":
        return "Run `gcloud auth application-default login` again, or set " + CREDENTIALS_ENV
    return (
        f"Set {source} to a fresh access token (`gcloud auth print-access-token`; they last "
        f"an hour), or use a service-account key file with {CREDENTIALS_ENV}."
    )


def _image_url(image: str) -> str:
    """``PROJECT/FAMILY`` (``debian-cloud/debian-12``) as the image family's URL; a
    ``projects/...`` or full URL is used as it is."""
    if image.startswith(("projects/", "https://")):
        return image
    project, slash, family = image.partition("/")
    if not slash or not project or not _NAME.fullmatch(family):
        raise InvalidSpec(
            f"{NAME}: image {image!r} is not PROJECT/FAMILY",
            hint="Pass an image family with its project, as debian-cloud/debian-12 or "
            "ubuntu-os-cloud/ubuntu-2404-lts-amd64, or a projects/... image URL.",
        )
    return f"projects/{project}/global/images/family/{family}"


def _allowed(spec: HostSpec) -> dict[tuple[str, ...], builtins.list[str]]:
    """IPv4 sources -> the port specs they may reach. A rule takes IPv4 or IPv6 ranges,
    never both, and an instance on the default network has IPv4 only, so IPv6 sources
    (``::/0``, an IPv6 ``--allow-ips``) have nothing to reach and get no rule."""
    allowed: dict[tuple[str, ...], builtins.list[str]] = {}
    for ports, sources in inbound_rules(spec.server):
        ipv4 = tuple(s for s in sources if ":" not in s)
        if ipv4:
            allowed.setdefault(ipv4, []).append(port_spec(*ports))
    return allowed


def _codes(exc: GoogleAPICallError) -> builtins.list[str]:
    """The error's reasons (HTTP errors) or codes (a failed operation's), and its
    ErrorInfo reason: what decides which of our errors it is."""
    codes = [str(exc.reason)] if exc.reason else []
    for error in exc.errors:
        code = error.get("reason", "") if isinstance(error, dict) else getattr(error, "code", "")
        if code:
            codes.append(str(code))
    return codes


def _text(exc: GoogleAPICallError) -> str:
    """The API's own words, without the method and URL that google-api-core puts first."""
    messages = [
        str(e.get("message", "") if isinstance(e, dict) else getattr(e, "message", ""))
        for e in exc.errors
    ]
    return "; ".join(m for m in messages if m) or str(exc.message).splitlines()[0][:300]


def _last(url: str) -> str:
    """The name at the end of a resource URL (a zone, a target)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def _instance_id(instance: Instance) -> str:
    return f"{_last(instance.zone)}/{instance.name}"


def _public_ip(instance: Instance) -> str:
    for interface in instance.network_interfaces:
        for access in interface.access_configs:
            if access.nat_i_p:
                return str(access.nat_i_p)
    return ""
