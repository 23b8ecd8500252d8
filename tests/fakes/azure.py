"""A stateful fake of the Azure Resource Manager and identity endpoints the provider uses.

It speaks HTTPS (azure-identity and azure-core refuse a bearer token or an authority
over plain HTTP) with a throwaway certificate for 127.0.0.1 in :attr:`FakeAzure.ca_file`;
clients trust it through ``REQUESTS_CA_BUNDLE``, as behind a TLS-inspecting proxy.

Identity, as MSAL asks for it with instance discovery off: OpenID discovery at
``/{tenant}/v2.0/.well-known/openid-configuration`` and a client-credentials token at
``/{tenant}/oauth2/v2.0/token`` (``invalid_client`` 401 for a wrong secret).

Resource Manager, as its REST reference documents it: ``{"error": {"code",
"message"}}`` bodies; resource groups (``$filter=tagName eq 'k' and tagValue eq
'v'``); ``{"value", "nextLink"}`` lists; PUTs that answer 201 with
``Azure-AsyncOperation`` (an operation that is ``InProgress`` for ``running_reads``
reads, then ``Succeeded`` or ``Failed`` with an error), a resource group DELETE that
answers 202 with ``Location`` (202 while running, then 200). With
``async_operations = False`` every call completes synchronously (200/201 with
``provisioningState: Succeeded``, DELETE 200), which ARM also documents, for a CLI
whose polling interval is seconds. References are checked (a NIC names an existing
NSG, subnet and public IP; a VM an existing NIC), as ARM does. ``retrieveBootDiagnosticsData``
answers SAS URLs of a VM's serial log (boot diagnostics on), which the fake then serves
as storage would, to a request that carries the signature and no bearer token.
"""

from __future__ import annotations

import base64
import copy
import itertools
import os
import re
import ssl
import tempfile
import uuid
from typing import Any
from urllib.parse import parse_qs

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response
from tunnel_core.tls import self_signed

LOCATIONS = ("eastus", "westus2", "westeurope", "northeurope")
SIZES = ("Standard_B1ls", "Standard_B1s", "Standard_B2s")
IMAGES = {("Debian", "debian-12", "12-gen2"), ("Canonical", "ubuntu-24_04-lts", "server")}
_ARM = r"/subscriptions/(?P<sub>[^/]+)"
_GROUP = _ARM + r"/resourcegroups/(?P<group>[^/]+)"
_TYPES = (
    "Microsoft.Network/networkSecurityGroups",
    "Microsoft.Network/virtualNetworks",
    "Microsoft.Network/publicIPAddresses",
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Compute/virtualMachines",
)
#: the order a resource group delete removes a group's resources in: dependents first
_DELETE_ORDER = (
    "Microsoft.Compute/virtualMachines",
    "Microsoft.Compute/disks",
    "Microsoft.Network/networkInterfaces",
    "Microsoft.Network/publicIPAddresses",
    "Microsoft.Network/virtualNetworks",
    "Microsoft.Network/networkSecurityGroups",
)
DEFAULT_RULES = [
    {"name": "AllowVnetInBound", "properties": {"priority": 65000, "access": "Allow"}},
    {"name": "AllowAzureLoadBalancerInBound", "properties": {"priority": 65001, "access": "Allow"}},
    {"name": "DenyAllInBound", "properties": {"priority": 65500, "access": "Deny"}},
]


class FakeAzure(JsonApiFake):
    steps = {
        "create_group": r"^PUT /subscriptions/[^/]+/resourcegroups/[^/ ]+ ",
        "create_nsg": r"^PUT \S+/networkSecurityGroups/",
        "create_vnet": r"^PUT \S+/virtualNetworks/",
        "create_ip": r"^PUT \S+/publicIPAddresses/",
        "create_nic": r"^PUT \S+/networkInterfaces/",
        "create_vm": r"^PUT \S+/virtualMachines/",
    }
    fault_answer = (500, "InternalServerError", "Encountered internal server error.")

    def __init__(self, token: str = "") -> None:
        super().__init__(token or f"eyJ0eXAiOiJKV1QifQ.{uuid.uuid4().hex}")
        self.subscription = "00000000-0000-4000-8000-000000000001"
        self.tenant = "11111111-1111-4111-8111-111111111111"
        self.client_id = "22222222-2222-4222-8222-222222222222"
        self.client_secret = f"secret-{uuid.uuid4().hex}"
        self.async_operations = True
        #: reads of an operation that still find it running
        self.running_reads = 1
        self.max_per_page = 50
        self.groups: dict[str, JSON] = {}
        #: lower-cased ARM id -> resource
        self.items: dict[str, JSON] = {}
        self.operations: dict[str, JSON] = {}
        #: decoded customData of each VM, by name
        self.user_data: dict[str, str] = {}
        #: ARM ids in the order deletes removed them
        self.deleted: list[str] = []
        #: (size, location) pairs the subscription may not use (a SKU restriction)
        self.restricted: set[tuple[str, str]] = set()
        #: location -> (code, message) with which a VM's creation there fails
        self.allocation_failures: dict[str, tuple[str, str]] = {}
        self._n = itertools.count(10)
        cert, key, _ = self_signed(["127.0.0.1"])
        self._dir = tempfile.TemporaryDirectory(prefix="fake-azure-")
        self.ca_file = os.path.join(self._dir.name, "ca.pem")
        key_file = os.path.join(self._dir.name, "key.pem")
        with open(self.ca_file, "w") as fh:
            fh.write(cert)
        with open(key_file, "w") as fh:
            fh.write(key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self._server.socket = context.wrap_socket(
            self._server.socket, server_side=True, do_handshake_on_connect=False
        )
        tenant = r"/(?P<tenant>[^/]+)"
        self.route("GET", tenant + r"/v2\.0/\.well-known/openid-configuration", self._openid)
        self.route("POST", tenant + r"/oauth2/v2\.0/token", self._token)
        self.route("GET", r"(?i)" + _ARM + r"/providers/Microsoft\.Compute/skus", self._skus)
        self.route("GET", r"(?i)" + _ARM + r"/resourcegroups", self._list_groups)
        self.route("PUT", r"(?i)" + _GROUP, self._put_group)
        self.route("GET", r"(?i)" + _GROUP, self._get_group)
        self.route("DELETE", r"(?i)" + _GROUP, self._delete_group)
        resource = _GROUP + r"/providers/(?P<type>[^/]+/[^/]+)/(?P<name>[^/]+)"
        self.route("PUT", r"(?i)" + resource, self._put)
        self.route("GET", r"(?i)" + resource, self._get)
        self.route("DELETE", r"(?i)" + resource, self._delete_vm)
        boot = resource + r"/retrieveBootDiagnosticsData"
        self.route("POST", r"(?i)" + boot, self._boot_diagnostics)
        self.route("GET", r"/bootdiagnostics/(?P<vm>[^/]+)/serialconsole\.log", self._serial_log)
        self.route("GET", r"(?i)" + _GROUP + r"/providers/(?P<type>[^/]+/[^/]+)", self._list_in)
        self.route("GET", r"(?i)" + _ARM + r"/providers/(?P<type>[^/]+/[^/]+)", self._list_all)
        operation = r"/providers/[^/]+/locations/[^/]+/operations/(?P<op>[^/]+)"
        self.route("GET", r"(?i)" + _ARM + operation, self._operation)
        self.route("GET", r"(?i)" + _ARM + r"/operationresults/(?P<op>[^/]+)", self._result)

    def stop(self) -> None:
        super().stop()
        self._dir.cleanup()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"https://{host!s}:{port}"

    def env(self) -> dict[str, str]:
        """A service principal's shell, as EnvironmentCredential reads it, aimed here."""
        return {
            "AZURE_TENANT_ID": self.tenant,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_CLIENT_SECRET": self.client_secret,
            "AZURE_SUBSCRIPTION_ID": self.subscription,
            "AZURE_AUTHORITY_HOST": self.base_url,
            "ARM_ENDPOINT": self.base_url,
            "REQUESTS_CA_BUNDLE": self.ca_file,
        }

    def sdk_auth(self) -> JSON:
        """What ``az ad sp create-for-rbac --sdk-auth`` prints, with this fake's endpoints."""
        return {
            "clientId": self.client_id,
            "clientSecret": self.client_secret,
            "subscriptionId": self.subscription,
            "tenantId": self.tenant,
            "activeDirectoryEndpointUrl": self.base_url,
            "resourceManagerEndpointUrl": self.base_url + "/",
            "activeDirectoryGraphResourceId": "https://graph.windows.net/",
            "sqlManagementEndpointUrl": "https://management.core.windows.net:8443/",
            "galleryEndpointUrl": "https://gallery.azure.com/",
            "managementEndpointUrl": "https://management.core.windows.net/",
        }

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """A VM the user made in the portal: its own group, their tags, a public IP."""
        with self.lock:
            n = next(self._n)
            group = f"users-rg-{n}"
            base = f"/subscriptions/{self.subscription}/resourceGroups/{group}/providers"
            where = {"location": "eastus", "tags": {"env": "prod"}}
            self._make_group(group, where)
            vnet = f"{base}/Microsoft.Network/virtualNetworks/vnet"
            pip = f"{base}/Microsoft.Network/publicIPAddresses/ip"
            nic = f"{base}/Microsoft.Network/networkInterfaces/nic"
            bodies = [
                (vnet, {"properties": {"subnets": [{"name": "default", "properties": {}}]}}),
                (pip, {"properties": {}}),
                (
                    nic,
                    {
                        "properties": {
                            "ipConfigurations": [
                                {
                                    "name": "ipconfig1",
                                    "properties": {
                                        "subnet": {"id": f"{vnet}/subnets/default"},
                                        "publicIPAddress": {"id": pip},
                                    },
                                }
                            ]
                        }
                    },
                ),
                (
                    f"{base}/Microsoft.Compute/virtualMachines/users-vm-{n}",
                    {
                        "properties": {
                            "hardwareProfile": {"vmSize": "Standard_B1s"},
                            "storageProfile": {
                                "imageReference": {
                                    "publisher": "Debian",
                                    "offer": "debian-12",
                                    "sku": "12-gen2",
                                    "version": "latest",
                                },
                                "osDisk": {"createOption": "FromImage"},
                            },
                            "osProfile": {"computerName": f"users-vm-{n}"},
                            "networkProfile": {"networkInterfaces": [{"id": nic}]},
                        }
                    },
                ),
            ]
            synchronous, self.async_operations = self.async_operations, False
            try:
                for arm_id, body in bodies:
                    answer = self._put(_request("PUT", arm_id, {**where, **body}), _parse(arm_id))
                    assert answer.status in (200, 201), answer.body
            finally:
                self.async_operations = synchronous
            vm = self.items[bodies[-1][0].lower()]
            return f"{group}/{vm['name']}", self.items[pip.lower()]["properties"]["ipAddress"]

    def resources(self) -> set[str]:
        with self.lock:
            return {f"resourceGroup:{g['name']}" for g in self.groups.values()} | {
                f"{r['type']}:{r['id']}" for r in self.items.values()
            }

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"error": {"code": code, "message": message}})

    def rate_limited(self) -> Response:
        answer = self.error(429, "TooManyRequests", "The request is being throttled.")
        answer.headers["Retry-After"] = "0"
        return answer

    def authorized(self, request: Request) -> bool:
        """The identity endpoints take no bearer token; Resource Manager takes ours."""
        if not request.path.lower().startswith("/subscriptions/"):
            return True
        return super().authorized(request)

    # -- identity -------------------------------------------------------------
    def _openid(self, request: Request, match: re.Match[str]) -> Response:
        if match["tenant"] != self.tenant:
            return Response(400, {"error": "invalid_tenant", "error_description": "AADSTS90002"})
        issuer = f"{self.base_url}/{self.tenant}"
        return Response(
            200,
            {
                "issuer": f"{issuer}/v2.0",
                "authorization_endpoint": f"{issuer}/oauth2/v2.0/authorize",
                "token_endpoint": f"{issuer}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
                "jwks_uri": f"{self.base_url}/{self.tenant}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "tenant_region_scope": "NA",
            },
        )

    def _token(self, request: Request, match: re.Match[str]) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.raw.decode()).items()}
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return Response(
                401,
                {
                    "error": "invalid_client",
                    "error_description": "AADSTS7000215: Invalid client secret provided. "
                    "Ensure the secret being sent in the request is the client secret value.",
                    "error_codes": [7000215],
                },
            )
        return Response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": self.token,
            },
        )

    # -- resource groups --------------------------------------------------------
    def _put_group(self, request: Request, match: re.Match[str]) -> Response:
        if (missing := self._subscription(match)) is not None:
            return missing
        return self._make_group(match["group"], request.body or {})

    def _make_group(self, name: str, body: JSON) -> Response:
        existing = self.groups.get(name.lower())
        group = {
            "id": f"/subscriptions/{self.subscription}/resourceGroups/{name}",
            "name": name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": body.get("location", ""),
            "tags": body.get("tags", {}),
            "properties": {"provisioningState": "Succeeded"},
        }
        self.groups[name.lower()] = group
        return Response(200 if existing else 201, group)

    def _get_group(self, request: Request, match: re.Match[str]) -> Response:
        group = self.groups.get(match["group"].lower())
        if group is None:
            return self._no_group(match["group"])
        return Response(200, group)

    def _list_groups(self, request: Request, match: re.Match[str]) -> Response:
        groups = list(self.groups.values())
        query = request.query.get("$filter", [""])[0]
        if query:
            term = re.fullmatch(r"tagName eq '([^']*)' and tagValue eq '([^']*)'", query)
            if term is None:
                return self.error(400, "InvalidFilterInQueryString", f"bad $filter: {query}")
            groups = [g for g in groups if g["tags"].get(term[1]) == term[2]]
        return Response(200, {"value": groups})

    def _delete_group(self, request: Request, match: re.Match[str]) -> Response:
        group = self.groups.pop(match["group"].lower(), None)
        if group is None:
            return self._no_group(match["group"])
        inside = [r for r in self.items.values() if r["group"].lower() == match["group"].lower()]
        for kind in _DELETE_ORDER:
            for item in (r for r in inside if r["type"] == kind):
                if item["id"].lower() in self.items:  # a VM's OS disk may have gone with it
                    self._remove(item)
        if not self.async_operations:
            return Response(200)
        op = self._operation_for(None)
        location = f"{self.base_url}/subscriptions/{self.subscription}/operationresults/{op}"
        return Response(202, headers={"Location": f"{location}?api-version=2025-04-01"})

    # -- resources --------------------------------------------------------------
    def _put(self, request: Request, match: re.Match[str]) -> Response:
        if (missing := self._subscription(match)) is not None:
            return missing
        kind = _canonical_type(match["type"])
        if kind is None:
            return self.error(400, "InvalidResourceType", f"type {match['type']} is not served")
        group = self.groups.get(match["group"].lower())
        if group is None:
            return self._no_group(match["group"])
        body: JSON = request.body or {}
        arm_id = (
            f"/subscriptions/{self.subscription}/resourceGroups/{group['name']}"
            f"/providers/{kind}/{match['name']}"
        )
        properties = copy.deepcopy(body.get("properties") or {})  # the request stays as sent
        refused = self._check(kind, body, properties)
        if refused is not None:
            return refused
        existing = self.items.get(arm_id.lower())
        resource: JSON = {
            "id": arm_id,
            "name": match["name"],
            "type": kind,
            "location": body.get("location", group["location"]),
            "tags": body.get("tags", {}),
            "group": group["name"],
            **({"sku": body["sku"]} if "sku" in body else {}),
            "properties": properties,
        }
        self._fill(resource, existing)
        self.items[arm_id.lower()] = resource
        failure = None
        if kind.endswith("virtualMachines"):
            failure = self.allocation_failures.get(resource["location"])
        if not self.async_operations:
            properties["provisioningState"] = "Failed" if failure else "Succeeded"
            if failure:
                return self.error(409, *failure)
            return Response(200 if existing else 201, self._shown(resource))
        properties["provisioningState"] = "Updating" if existing else "Creating"
        op = self._operation_for(resource, failure)
        namespace = kind.split("/")[0]
        status_url = (
            f"{self.base_url}/subscriptions/{self.subscription}/providers/{namespace}"
            f"/locations/{resource['location']}/operations/{op}?api-version=2026-03-01"
        )
        return Response(
            200 if existing else 201,
            self._shown(resource),
            headers={"Azure-AsyncOperation": status_url},
        )

    def _get(self, request: Request, match: re.Match[str]) -> Response:
        kind = _canonical_type(match["type"])
        group = match["group"].lower()
        for item in self.items.values():
            if (item["type"], item["group"].lower(), item["name"]) == (kind, group, match["name"]):
                return Response(200, self._shown(item, request))
        if group not in self.groups:
            return self._no_group(match["group"])
        return self.error(
            404,
            "ResourceNotFound",
            f"The Resource '{match['type']}/{match['name']}' under resource group "
            f"'{match['group']}' was not found.",
        )

    def _delete_vm(self, request: Request, match: re.Match[str]) -> Response:
        found = self._get(request, match)
        if found.status != 200:
            return found
        item = self.items[found.body["id"].lower()]
        if item["type"] != "Microsoft.Compute/virtualMachines":
            return self.error(405, "MethodNotAllowed", "only VMs are deleted one by one here")
        self._remove(item)
        if not self.async_operations:
            return Response(200)
        op = self._operation_for(None)
        status_url = (
            f"{self.base_url}/subscriptions/{self.subscription}/providers/Microsoft.Compute"
            f"/locations/{item['location']}/operations/{op}?api-version=2026-04-01"
        )
        return Response(202, headers={"Azure-AsyncOperation": status_url})

    def _boot_diagnostics(self, request: Request, match: re.Match[str]) -> Response:
        """SAS URLs of the VM's boot diagnostics blobs, as ``retrieveBootDiagnosticsData``
        answers them; served here too, without a bearer token, as storage does."""
        found = self._get(request, match)
        if found.status != 200:
            return found
        vm = found.body["properties"]
        if not vm.get("diagnosticsProfile", {}).get("bootDiagnostics", {}).get("enabled"):
            return self.error(409, "OperationNotAllowed", "Boot diagnostics are not enabled.")
        blob = f"{self.base_url}/bootdiagnostics/{vm['vmId']}"
        sas = "sv=2021-08-06&se=2026-12-01T10%3A05%3A00Z&sr=b&sp=r&sig=c2lnbmF0dXJl"
        return Response(
            200,
            {
                "consoleScreenshotBlobUri": f"{blob}/screenshot.bmp?{sas}",
                "serialConsoleLogBlobUri": f"{blob}/serialconsole.log?{sas}",
            },
        )

    def _serial_log(self, request: Request, match: re.Match[str]) -> Response:
        """The serial console: what cloud-init says it ran (the blob's bytes, as text)."""
        vm = next(
            (r for r in self.items.values() if r["properties"].get("vmId") == match["vm"]), None
        )
        if vm is None or "sig" not in request.query:
            return self.error(404, "BlobNotFound", "The specified blob does not exist.")
        line = f"cloud-init[812]: Cloud-init v. 22.4.2 running 'modules:final' on {vm['name']}\n"
        return Response(
            200, headers={"Content-Type": "application/octet-stream"}, raw=line.encode()
        )

    def _list_in(self, request: Request, match: re.Match[str]) -> Response:
        kind = _canonical_type(match["type"])
        group = match["group"].lower()
        if group not in self.groups:
            return self._no_group(match["group"])
        found = [
            self._shown(r)
            for r in self.items.values()
            if (r["type"], r["group"].lower()) == (kind, group)
        ]
        return Response(200, {"value": found})

    def _list_all(self, request: Request, match: re.Match[str]) -> Response:
        kind = _canonical_type(match["type"])
        everything = [self._shown(r, request) for r in self.items.values() if r["type"] == kind]
        start = int(request.query.get("$skiptoken", ["0"])[0])
        chunk = everything[start : start + self.max_per_page]
        body: JSON = {"value": chunk}
        if start + self.max_per_page < len(everything):
            body["nextLink"] = (
                f"{self.base_url}{request.path}?api-version=2026-04-01"
                + "".join(f"&statusOnly={v}" for v in request.query.get("statusOnly", []))
                + f"&$skiptoken={start + self.max_per_page}"
            )
        return Response(200, body)

    def _skus(self, request: Request, match: re.Match[str]) -> Response:
        skus: list[JSON] = [
            {
                "resourceType": "disks",
                "name": "Standard_LRS",
                "tier": "Standard",
                "locations": [LOCATIONS[0]],
                "restrictions": [],
            }
        ]
        for size in SIZES:
            for location in LOCATIONS:
                restrictions = (
                    [
                        {
                            "type": "Location",
                            "values": [location],
                            "restrictionInfo": {"locations": [location]},
                            "reasonCode": "NotAvailableForSubscription",
                        }
                    ]
                    if (size, location) in self.restricted
                    else []
                )
                skus.append(
                    {
                        "resourceType": "virtualMachines",
                        "name": size,
                        "tier": "Standard",
                        "size": size.removeprefix("Standard_"),
                        "family": "standardBSFamily",
                        "locations": [location],
                        "locationInfo": [{"location": location, "zones": ["1", "2", "3"]}],
                        "capabilities": [{"name": "vCPUs", "value": "1"}],
                        "restrictions": restrictions,
                    }
                )
        return Response(200, {"value": skus})

    # -- long-running operations ----------------------------------------------
    def _operation_for(self, resource: JSON | None, failure: tuple[str, str] | None = None) -> str:
        op = str(uuid.uuid4())
        self.operations[op] = {"reads": 0, "resource": resource, "failure": failure}
        return op

    def _advance(self, op: str) -> JSON | None:
        """The operation after one more read: ``done`` once read ``running_reads`` times."""
        state = self.operations.get(op)
        if state is None:
            return None
        state["reads"] += 1
        state["done"] = state["reads"] > self.running_reads
        if state["done"] and state["resource"] is not None:
            failed = state["failure"] is not None
            state["resource"]["properties"]["provisioningState"] = (
                "Failed" if failed else "Succeeded"
            )
        return state

    def _operation(self, request: Request, match: re.Match[str]) -> Response:
        state = self._advance(match["op"])
        if state is None:
            return self.error(404, "NotFound", f"operation {match['op']} not found")
        body: JSON = {"name": match["op"], "startTime": "2026-12-01T10:00:00Z"}
        if not state["done"]:
            return Response(200, {**body, "status": "InProgress"})
        if state["failure"] is not None:
            code, message = state["failure"]
            return Response(
                200, {**body, "status": "Failed", "error": {"code": code, "message": message}}
            )
        return Response(200, {**body, "status": "Succeeded", "endTime": "2026-12-01T10:01:00Z"})

    def _result(self, request: Request, match: re.Match[str]) -> Response:
        state = self._advance(match["op"])
        if state is None:
            return self.error(404, "NotFound", f"operation {match['op']} not found")
        if not state["done"]:
            location = f"{self.base_url}{request.path}?api-version=2025-04-01"
            return Response(202, headers={"Location": location})
        return Response(200)

    # -- rules ARM applies ------------------------------------------------------
    def _subscription(self, match: re.Match[str]) -> Response | None:
        if match["sub"] == self.subscription:
            return None
        return self.error(
            404, "SubscriptionNotFound", f"The subscription '{match['sub']}' could not be found."
        )

    def _no_group(self, name: str) -> Response:
        return self.error(
            404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."
        )

    def _exists(self, reference: Any) -> bool:
        arm_id = (reference or {}).get("id") or ""
        if "/subnets/" in arm_id.lower():
            vnet_id, _, subnet = arm_id.rpartition("/subnets/")
            vnet = self.items.get(vnet_id.lower())
            return vnet is not None and any(
                s["name"] == subnet for s in vnet["properties"]["subnets"]
            )
        return arm_id.lower() in self.items

    def _check(self, kind: str, body: JSON, properties: JSON) -> Response | None:
        if kind.endswith("networkInterfaces"):
            refs = (
                [properties.get("networkSecurityGroup")]
                if properties.get("networkSecurityGroup")
                else []
            )
            for config in properties.get("ipConfigurations", []):
                refs += [
                    config["properties"].get("subnet"),
                    config["properties"].get("publicIPAddress"),
                ]
            if not all(self._exists(ref) for ref in refs if ref is not None):
                return self.error(
                    400, "InvalidResourceReference", "a referenced resource was not found"
                )
        if kind.endswith("virtualMachines"):
            size = properties.get("hardwareProfile", {}).get("vmSize")
            location = body.get("location")
            if size not in SIZES or location not in LOCATIONS:
                return self.error(
                    400, "InvalidParameter", f"size {size} in {location} is not offered"
                )
            if (size, location) in self.restricted:
                return self.error(
                    409,
                    "SkuNotAvailable",
                    f"The requested VM size {size} is currently not available in location "
                    f"'{location}'.",
                )
            image = properties.get("storageProfile", {}).get("imageReference", {})
            if (image.get("publisher"), image.get("offer"), image.get("sku")) not in IMAGES:
                return self.error(404, "PlatformImageNotFound", f"image {image} not found")
            nics = properties.get("networkProfile", {}).get("networkInterfaces", [])
            if not nics or not all(self._exists(nic) for nic in nics):
                return self.error(400, "InvalidResourceReference", "the NIC was not found")
            custom = properties.get("osProfile", {}).get("customData")
            if custom is not None and len(base64.b64decode(custom)) > 65535:
                return self.error(400, "InvalidParameter", "customData is too long")
        return None

    def _fill(self, resource: JSON, existing: JSON | None) -> None:
        """What ARM adds on create: ids of subnets and rules, an address, an OS disk."""
        properties = resource["properties"]
        kind = resource["type"]
        if kind.endswith("virtualNetworks"):
            for subnet in properties.get("subnets", []):
                subnet["id"] = f"{resource['id']}/subnets/{subnet['name']}"
        elif kind.endswith("networkSecurityGroups"):
            for rule in properties.get("securityRules", []):
                rule["id"] = f"{resource['id']}/securityRules/{rule['name']}"
            properties["defaultSecurityRules"] = DEFAULT_RULES
        elif kind.endswith("publicIPAddresses"):
            old = existing["properties"].get("ipAddress") if existing else None
            properties["ipAddress"] = old or f"203.0.113.{next(self._n)}"
        elif kind.endswith("networkInterfaces"):
            for config in properties.get("ipConfigurations", []):
                config["id"] = f"{resource['id']}/ipConfigurations/{config['name']}"
                pip = config["properties"].get("publicIPAddress")
                if pip is not None:
                    self.items[pip["id"].lower()]["properties"]["ipConfiguration"] = {
                        "id": config["id"]
                    }
        elif kind.endswith("virtualMachines"):
            properties["vmId"] = existing["properties"]["vmId"] if existing else str(uuid.uuid4())
            os_profile = properties.get("osProfile", {})
            custom = os_profile.pop("customData", None)  # never shown again, as on ARM
            os_profile.pop("adminPassword", None)
            if custom is not None:
                self.user_data[resource["name"]] = base64.b64decode(custom).decode()
            if existing is None:
                disk_name = f"{resource['name']}_OsDisk_1_{uuid.uuid4().hex}"
                disk_id = resource["id"].replace(
                    f"virtualMachines/{resource['name']}", f"disks/{disk_name}"
                )
                self.items[disk_id.lower()] = {
                    "id": disk_id,
                    "name": disk_name,
                    "type": "Microsoft.Compute/disks",
                    "location": resource["location"],
                    "tags": {},
                    "group": resource["group"],
                    "properties": {"provisioningState": "Succeeded"},
                }

    def _shown(self, resource: JSON, request: Request | None = None) -> JSON:
        """The resource as ARM answers: no bookkeeping, and an instance view on ``$expand``."""
        shown = {k: v for k, v in resource.items() if k != "group"}
        query = request.query if request else {}
        expanded = query.get("$expand") == ["instanceView"] or query.get("statusOnly") == ["true"]
        if resource["type"].endswith("virtualMachines") and expanded:
            state = resource["properties"].get("provisioningState", "")
            statuses = [{"code": f"ProvisioningState/{state.lower()}"}]
            if state == "Succeeded":
                statuses.append({"code": "PowerState/running", "displayStatus": "VM running"})
            shown["properties"] = {**shown["properties"], "instanceView": {"statuses": statuses}}
        return shown

    def _remove(self, item: JSON) -> None:
        del self.items[item["id"].lower()]
        self.deleted.append(item["id"])
        if item["type"].endswith("virtualMachines"):
            disk_option = item["properties"]["storageProfile"]["osDisk"].get("deleteOption")
            if disk_option == "Delete":
                for disk in [r for r in self.items.values() if r["type"].endswith("/disks")]:
                    if (
                        disk["name"].startswith(f"{item['name']}_OsDisk_")
                        and disk["group"] == item["group"]
                    ):
                        del self.items[disk["id"].lower()]
                        self.deleted.append(disk["id"])


def _canonical_type(text: str) -> str | None:
    """ARM's resource types are case-insensitive; the fake stores the documented spelling."""
    return next(
        (t for t in (*_TYPES, "Microsoft.Compute/disks") if t.lower() == text.lower()), None
    )


def _request(method: str, path: str, body: JSON) -> Request:
    return Request(method, path, {}, body, {})


def _parse(arm_id: str) -> re.Match[str]:
    match = re.fullmatch(
        r"(?i)" + _GROUP + r"/providers/(?P<type>[^/]+/[^/]+)/(?P<name>[^/]+)", arm_id
    )
    assert match is not None, arm_id
    return match
