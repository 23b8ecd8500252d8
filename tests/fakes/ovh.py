"""A stateful fake of the OVHcloud API v1 Public Cloud endpoints that the provider uses.

Shapes follow the API's schema (``cloud.instance.Instance`` / ``InstanceDetail``,
``cloud.flavor.Flavor``, ``cloud.image.Image``, ``cloud.instance.IpAddress``):
``GET /auth/time`` (a bare integer, unsigned), the project's region names, flavors
and images per region, instances created in ``BUILD`` and ``ACTIVE`` from their
first read. Every other request must carry the ``X-Ovh-*`` headers the ovh SDK
signs: ``$1$`` + SHA-1 of application secret, consumer key, method, full URL, body
and timestamp, joined by ``+``. A wrong key, consumer key or secret gets the API's
own ``INVALID_KEY`` / ``INVALID_CREDENTIAL`` (403) or ``INVALID_SIGNATURE`` (400).
Error bodies are ``{"class", "message"}`` plus ``errorCode`` / ``httpCode`` where
the API sends them.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import time
import uuid
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response

SERVICE = "0123456789abcdef0123456789abcdef"
REGIONS = ("GRA11", "SBG5", "BHS5", "DE1", "UK1", "WAW1")
#: name -> (vcpus, ram in GB, disk in GB)
FLAVORS = {"d2-2": (1, 2, 25), "d2-4": (2, 4, 50), "b2-7": (2, 7, 50)}
IMAGES = ("Debian 12", "Debian 11", "Ubuntu 24.04")
NOW = "2026-11-23T10:00:00Z"
#: OpenStack's limit on user-data, which it counts base64-encoded
USER_DATA_LIMIT = 65535
#: the fake's clock is this far from the test machine's: only /auth/time tells
CLOCK_OFFSET = -4000
_CLASSES = {
    400: "Client::BadRequest",
    403: "Client::Forbidden",
    404: "Client::NotFound",
    409: "Client::Conflict",
    429: "Client::TooManyRequests",
}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


class FakeOVH(JsonApiFake):
    prefix = "/1.0"
    steps = {"create_instance": r"^POST /1\.0/cloud/project/[^/]+/instance "}
    fault_answer = (500, "", "Internal server error")

    def __init__(self) -> None:
        self.application_key = "fake-application-key"
        self.application_secret = "fake-application-secret"
        self.consumer_key = "fake-consumer-key"
        self.service = SERVICE
        super().__init__(token=self.consumer_key)
        self.instances: dict[str, JSON] = {}
        self.user_data: dict[str, str] = {}
        #: region -> (status, errorCode, message) that an instance create there answers
        self.refusals_in: dict[str, tuple[int, str, str]] = {}
        #: regions where every flavor is ``available: false`` (no stock there now)
        self.unavailable_in: set[str] = set()
        self._ips = itertools.count(10)
        project = r"/cloud/project/([^/]+)"
        self.route("GET", r"/auth/time", lambda r, m: Response(200, self.clock()))
        self.route("GET", r"/cloud/project", lambda r, m: Response(200, [self.service]))
        self.route("GET", project + r"/region", self._in_project(self._regions))
        self.route("GET", project + r"/flavor", self._in_project(self._flavors))
        self.route("GET", project + r"/image", self._in_project(self._images))
        self.route("POST", project + r"/instance", self._in_project(self._create))
        self.route("GET", project + r"/instance", self._in_project(self._list))
        self.route("GET", project + r"/instance/([^/]+)", self._in_project(self._get))
        self.route("DELETE", project + r"/instance/([^/]+)", self._in_project(self._delete))

    # -- what a user would export --------------------------------------------
    def env(self) -> dict[str, str]:
        """The variables of OVHcloud's own tools that reach this fake."""
        return {
            "OVH_ENDPOINT": self.base_url,
            "OVH_APPLICATION_KEY": self.application_key,
            "OVH_APPLICATION_SECRET": self.application_secret,
            "OVH_CONSUMER_KEY": self.consumer_key,
            "OVH_CLOUD_PROJECT_SERVICE": self.service,
        }

    def flavor_id(self, region: str, name: str) -> str:
        """Flavors and images have an id per region, as on the real API."""
        return _uuid("flavor", region, name)

    def image_id(self, region: str, name: str) -> str:
        return _uuid("image", region, name)

    def clock(self) -> int:
        return int(time.time()) + CLOCK_OFFSET

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """An instance the user made in the control panel: a name without our mark."""
        with self.lock:
            instance = self._new_instance(f"users-own-{len(self.instances)}", "GRA11", "d2-2")
            instance.update(status="ACTIVE", ipAddresses=self._addresses())
            return instance["id"], instance["ipAddresses"][0]["ip"]

    def resources(self) -> set[str]:
        with self.lock:
            return {f"instance:{i}" for i in self.instances}

    def error(self, status: int, code: str, message: str) -> Response:
        body: JSON = {
            "class": _CLASSES.get(status, "Server::InternalServerError"),
            "message": message,
        }
        if code:
            body.update(errorCode=code, httpCode=f"{status} {HTTPStatus(status).phrase}")
        return Response(status, body)

    def rate_limited(self) -> Response:
        return self.error(429, "", "Too much requests, please retry later")

    def common_headers(self) -> dict[str, str]:
        return {"X-OVH-QUERYID": f"EU.ext-1.{uuid.uuid4().hex[:8]}"}

    # -- the signature ----------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        return True  # dispatch answers each refusal with the API's own words

    def dispatch(self, request: Request) -> Response:
        refusal = self._refusal(request)
        if refusal is None:
            return super().dispatch(request)
        with self.lock:
            self.requests.append(request)
        return refusal

    def _refusal(self, request: Request) -> Response | None:
        if request.path == f"{self.prefix}/auth/time":
            return None
        headers = request.headers
        if headers.get("x-ovh-application") != self.application_key:
            return self.error(403, "INVALID_KEY", "Invalid application key")
        if headers.get("x-ovh-consumer") != self.consumer_key:
            return self.error(403, "INVALID_CREDENTIAL", "This credential does not exist")
        stamp = headers.get("x-ovh-timestamp", "")
        if not stamp.isdigit() or abs(int(stamp) - self.clock()) > 300:
            return self.error(400, "INVALID_SIGNATURE", "Invalid signature")
        host, port = self._server.server_address[:2]
        query = f"?{urlencode(request.query, doseq=True)}" if request.query else ""
        url = f"http://{host!s}:{port}{request.path}{query}"
        fields = [
            self.application_secret,
            self.consumer_key,
            request.method,
            url,
            request.raw.decode(),
            stamp,
        ]
        expected = "$1$" + hashlib.sha1("+".join(fields).encode()).hexdigest()
        if headers.get("x-ovh-signature") != expected:
            return self.error(400, "INVALID_SIGNATURE", "Invalid signature")
        return None

    # -- routes -----------------------------------------------------------------
    def _in_project(self, handler: Any) -> Any:
        def project_handler(request: Request, match: re.Match[str]) -> Response:
            if match.group(1) != self.service:
                return self.error(404, "", "This service does not exist")
            return handler(request, match)  # type: ignore[no-any-return]

        return project_handler

    def _regions(self, request: Request, _: re.Match[str]) -> Response:
        return Response(200, list(REGIONS))

    def _flavor(self, region: str, name: str) -> JSON:
        vcpus, ram, disk = FLAVORS[name]
        return {
            "id": self.flavor_id(region, name),
            "name": name,
            "region": region,
            "vcpus": vcpus,
            "ram": ram * 1000,
            "disk": disk,
            "type": "ovh.ssd.eg" if name.startswith("b") else "ovh.vps-ssd",
            "osType": "linux",
            "available": region not in self.unavailable_in,
            "quota": 20,
            "inboundBandwidth": 100,
            "outboundBandwidth": 100,
            "planCodes": {"hourly": f"{name}.consumption", "monthly": f"{name}.monthly"},
            "capabilities": [{"name": "resize", "enabled": True}],
        }

    def _image(self, region: str, name: str) -> JSON:
        return {
            "id": self.image_id(region, name),
            "name": name,
            "region": region,
            "visibility": "public",
            "type": "linux",
            "minDisk": 0,
            "minRam": 0,
            "size": 2.1,
            "creationDate": NOW,
            "status": "active",
            "user": "debian" if name.startswith("Debian") else "ubuntu",
            "planCode": None,
            "flavorType": None,
            "tags": [],
        }

    def _regional(self, request: Request) -> tuple[str, ...]:
        wanted = request.query.get("region", [""])[0]
        return tuple(r for r in REGIONS if not wanted or r == wanted)

    def _flavors(self, request: Request, _: re.Match[str]) -> Response:
        return Response(200, [self._flavor(r, n) for r in self._regional(request) for n in FLAVORS])

    def _images(self, request: Request, _: re.Match[str]) -> Response:
        return Response(200, [self._image(r, n) for r in self._regional(request) for n in IMAGES])

    def _addresses(self) -> list[JSON]:
        n = next(self._ips)
        return [
            {"ip": f"198.51.100.{n}", "type": "public", "version": 4, "networkId": "ext-net",
             "gatewayIp": "198.51.100.1"},
            {"ip": f"2001:db8::{n:x}", "type": "public", "version": 6, "networkId": "ext-net",
             "gatewayIp": "2001:db8::1"},
        ]  # fmt: skip

    def _new_instance(self, name: str, region: str, flavor: str) -> JSON:
        instance_id = str(uuid.uuid4())
        self.instances[instance_id] = {
            "id": instance_id,
            "name": name,
            "region": region,
            "status": "BUILD",
            "created": NOW,
            "flavorId": self.flavor_id(region, flavor),
            "imageId": self.image_id(region, "Debian 12"),
            "ipAddresses": [],
            "monthlyBilling": None,
            "operationIds": [],
            "planCode": f"{flavor}.consumption",
            "sshKeyId": None,
        }
        return self.instances[instance_id]

    def _create(self, request: Request, _: re.Match[str]) -> Response:
        body: JSON = request.body or {}
        region = body.get("region", "")
        if region not in REGIONS:
            return self.error(400, "", f"Invalid region {region!r}")
        flavors = {self._flavor(region, n)["id"]: n for n in FLAVORS}
        if body.get("flavorId") not in flavors:
            return self.error(400, "", f"Flavor {body.get('flavorId')} does not exist")
        if body.get("imageId") not in {self._image(region, n)["id"] for n in IMAGES}:
            return self.error(400, "", f"Image {body.get('imageId')} does not exist")
        if len(base64.b64encode(body.get("userData", "").encode())) > USER_DATA_LIMIT:
            return self.error(400, "", "User data is too long")
        if region in self.refusals_in:
            return self.error(*self.refusals_in[region])
        instance = self._new_instance(body["name"], region, flavors[body["flavorId"]])
        instance["monthlyBilling"] = (
            {"since": NOW, "status": "ok"} if body.get("monthlyBilling") else None
        )
        self.user_data[instance["id"]] = body.get("userData", "")
        return Response(200, self._detail(instance))

    def _detail(self, instance: JSON) -> JSON:
        region = instance["region"]
        flavor = next(
            self._flavor(region, n)
            for n in FLAVORS
            if self._flavor(region, n)["id"] == instance["flavorId"]
        )
        detail = {k: v for k, v in instance.items() if k not in ("flavorId", "imageId", "sshKeyId")}
        return {
            **detail,
            "flavor": flavor,
            "image": self._image(region, "Debian 12"),
            "sshKey": None,
        }

    def _read(self, instance_id: str) -> JSON:
        """The instance as the API shows it now: active, with its addresses, once read."""
        instance = self.instances[instance_id]
        if instance["status"] == "BUILD":
            instance.update(status="ACTIVE", ipAddresses=self._addresses())
        return instance

    def _list(self, request: Request, _: re.Match[str]) -> Response:
        regions = self._regional(request)
        return Response(
            200, [self._read(i) for i, v in list(self.instances.items()) if v["region"] in regions]
        )

    def _get(self, request: Request, match: re.Match[str]) -> Response:
        instance_id = match.group(2)
        if instance_id not in self.instances:
            return self._missing(instance_id)
        return Response(200, self._detail(self._read(instance_id)))

    def _delete(self, request: Request, match: re.Match[str]) -> Response:
        instance_id = match.group(2)
        if self.instances.pop(instance_id, None) is None:
            return self._missing(instance_id)
        return Response(204)  # "void" in the schema; the SDK reads 204 as None

    def _missing(self, instance_id: str) -> Response:
        return self.error(
            404, "", f"The requested object (instanceId = {instance_id}) does not exist"
        )
