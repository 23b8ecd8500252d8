"""Azure: a VM in a resource group of its own, behind a Network Security Group.

Each host gets a resource group ``inletsctl-<host id>`` holding everything made for
it: the NSG, a VNet with one subnet, a Standard public IP, a NIC and the VM (whose OS
disk Azure makes beside it). The NSG exists before the NIC that names it, and the NIC
before the VM, so the VM is never reachable on a port we did not mean to open; a
Standard public IP is closed to inbound traffic until an NSG allows it. Every
resource carries ``inletsctl=exit-server`` and ``inletsctl-host=<host id>`` from the
PUT that makes it: ``list`` reads the VMs' tags, ``purge`` finds the resource groups
by the host tag and deletes each one, which Azure does in dependency order (the VM
before the NIC and the NIC before the NSG). A VM without our tag is the user's:
``status`` does not see it, ``delete`` refuses it unless forced, and then deletes
that VM only, never its resource group.

``Host.id`` is ``<resource group>/<VM name>``: short, and enough to find the VM again.

The SDKs (azure-identity, azure-mgmt-*) are imported lazily. Credentials follow the
Azure SDKs' conventions; see :func:`_credentials`. ARM PUTs and DELETEs are
long-running operations: the SDK polls ``Azure-AsyncOperation`` or ``Location``,
``Retry-After`` seconds apart when the API says, else ``polling_interval``.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from providers.cloudapi import network_cause, no_usable_answer, require_known
from providers.credentials import INLETS_TOKEN_ENV
from providers.errors import (
    CapacityError,
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    ProviderAPIError,
    ProviderError,
)
from providers.kit import is_ours, require_ours
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
from providers.ports import ANYWHERE, inbound_rules, port_spec

if TYPE_CHECKING:
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.mgmt.compute.models import VirtualMachine

__all__ = ["AzureProvider"]

NAME = "azure"
SUBSCRIPTION_ENV = "AZURE_SUBSCRIPTION_ID"
#: the Go SDK's file-based auth (``az ad sp create-for-rbac --sdk-auth``), as Go inletsctl reads it
AUTH_FILE_ENV = "AZURE_AUTH_LOCATION"
#: EnvironmentCredential's service-principal variables
SP_ENV = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
_SP_ANY = (*SP_ENV, "AZURE_CLIENT_CERTIFICATE_PATH")
#: the Resource Manager endpoint, as Azure Stack Hub's Python samples name it
ENDPOINT_ENV = "ARM_ENDPOINT"
AUTHORITY_ENV = "AZURE_AUTHORITY_HOST"
DEFAULT_ENDPOINT = "https://management.azure.com"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
ADMIN_USER = "inletsctl"
#: names inside a host's own resource group
NSG, VNET, SUBNET, PUBLIC_IP, NIC = (
    "inletsctl-nsg",
    "inletsctl-vnet",
    "default",
    "inletsctl-ip",
    "inletsctl-nic",
)
#: the first allow rule's priority and the step between rules; the explicit deny comes last
_FIRST_PRIORITY, _STEP, _DENY_PRIORITY = 100, 10, 4096
#: error codes that mean "not this size here now" or "not on this subscription's quota"
_CAPACITY_CODES = frozenset(
    {"SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed", "QuotaExceeded"}
)
#: provisioning states of a VM, normalised (the power state refines "Succeeded")
_PROVISIONING = {
    "Creating": HostStatus.CREATING,
    "Updating": HostStatus.CREATING,
    "Migrating": HostStatus.CREATING,
    "Failed": HostStatus.FAILED,
    "Canceled": HostStatus.FAILED,
    "Deleting": HostStatus.DELETING,
}
_POWER = {
    "PowerState/starting": HostStatus.CREATING,
    "PowerState/running": HostStatus.ACTIVE,
    "PowerState/stopping": HostStatus.FAILED,
    "PowerState/stopped": HostStatus.FAILED,
    "PowerState/deallocating": HostStatus.FAILED,
    "PowerState/deallocated": HostStatus.FAILED,
}


class _Missing(ProviderAPIError):
    """ARM's 404; callers turn it into a HostNotFound naming what is missing."""


@dataclass(frozen=True)
class _Auth:
    credential: TokenCredential
    subscription_id: str
    #: where the credential came from, in the words a user would fix it with
    source: str
    #: the Resource Manager endpoint an auth file names ("" = not named)
    endpoint: str = ""
    #: where the sign-in goes, for an error that says it cannot be reached
    authority: str = ""


class _StaticToken:
    """A bearer token a user already has (``az account get-access-token``), as a credential."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.core.credentials import AccessToken

        # Its expiry is unknown here; ARM answers 401 once it has passed.
        return AccessToken(self._token, int(time.time()) + 3600)


def _credentials(config: ProviderConfig) -> _Auth:
    """The first of: ``--access-token(-file)``, ``AZURE_AUTH_LOCATION``, EnvironmentCredential's
    variables, ``INLETS_ACCESS_TOKEN``, then DefaultAzureCredential (``az login``, managed
    identity). A token text is an sdk-auth JSON (what Go inletsctl's ``--access-token-file``
    takes) or a bare ARM access token."""
    env = os.environ
    if config.access_token.strip():
        return _from_text(config.access_token.strip(), "--access-token(-file)", env)
    auth_file = env.get(AUTH_FILE_ENV, "").strip()
    if auth_file:
        try:
            with open(auth_file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise CredentialsMissing(
                f"{NAME}: cannot read {AUTH_FILE_ENV} file {auth_file}: {exc.strerror}"
            ) from exc
        return _from_text(text.strip(), AUTH_FILE_ENV, env)
    if any(env.get(name, "").strip() for name in _SP_ANY):
        from azure.identity import EnvironmentCredential

        source = "AZURE_CLIENT_SECRET" if env.get("AZURE_CLIENT_SECRET") else "AZURE_CLIENT_ID"
        credential = EnvironmentCredential(disable_instance_discovery=True)
        return _Auth(credential, _subscription(env, ""), source, authority=_authority())
    if env.get(INLETS_TOKEN_ENV, "").strip():
        return _from_text(env[INLETS_TOKEN_ENV].strip(), INLETS_TOKEN_ENV, env)
    from azure.identity import DefaultAzureCredential

    subscription = _subscription(env, "")
    source = "`az login` (DefaultAzureCredential)"
    return _Auth(DefaultAzureCredential(), subscription, source, authority=_authority())


def _from_text(text: str, source: str, env: Mapping[str, str]) -> _Auth:
    try:
        doc = json.loads(text)
    except ValueError:
        return _Auth(_StaticToken(text), _subscription(env, ""), source)
    if not isinstance(doc, dict):
        raise CredentialsMissing(f"{NAME}: {source} holds JSON, but not an object")
    missing = [k for k in ("tenantId", "clientId", "clientSecret") if not doc.get(k)]
    if missing:
        raise CredentialsMissing(
            f"{NAME}: the JSON from {source} lacks {', '.join(missing)}",
            hint="Write it with `az ad sp create-for-rbac --role Contributor --scopes "
            "/subscriptions/ID --sdk-auth`.",
        )
    from azure.identity import ClientSecretCredential

    authority = str(doc.get("activeDirectoryEndpointUrl") or "") or None
    credential = ClientSecretCredential(
        str(doc["tenantId"]),
        str(doc["clientId"]),
        str(doc["clientSecret"]),
        authority=authority,
        disable_instance_discovery=True,
    )
    subscription = _subscription(env, str(doc.get("subscriptionId") or ""))
    endpoint = str(doc.get("resourceManagerEndpointUrl") or "")
    return _Auth(
        credential, subscription, f"{source} (clientSecret)", endpoint, authority or _authority()
    )


def _authority() -> str:
    """The sign-in endpoint azure-identity uses unless told otherwise."""
    return os.environ.get(AUTHORITY_ENV, "").strip() or DEFAULT_AUTHORITY


def _subscription(env: Mapping[str, str], given: str) -> str:
    subscription = given or env.get(SUBSCRIPTION_ENV, "").strip()
    if not subscription:
        raise CredentialsMissing(
            f"{NAME}: no subscription id found",
            hint=f"Set {SUBSCRIPTION_ENV} (`az account show --query id -o tsv`), and sign in "
            f"with {', '.join(SP_ENV)}, --access-token-file (an sdk-auth JSON) or `az login`.",
        )
    return subscription


def image_reference(urn: str) -> dict[str, str]:
    """``publisher:offer:sku:version`` (the Azure CLI's image URN) as ARM's imageReference."""
    parts = urn.split(":")
    if len(parts) != 4 or not all(parts):
        raise InvalidSpec(
            f"{NAME}: image {urn!r} is not publisher:offer:sku:version",
            hint="e.g. Debian:debian-12:12-gen2:latest (`az vm image list` shows others).",
        )
    return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))


def security_rules(spec: HostSpec) -> builtins.list[dict[str, Any]]:
    """Allow rules for our ports only, in priority order, then an explicit deny of the rest.

    A rule takes IPv4 or IPv6 prefixes, not both, so ``--allow-ips`` splits by family;
    "from anywhere" is ARM's ``*``.
    """
    rules: list[dict[str, Any]] = []
    for (first, last), sources in inbound_rules(spec.server):
        families = [["*"]] if sources == ANYWHERE else _by_family(sources)
        for prefixes in families:
            rules.append(
                _rule(
                    f"inletsctl-{port_spec(first, last)}-{len(rules)}",
                    _FIRST_PRIORITY + _STEP * len(rules),
                    "Allow",
                    port_spec(first, last),
                    prefixes,
                )
            )
    rules.append(_rule("inletsctl-deny-rest", _DENY_PRIORITY, "Deny", "*", ["*"]))
    return rules


def _by_family(sources: tuple[str, ...]) -> builtins.list[builtins.list[str]]:
    """The IPv4 prefixes, then the IPv6 ones: an NSG rule holds one family only."""
    v4 = [s for s in sources if ":" not in s]
    v6 = [s for s in sources if ":" in s]
    return [family for family in (v4, v6) if family]


def _rule(
    name: str, priority: int, access: str, ports: str, sources: builtins.list[str]
) -> dict[str, Any]:
    source = (
        {"sourceAddressPrefix": sources[0]}
        if len(sources) == 1
        else {"sourceAddressPrefixes": sources}
    )
    return {
        "name": name,
        "properties": {
            "priority": priority,
            "direction": "Inbound",
            "access": access,
            "protocol": "Tcp" if access == "Allow" else "*",
            "sourcePortRange": "*",
            "destinationAddressPrefix": "*",
            "destinationPortRange": ports,
            **source,
        },
    }


class AzureProvider:
    """Resource group per host (NSG, VNet, public IP, NIC, VM); found again by tag."""

    name: ClassVar[str] = NAME
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="eastus",
        # 1 vCPU, 0.5 GiB: the smallest and cheapest general-purpose size Azure lists
        default_plan="Standard_B1ls",
        default_image="Debian:debian-12:12-gen2:latest",
        # osProfile.customData: "the maximum length of the binary array is 65535 bytes",
        # which base64 makes 87380 characters; the limit here is after encoding.
        user_data_limit=4 * -(-65535 // 3),
        user_data_encoding="base64",
    )

    def __init__(
        self,
        config: ProviderConfig,
        *,
        polling_interval: float = 5.0,
        retry_backoff: float = 0.8,
    ) -> None:
        """``polling_interval``: seconds between polls of a long-running operation when the
        API sends no Retry-After; ``retry_backoff``: the SDK's backoff factor for retries
        of a 408, 429 or 5xx."""
        from azure.mgmt.compute import ComputeManagementClient
        from azure.mgmt.network import NetworkManagementClient
        from azure.mgmt.resource.resources import ResourceManagementClient

        # azure-identity logs each refused sign-in at WARNING, a second and longer copy of
        # the one-line error; `-v` (DEBUG) still shows it.
        identity_log = logging.getLogger("azure.identity")
        if identity_log.getEffectiveLevel() > logging.DEBUG:
            identity_log.setLevel(logging.ERROR)
        auth = _credentials(config)
        self._source = auth.source
        self._authority = auth.authority
        self._subscription = auth.subscription_id
        self._endpoint = (
            config.endpoint_url
            or auth.endpoint
            or os.environ.get(ENDPOINT_ENV, "").strip()
            or DEFAULT_ENDPOINT
        ).rstrip("/")
        options: dict[str, Any] = {
            "base_url": self._endpoint,
            "polling_interval": polling_interval,
            "retry_backoff_factor": retry_backoff,
            "user_agent": "inletsctl",
        }
        self._resources = ResourceManagementClient(auth.credential, self._subscription, **options)
        self._network = NetworkManagementClient(auth.credential, self._subscription, **options)
        self._compute = ComputeManagementClient(auth.credential, self._subscription, **options)

    # -- the Provider contract ------------------------------------------------
    def create(self, spec: HostSpec) -> Host:
        from azure.mgmt.compute.models import VirtualMachine
        from azure.mgmt.network.models import (
            NetworkInterface,
            NetworkSecurityGroup,
            PublicIPAddress,
            VirtualNetwork,
        )

        image = image_reference(spec.image)
        self._check_size(spec.region, spec.plan)
        tags = {TAG_KEY: TAG_VALUE, HOST_ID_TAG: spec.host_id}
        group = _group_name(spec.host_id)
        # Bodies as the REST reference spells them; the SDK's models take that JSON as is.
        where: dict[str, Any] = {"location": spec.region, "tags": tags}
        with self._errors():
            self._resources.resource_groups.create_or_update(group, where)
            nsg = self._network.network_security_groups.begin_create_or_update(
                group,
                NSG,
                NetworkSecurityGroup(
                    {**where, "properties": {"securityRules": security_rules(spec)}}
                ),
            ).result()
            vnet = self._network.virtual_networks.begin_create_or_update(
                group,
                VNET,
                VirtualNetwork(
                    {
                        **where,
                        "properties": {
                            "addressSpace": {"addressPrefixes": ["10.0.0.0/24"]},
                            "subnets": [
                                {"name": SUBNET, "properties": {"addressPrefix": "10.0.0.0/24"}}
                            ],
                        },
                    }
                ),
            ).result()
            public_ip = self._network.public_ip_addresses.begin_create_or_update(
                group,
                PUBLIC_IP,
                PublicIPAddress(
                    {
                        **where,
                        "sku": {"name": "Standard"},
                        "properties": {
                            "publicIPAllocationMethod": "Static",
                            "publicIPAddressVersion": "IPv4",
                        },
                    }
                ),
            ).result()
            subnet = (vnet.subnets or [None])[0]
            nic = self._network.network_interfaces.begin_create_or_update(
                group,
                NIC,
                NetworkInterface(
                    {
                        **where,
                        "properties": {
                            "networkSecurityGroup": {"id": nsg.id},
                            "ipConfigurations": [
                                {
                                    "name": "ipconfig1",
                                    "properties": {
                                        "subnet": {"id": subnet.id if subnet else ""},
                                        "publicIPAddress": {"id": public_ip.id},
                                        "privateIPAllocationMethod": "Dynamic",
                                    },
                                }
                            ],
                        },
                    }
                ),
            ).result()
            vm = self._compute.virtual_machines.begin_create_or_update(
                group,
                spec.name,
                VirtualMachine({**where, "properties": self._vm_properties(spec, image, nic.id)}),
            ).result()
        host = self._to_host(vm)
        return Host(
            id=host.id,
            name=host.name,
            provider=NAME,
            region=spec.region,
            status=host.status,
            ip=host.ip,
            additional={**host.additional, "resource_group": group},
        )

    def status(self, host_id: str) -> Host:
        return self._to_host(self._our_vm(host_id))

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        vm = self._get(host_id) if host_id is not None else self._find_by_ip(ip or "")
        tags = vm.tags or {}
        require_ours(NAME, f"VM {_host_id(vm)}", tags, force)
        host_tag = tags.get(HOST_ID_TAG, "") if is_ours(tags) else ""
        if host_tag:
            self.purge(host_tag)
            return
        group, name = _host_id(vm).split("/")
        try:
            with self._errors():
                self._compute.virtual_machines.begin_delete(group, name).result()
        except _Missing:
            pass  # already gone: what we wanted

    def purge(self, host_id: str) -> list[str]:
        query = f"tagName eq '{HOST_ID_TAG}' and tagValue eq '{host_id}'"
        with self._errors():
            groups = [
                g.name or ""
                for g in self._resources.resource_groups.list(filter=query)
                # the filter again, here: a filter dropped on the way must not select everything
                if is_ours(g.tags or {}) and (g.tags or {}).get(HOST_ID_TAG) == host_id
            ]
        removed = []
        for group in groups:
            try:
                with self._errors():
                    self._resources.resource_groups.begin_delete(group).result()
            except _Missing:
                continue
            except ProviderError as exc:
                raise ProviderError(
                    f"{NAME}: resource group {group} was not deleted: {exc.message}",
                    hint="Run the same `inletsctl delete` again shortly; Azure deletes a "
                    "group's VM before its network.",
                ) from exc
            removed.append(f"resource group {group}")
        return removed

    def list(self) -> builtins.list[Host]:
        with self._errors():
            # statusOnly: each VM with its instance view (the power state), in the one list
            every = self._compute.virtual_machines.list_all(status_only="true")
            vms = [vm for vm in every if is_ours(vm.tags or {})]
        return [self._to_host(vm) for vm in vms]

    def console_output(self, host_id: str) -> str:
        """The serial console's log (boot diagnostics, which ``create`` turns on), where
        cloud-init writes, for ``inletsctl logs``; "" while nothing is logged yet."""
        import requests

        group, name = _host_id(self._our_vm(host_id)).split("/")
        with self._errors():
            uris = self._compute.virtual_machines.retrieve_boot_diagnostics_data(
                group, name, sas_uri_expiration_time_in_minutes=5
            )
            if not uris.serial_console_log_blob_uri:
                return ""
            # A SAS URL: it carries its own signature, and our token must not go there.
            answer = requests.get(uris.serial_console_log_blob_uri, timeout=60)
        if answer.status_code == 404:
            return ""
        if not answer.ok:
            raise ProviderAPIError(
                NAME, f"the boot diagnostics log answered {answer.status_code} {answer.reason}"
            )
        return str(answer.text)

    def known_regions(self) -> builtins.list[str]:
        """Every location with VM sizes, so ``create --region a,b`` refuses a typo up front."""
        return sorted({loc for _, locations, _ in self._sizes() for loc in locations})

    # -- helpers -----------------------------------------------------------
    def _sizes(self) -> builtins.list[tuple[str, set[str], set[str]]]:
        """(size, its locations, locations where this subscription may not use it)."""
        with self._errors():
            skus = builtins.list(self._compute.resource_skus.list())
        sizes = []
        for sku in skus:
            if sku.resource_type != "virtualMachines" or not sku.name:
                continue
            restricted = {
                value.lower()
                for r in sku.restrictions or []
                if r.type == "Location"
                for value in r.values_property or []
            }
            sizes.append((sku.name, {loc.lower() for loc in sku.locations or []}, restricted))
        return sizes

    def _check_size(self, region: str, plan: str) -> None:
        """Refuse an unknown location or size before anything exists, and say that a size
        the subscription may not use there is a capacity problem (another region may do)."""
        sizes = self._sizes()
        require_known(NAME, "location", region, {loc for _, locs, _ in sizes for loc in locs})
        here = {name: restricted for name, locs, restricted in sizes if region in locs}
        require_known(NAME, f"VM size in {region}", plan, here)
        if region in here[plan]:
            raise CapacityError(
                NAME,
                f"size {plan} is not available to this subscription in {region} (SkuNotAvailable)",
                hint="Try another location (--region eastus,westus2 tries each in turn) or size.",
                code="SkuNotAvailable",
            )

    def _vm_properties(self, spec: HostSpec, image: dict[str, str], nic: str | None) -> Any:
        custom_data = base64.b64encode(spec.user_data.encode()).decode()
        return {
            "hardwareProfile": {"vmSize": spec.plan},
            "storageProfile": {
                "imageReference": image,
                "osDisk": {
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "managedDisk": {"storageAccountType": "Standard_LRS"},
                },
            },
            "osProfile": {
                "computerName": spec.name,
                "adminUsername": ADMIN_USER,
                # Linux VMs need a password or a key; this one is kept nowhere, and the
                # NSG leaves port 22 closed anyway.
                "adminPassword": f"{secrets.token_urlsafe(24)}-Aa1",
                "customData": custom_data,
            },
            # the serial console's log in an Azure-managed storage account, for `logs`
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
            "networkProfile": {
                "networkInterfaces": [
                    {"id": nic, "properties": {"primary": True, "deleteOption": "Delete"}}
                ]
            },
        }

    def _get(self, host_id: str) -> VirtualMachine:
        group, _, name = host_id.partition("/")
        if not group or not name or "/" in name:
            raise HostNotFound(f"{NAME}: no VM with id {host_id!r} (want resource-group/vm-name)")
        try:
            with self._errors():
                return self._compute.virtual_machines.get(group, name, expand="instanceView")
        except _Missing as exc:
            raise HostNotFound(f"{NAME}: no VM {name} in resource group {group}") from exc

    def _our_vm(self, host_id: str) -> VirtualMachine:
        vm = self._get(host_id)
        if not is_ours(vm.tags or {}):
            raise HostNotFound(f"{NAME}: no VM tagged {TAG_KEY}={TAG_VALUE} with id {host_id}")
        return vm

    def _find_by_ip(self, ip: str) -> VirtualMachine:
        for host in self.list():
            if ip and ip == host.ip:
                return self._get(host.id)
        raise HostNotFound(f"{NAME}: no VM tagged {TAG_KEY}={TAG_VALUE} has IP {ip!r}")

    def _public_ip(self, vm: VirtualMachine) -> str:
        """The address of the public IP on the VM's NIC, found among its group's public IPs."""
        refs = vm.network_profile.network_interfaces if vm.network_profile else None
        nics = {(ref.id or "").lower() for ref in refs or []}
        group = _host_id(vm).split("/")[0]
        with self._errors():
            addresses = builtins.list(self._network.public_ip_addresses.list(group))
        for address in addresses:
            config = (address.ip_configuration.id or "") if address.ip_configuration else ""
            if any(config.lower().startswith(nic + "/") for nic in nics):
                return address.ip_address or ""
        return ""

    def _to_host(self, vm: VirtualMachine) -> Host:
        tags = vm.tags or {}
        status = _PROVISIONING.get(vm.provisioning_state or "", HostStatus.CREATING)
        power = ""
        if vm.provisioning_state == "Succeeded":
            statuses = vm.instance_view.statuses if vm.instance_view else None
            power = next(
                (s.code or "" for s in statuses or [] if (s.code or "").startswith("PowerState/")),
                "",
            )
            status = _POWER.get(power, HostStatus.CREATING)
        host_id = tags.get(HOST_ID_TAG, "")
        return Host(
            id=_host_id(vm),
            name=vm.name or "",
            provider=NAME,
            region=vm.location or "",
            status=status,
            ip=self._public_ip(vm),
            additional={
                "provider_status": power or vm.provisioning_state or "",
                **({"host_id": host_id} if host_id else {}),
            },
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate azure-core's and azure-identity's exceptions (and requests', for the
        boot diagnostics log) to ours."""
        import requests
        from azure.core.exceptions import (
            AzureError,
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
        from azure.identity import CredentialUnavailableError

        try:
            yield
        except CredentialUnavailableError as exc:
            raise CredentialsMissing(
                f"{NAME}: no usable credentials ({_first_line(exc.message)})",
                hint=f"Set {', '.join(SP_ENV)} and {SUBSCRIPTION_ENV}, pass --access-token-file "
                "(an sdk-auth JSON), or run `az login`.",
            ) from exc
        except ClientAuthenticationError as exc:
            if exc.status_code == 401:  # Resource Manager refused the bearer token
                raise ProviderAPIError(
                    NAME,
                    f"the API rejected the token from {self._source} (401 Unauthorized)",
                    hint=f"Set {self._source} to a token that has not expired "
                    "(`az account get-access-token`), or sign in as a service principal.",
                    code="unauthorized",
                ) from exc
            unreachable = _unreachable(exc)
            if unreachable is not None:
                error = no_usable_answer(NAME, self._authority, unreachable, AUTHORITY_ENV)
                error.hint = f"Check the network and proxy, or {AUTHORITY_ENV}; `-v` shows more."
                raise error from exc
            # Entra ID's answer (AADSTS7000215: Invalid client secret, an unknown tenant):
            # azure-identity keeps its words but not the HTTP status.
            words = _first_line(exc.message).removeprefix("Authentication failed: ")
            raise ProviderAPIError(
                NAME,
                f"Entra ID refused the sign-in with {self._source}: {words}",
                hint=f"Check {self._source} and the tenant and client ids beside it "
                "(`az ad sp create-for-rbac` prints a new secret).",
                code="unauthorized",
            ) from exc
        except HttpResponseError as exc:
            code = exc.error.code if exc.error and exc.error.code else ""
            text = _first_line(
                exc.error.message if exc.error and exc.error.message else exc.message
            )
            if exc.status_code == 403:
                raise ProviderAPIError(
                    NAME,
                    f"{text} ({code or 403})",
                    hint=f"The identity from {self._source} signed in but may not do this: give "
                    "it the Contributor role on the subscription.",
                    code=code,
                ) from exc
            if exc.status_code == 404:
                raise _Missing(NAME, f"{text} ({code or 404})", code=code or "NotFound") from exc
            if code in _CAPACITY_CODES or (
                code == "OperationNotAllowed" and "quota" in text.lower()
            ):
                raise CapacityError(
                    NAME,
                    f"{text} ({code})",
                    hint="Try another location (--region eastus,westus2 tries each in turn) or "
                    "size, or ask Azure to raise the subscription's vCPU quota.",
                    code=code,
                ) from exc
            server_side = (exc.status_code or 0) >= 500
            raise ProviderAPIError(
                NAME,
                f"{text} ({code or exc.status_code})",
                hint=f"The API or a proxy before it failed: retry shortly, and check "
                f"{ENDPOINT_ENV} / --endpoint-url."
                if server_side
                else None,
                code=code,
            ) from exc
        except requests.RequestException as exc:  # the boot diagnostics log, from storage
            why = network_cause(exc) or type(exc).__name__
            raise ProviderAPIError(NAME, f"cannot read the boot diagnostics log: {why}") from exc
        except (ServiceRequestError, ServiceResponseError) as exc:
            cause = _unreachable(exc) or exc
            raise no_usable_answer(NAME, self._endpoint, cause, ENDPOINT_ENV) from exc
        except AzureError as exc:
            raise ProviderAPIError(NAME, _first_line(exc.message)) from exc


def _group_name(host_id: str) -> str:
    return f"inletsctl-{host_id}"


def _host_id(vm: VirtualMachine) -> str:
    """``<resource group>/<VM name>`` from the VM's ARM id (…/resourceGroups/G/providers/…)."""
    parts = (vm.id or "").split("/")
    lowered = [p.lower() for p in parts]
    group = parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered else ""
    return f"{group}/{vm.name or ''}"


def _unreachable(exc: BaseException) -> BaseException | None:
    """The connection failure under a failed sign-in, if that is what it was.

    azure-identity raises ClientAuthenticationError for any failure to get a token, and
    azure-core keeps the transport's own error in ``inner_exception``, not as a cause.
    """
    from azure.core.exceptions import ServiceRequestError, ServiceResponseError

    err: BaseException | None = exc
    while err is not None:
        if isinstance(err, (ServiceRequestError, ServiceResponseError)):
            inner = err.inner_exception
            return inner if isinstance(inner, BaseException) else err
        err = err.__cause__ or err.__context__
    return None


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "no details"
