"""A stateful fake of the Compute Engine API v1 endpoints that the provider uses.

Shapes follow the REST reference and google-cloud-compute's REST transport: paths under
``/compute/v1/projects/{project}``, lists as ``{"items", "nextPageToken"}`` paged by
``maxResults`` / ``pageToken``, the aggregated instance list keyed by ``zones/<zone>``
(a zone without instances carries the ``NO_RESULTS_ON_PAGE`` warning), the two filter
grammars the provider sends (``labels.KEY = "VALUE"`` and ``name eq "RE2"``), and
``{"error": {"code", "message", "errors": [{"reason", "domain", "message"}], "status"}}``
error bodies. Inserts and deletes answer an Operation (``RUNNING``) that ``.../wait``
reports ``DONE`` after ``running_waits`` calls; an instance insert refused for capacity
(``exhausted``) ends as a DONE operation with ``error.errors`` and no instance, as on
the real API; an instance delete removes the instance when its operation is done.

Requests are authorised as Google's front end does: a bearer access token (``token``),
or the self-signed JWT that google-auth makes from a service-account key (which the
compute clients use instead of a token exchange), verified against the key this fake
issued (``service_account_info``).
"""

from __future__ import annotations

import itertools
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response

PROJECT = "inletsctl-test"
ZONES = ("us-central1-a", "us-central1-b", "us-east1-b", "europe-west1-b")
MACHINE_TYPES = ("e2-micro", "e2-small", "e2-medium")
IMAGES = (
    "projects/debian-cloud/global/images/family/debian-12",
    "projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64",
)
LINK = "https://www.googleapis.com/compute/v1"
NOW = "2026-12-01T10:00:00.000-08:00"
#: "size must be less than or equal to 262144 bytes (256 KiB)", per metadata value
METADATA_VALUE_MAX = 262144
SCOPE = "https://www.googleapis.com/auth/compute"
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED"}  # fmt: skip
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


@cache
def _key_pem() -> tuple[str, str]:
    """(private, public) PEM of one RSA key per test process: generating is slow."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class FakeGce(JsonApiFake):
    steps = {
        "create_deny_rule": r'^POST /compute/v1/projects/[^/ ]+/global/firewalls .*"denied"',
        "create_allow_rule": r'^POST /compute/v1/projects/[^/ ]+/global/firewalls .*"allowed"',
        "create_instance": r"^POST /compute/v1/projects/[^/ ]+/zones/[^/ ]+/instances ",
    }
    prefix = "/compute/v1"
    fault_answer = (500, "backendError", "Internal error. Please try again.")

    def __init__(self, token: str = "test-access-token") -> None:
        super().__init__(token)
        self.project = PROJECT
        self.client_email = f"inletsctl@{PROJECT}.iam.gserviceaccount.com"
        #: the page size when a request names none (the API's is 500)
        self.max_results = 500
        #: (zone, name) -> instance, as the API shows it
        self.instances: dict[tuple[str, str], JSON] = {}
        #: name -> firewall rule
        self.firewalls: dict[str, JSON] = {}
        self.operations: dict[str, JSON] = {}
        #: calls of ``wait`` that still find an operation running
        self.running_waits = 0
        #: zone -> (code, message) with which an instance insert's operation fails there
        self.exhausted: dict[str, tuple[str, str]] = {}
        #: instances that were alive when a firewall rule targeting them was deleted
        self.unguarded: list[str] = []
        self._waits: dict[str, int] = {}
        self._on_done: dict[str, Any] = {}
        self._ids = itertools.count(7_000_000_000_000_000_001)
        self._ips = itertools.count(10)
        project = r"/projects/([^/]+)"
        self.route("GET", project + r"/zones", self._list_zones)
        self.route("GET", project + r"/zones/([^/]+)/machineTypes", self._list_machine_types)
        self.route("GET", project + r"/zones/([^/]+)/machineTypes/([^/]+)", self._get_machine_type)
        self.route("POST", project + r"/global/firewalls", self._insert_firewall)
        self.route("GET", project + r"/global/firewalls", self._list_firewalls)
        self.route("DELETE", project + r"/global/firewalls/([^/]+)", self._delete_firewall)
        self.route("POST", project + r"/zones/([^/]+)/instances", self._insert_instance)
        self.route("GET", project + r"/aggregated/instances", self._aggregated_instances)
        self.route("GET", project + r"/zones/([^/]+)/instances/([^/]+)", self._get_instance)
        self.route("DELETE", project + r"/zones/([^/]+)/instances/([^/]+)", self._delete_instance)
        self.route("GET", project + r"/zones/([^/]+)/instances/([^/]+)/serialPort", self._serial)
        self.route("POST", project + r"/zones/([^/]+)/operations/([^/]+)/wait", self._wait)
        self.route("POST", project + r"/global/operations/([^/]+)/wait", self._wait_global)

    # -- credentials --------------------------------------------------------
    def service_account_info(self) -> JSON:
        """A service-account key of this fake's, as the console downloads one."""
        private, _ = _key_pem()
        return {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": "0123456789abcdef0123456789abcdef01234567",
            "private_key": private,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": f"{self.base_url.removesuffix(self.prefix)}/token",
            "universe_domain": "googleapis.com",
        }

    def write_key(self, path: Path) -> Path:
        path.write_text(json.dumps(self.service_account_info()))
        return path

    def authorized(self, request: Request) -> bool:
        """A bearer access token, or a self-signed JWT of our service account's key."""
        from google.auth import jwt

        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token == self.token:
            return True
        try:
            claims = jwt.decode(token, certs=_key_pem()[1])
        except ValueError:
            return False
        scopes = str(claims.get("scope", "")).split()
        return claims.get("iss") == self.client_email and SCOPE in scopes

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """An instance the user made in the console: no labels of ours."""
        with self.lock:
            zone = ZONES[0]
            name = f"users-own-{len(self.instances)}"
            body = {
                "name": name,
                "machineType": f"zones/{zone}/machineTypes/e2-small",
                "labels": {"env": "prod"},
                "disks": [{"boot": True, "initializeParams": {"sourceImage": IMAGES[0]}}],
                "networkInterfaces": [{"network": "global/networks/default"}],
            }
            self._insert(self.project, zone, body)
            instance = self.instances[(zone, name)]
            return f"{zone}/{name}", _nat_ip(instance)

    def resources(self) -> set[str]:
        with self.lock:
            return {f"instance:{z}/{n}" for z, n in self.instances} | {
                f"firewall:{name}" for name in self.firewalls
            }

    def user_data(self, instance: JSON) -> str:
        items = instance.get("metadata", {}).get("items", [])
        return next((i["value"] for i in items if i["key"] == "user-data"), "")

    def error(self, status: int, code: str, message: str) -> Response:
        if status == 401:
            code, message = "authError", _UNAUTHENTICATED
        return Response(
            status,
            {
                "error": {
                    "code": status,
                    "message": message,
                    "errors": [{"message": message, "domain": "global", "reason": code}],
                    "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "UNKNOWN"),
                }
            },
        )

    def rate_limited(self) -> Response:
        return self.error(429, "rateLimitExceeded", "Rate Limit Exceeded")

    # -- plumbing -------------------------------------------------------------
    def _check_project(self, project: str) -> Response | None:
        if project != self.project:
            return self.error(
                403, "forbidden", f"Required 'compute' permission for 'projects/{project}'"
            )
        return None

    def _page(self, kind: str, items: list[JSON], request: Request) -> JSON:
        size = min(int(request.query.get("maxResults", [str(self.max_results)])[0]), 500)
        start = int(request.query.get("pageToken", ["0"])[0])
        body: JSON = {"kind": kind, "id": request.path, "selfLink": LINK + request.path}
        if items[start : start + size]:
            body["items"] = items[start : start + size]
        if start + size < len(items):
            body["nextPageToken"] = str(start + size)
        return body

    def _operation(self, kind: str, target: str, zone: str = "", on_done: Any = None) -> Response:
        """A RUNNING operation on ``target``; ``on_done(op)`` runs when it is DONE."""
        n = next(self._ids)
        name = f"operation-{n}-{kind}"
        where = f"{LINK}/projects/{self.project}" + (f"/zones/{zone}" if zone else "/global")
        op: JSON = {
            "kind": "compute#operation",
            "id": str(n),
            "name": name,
            "operationType": kind,
            "targetLink": target,
            "status": "RUNNING",
            "user": self.client_email,
            "progress": 0,
            "insertTime": NOW,
            "startTime": NOW,
            "selfLink": f"{where}/operations/{name}",
        }
        if zone:
            op["zone"] = f"{LINK}/projects/{self.project}/zones/{zone}"
        self.operations[name] = op
        self._on_done[name] = on_done
        return Response(200, dict(op))

    def _finish(self, name: str) -> Response:
        op = self.operations.get(name)
        if op is None:
            return self.error(404, "notFound", f"The resource 'operations/{name}' was not found")
        self._waits[name] = self._waits.get(name, 0) + 1
        if op["status"] != "DONE" and self._waits[name] > self.running_waits:
            op.update(status="DONE", progress=100, endTime=NOW)
            done = self._on_done.pop(name, None)
            if done is not None:
                done(op)
        return Response(200, dict(op))

    def _wait(self, request: Request, match: re.Match[str]) -> Response:
        return self._check_project(match.group(1)) or self._finish(match.group(3))

    def _wait_global(self, request: Request, match: re.Match[str]) -> Response:
        return self._check_project(match.group(1)) or self._finish(match.group(2))

    # -- zones and machine types ----------------------------------------------
    def _zone(self, name: str) -> JSON:
        region = name.rsplit("-", 1)[0]
        return {
            "kind": "compute#zone",
            "id": str(2000 + ZONES.index(name)),
            "name": name,
            "description": name,
            "status": "UP",
            "region": f"{LINK}/projects/{self.project}/regions/{region}",
            "selfLink": f"{LINK}/projects/{self.project}/zones/{name}",
        }

    def _list_zones(self, request: Request, match: re.Match[str]) -> Response:
        refused = self._check_project(match.group(1))
        zones = [self._zone(z) for z in ZONES]
        return refused or Response(200, self._page("compute#zoneList", zones, request))

    def _machine_type(self, zone: str, name: str) -> JSON:
        return {
            "kind": "compute#machineType",
            "id": str(1000 + MACHINE_TYPES.index(name)),
            "name": name,
            "guestCpus": 2,
            "memoryMb": 1024 * (1 + MACHINE_TYPES.index(name)),
            "zone": zone,
            "selfLink": f"{LINK}/projects/{self.project}/zones/{zone}/machineTypes/{name}",
        }

    def _list_machine_types(self, request: Request, match: re.Match[str]) -> Response:
        project, zone = match.groups()
        types = [self._machine_type(zone, m) for m in MACHINE_TYPES]
        refused = self._check_project(project)
        return refused or Response(200, self._page("compute#machineTypeList", types, request))

    def _get_machine_type(self, request: Request, match: re.Match[str]) -> Response:
        project, zone, name = match.groups()
        if name not in MACHINE_TYPES or zone not in ZONES:
            return self.error(
                404,
                "notFound",
                f"The resource 'projects/{project}/zones/{zone}/machineTypes/{name}' was not found",
            )
        return self._check_project(project) or Response(200, self._machine_type(zone, name))

    # -- firewall rules -------------------------------------------------------
    def _insert_firewall(self, request: Request, match: re.Match[str]) -> Response:
        refused = self._check_project(match.group(1))
        if refused:
            return refused
        body: JSON = request.body or {}
        name = str(body.get("name", ""))
        ranges = body.get("sourceRanges", [])
        if not _NAME.fullmatch(name):
            return self.error(400, "invalid", f"Invalid value for field 'resource.name': '{name}'")
        if body.get("network") != "global/networks/default" or body.get("direction") != "INGRESS":
            return self.error(400, "invalid", "Invalid value for field 'resource.network'")
        if len({":" in r for r in ranges}) > 1:
            return self.error(
                400,
                "invalid",
                "Invalid value for field 'resource.sourceRanges': IPv4 and IPv6 ranges "
                "cannot be mixed in one rule.",
            )
        if ("allowed" in body) == ("denied" in body):
            return self.error(400, "invalid", "Exactly one of 'allowed' or 'denied' must be set.")
        if not all(_NAME.fullmatch(t) for t in body.get("targetTags", [])):
            return self.error(400, "invalid", "Invalid value for field 'resource.targetTags'")
        if name in self.firewalls:
            return self.error(
                409,
                "alreadyExists",
                f"The resource 'projects/{self.project}/global/firewalls/{name}' already exists",
            )
        link = f"{LINK}/projects/{self.project}/global/firewalls/{name}"
        self.firewalls[name] = {
            "kind": "compute#firewall",
            "id": str(next(self._ids)),
            "creationTimestamp": NOW,
            "priority": 1000,
            "disabled": False,
            "selfLink": link,
            **body,
        }
        return self._operation("insert", link)

    def _list_firewalls(self, request: Request, match: re.Match[str]) -> Response:
        refused = self._check_project(match.group(1))
        if refused:
            return refused
        wanted = request.query.get("filter", [""])[0]
        rules = list(self.firewalls.values())
        if wanted:
            pattern = re.fullmatch(r'name eq "([^"]*)"', wanted)
            if pattern is None:
                return self.error(400, "invalid", f"Invalid value for field 'filter': '{wanted}'")
            rules = [r for r in rules if re.fullmatch(pattern.group(1), r["name"])]
        return Response(200, self._page("compute#firewallList", rules, request))

    def _delete_firewall(self, request: Request, match: re.Match[str]) -> Response:
        project, name = match.groups()
        rule = self.firewalls.get(name)
        if rule is None:
            return self.error(
                404, "notFound", f"The resource 'projects/{project}/global/firewalls/{name}' "
                "was not found",
            )  # fmt: skip
        refused = self._check_project(project)
        if refused:
            return refused
        targets = set(rule.get("targetTags", []))
        for (zone, vm), instance in self.instances.items():
            if targets & set(instance.get("tags", {}).get("items", [])):
                self.unguarded.append(f"{zone}/{vm}")
        del self.firewalls[name]
        return self._operation("delete", rule["selfLink"])

    # -- instances ------------------------------------------------------------
    def _insert_instance(self, request: Request, match: re.Match[str]) -> Response:
        project, zone = match.groups()
        return self._check_project(project) or self._insert(project, zone, request.body or {})

    def _insert(self, project: str, zone: str, body: JSON) -> Response:
        name = str(body.get("name", ""))
        invalid = self._invalid_instance(zone, body)
        if invalid:
            return invalid
        if (zone, name) in self.instances:
            return self.error(
                409,
                "alreadyExists",
                f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists",
            )
        link = f"{LINK}/projects/{project}/zones/{zone}/instances/{name}"
        if zone in self.exhausted:
            code, message = self.exhausted[zone]

            def fail(op: JSON) -> None:
                op.update(
                    error={"errors": [{"code": code, "message": message}]},
                    httpErrorStatusCode=503,
                    httpErrorMessage="SERVICE UNAVAILABLE",
                )

            return self._operation("insert", link, zone, fail)
        n = next(self._ips)
        disk = body["disks"][0]
        self.instances[(zone, name)] = {
            "kind": "compute#instance",
            "id": str(next(self._ids)),
            "creationTimestamp": NOW,
            "name": name,
            "tags": {"fingerprint": "42WmSpB8rSM=", **body.get("tags", {})},
            "machineType": f"{LINK}/projects/{project}/{body['machineType']}",
            "status": "PROVISIONING",
            "zone": f"{LINK}/projects/{project}/zones/{zone}",
            "networkInterfaces": [
                {
                    "kind": "compute#networkInterface",
                    "network": f"{LINK}/projects/{project}/global/networks/default",
                    "networkIP": f"10.128.0.{n}",
                    "name": "nic0",
                    "stackType": "IPV4_ONLY",
                    "accessConfigs": [
                        {
                            "kind": "compute#accessConfig",
                            "type": "ONE_TO_ONE_NAT",
                            "name": "External NAT",
                            "natIP": f"203.0.113.{n}",
                            "networkTier": "PREMIUM",
                        }
                    ],
                }
            ],
            "disks": [
                {
                    "kind": "compute#attachedDisk",
                    "boot": True,
                    "autoDelete": disk.get("autoDelete", False),
                    "source": f"{LINK}/projects/{project}/zones/{zone}/disks/{name}",
                    "labels": disk.get("initializeParams", {}).get("labels", {}),
                    "sourceImage": disk["initializeParams"]["sourceImage"],
                }
            ],
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": "x",
                **body.get("metadata", {}),
            },
            "labels": body.get("labels", {}),
            "selfLink": link,
        }
        return self._operation("insert", link, zone)

    def _invalid_instance(self, zone: str, body: JSON) -> Response | None:
        """The API's 400/404 for an insert it refuses outright, or None."""
        name = str(body.get("name", ""))
        disks = body.get("disks", [])
        image = disks[0].get("initializeParams", {}).get("sourceImage", "") if disks else ""
        labels: dict[str, str] = body.get("labels", {})
        items = body.get("metadata", {}).get("items", [])
        if zone not in ZONES:
            return self.error(404, "notFound", f"The resource 'zones/{zone}' was not found")
        if not _NAME.fullmatch(name):
            return self.error(400, "invalid", f"Invalid value for field 'resource.name': '{name}'")
        if str(body.get("machineType", "")) not in {
            f"zones/{zone}/machineTypes/{m}" for m in MACHINE_TYPES
        }:
            return self.error(400, "invalid", "Invalid value for field 'resource.machineType'")
        if image not in IMAGES:
            return self.error(404, "notFound", f"The resource '{image}' was not found")
        if not all(
            _LABEL_KEY.fullmatch(k) and _LABEL_VALUE.fullmatch(v) for k, v in labels.items()
        ):
            return self.error(400, "invalid", "Invalid value for field 'resource.labels'")
        if any(len(i.get("value", "").encode()) > METADATA_VALUE_MAX for i in items):
            return self.error(400, "invalid", "Metadata value exceeds the 256 KiB limit")
        interfaces = body.get("networkInterfaces", [])
        if [i.get("network") for i in interfaces] != ["global/networks/default"]:
            return self.error(
                400, "invalid", "Invalid value for field 'resource.networkInterfaces'"
            )
        return None

    def _read(self, key: tuple[str, str]) -> JSON:
        """The instance as the API shows it now: STAGING at its first read, then RUNNING."""
        instance = self.instances[key]
        instance["status"] = "STAGING" if instance["status"] == "PROVISIONING" else "RUNNING"
        return instance

    def _aggregated_instances(self, request: Request, match: re.Match[str]) -> Response:
        refused = self._check_project(match.group(1))
        if refused:
            return refused
        wanted = request.query.get("filter", [""])[0]
        keys = list(self.instances)
        if wanted:
            term = re.fullmatch(r'labels\.([a-z][a-z0-9_-]*) = "([^"]*)"', wanted)
            if term is None:
                return self.error(400, "invalid", f"Invalid value for field 'filter': '{wanted}'")
            key, value = term.groups()
            keys = [k for k in keys if self.instances[k].get("labels", {}).get(key) == value]
        chunk = self._page("compute#instanceAggregatedList", [self._read(k) for k in keys], request)
        scoped: dict[str, JSON] = {f"zones/{z}": {} for z in ZONES}
        for instance in chunk.pop("items", []):
            scoped[f"zones/{instance['zone'].rsplit('/', 1)[-1]}"].setdefault(
                "instances", []
            ).append(instance)
        for scope, value in scoped.items():
            if not value:
                value["warning"] = {
                    "code": "NO_RESULTS_ON_PAGE",
                    "message": f"There are no results for scope '{scope}' on this page.",
                    "data": [{"key": "scope", "value": scope}],
                }
        return Response(200, {**chunk, "items": scoped})

    def _missing(self, project: str, zone: str, name: str) -> Response:
        return self.error(
            404, "notFound", f"The resource 'projects/{project}/zones/{zone}/instances/{name}' "
            "was not found",
        )  # fmt: skip

    def _get_instance(self, request: Request, match: re.Match[str]) -> Response:
        project, zone, name = match.groups()
        if (zone, name) not in self.instances:
            return self._missing(project, zone, name)
        return self._check_project(project) or Response(200, self._read((zone, name)))

    def _delete_instance(self, request: Request, match: re.Match[str]) -> Response:
        project, zone, name = match.groups()
        instance = self.instances.get((zone, name))
        if instance is None:
            return self._missing(project, zone, name)
        refused = self._check_project(project)
        if refused:
            return refused
        instance["status"] = "STOPPING"

        def gone(op: JSON) -> None:
            self.instances.pop((zone, name), None)

        return self._operation("delete", instance["selfLink"], zone, gone)

    def _serial(self, request: Request, match: re.Match[str]) -> Response:
        project, zone, name = match.groups()
        instance = self.instances.get((zone, name))
        if instance is None:
            return self._missing(project, zone, name)
        contents = "[   12.0] cloud-init[612]: Cloud-init v. 22.4.2 finished\n"
        return Response(
            200,
            {
                "kind": "compute#serialPortOutput",
                "contents": contents,
                "start": "0",
                "next": str(len(contents)),
                "selfLink": f"{instance['selfLink']}/serialPort",
            },
        )


def _nat_ip(instance: JSON) -> str:
    return str(instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"])
