"""A stateful fake of the Linode API v4 endpoints that the provider uses.

Shapes follow the API reference and linode_api4's own fixtures: lists as ``{"data",
"page", "pages", "results"}`` paged by ``page`` / ``page_size``, the ``X-Filter``
header (equality, a list field matching when it contains the value, ``+and`` and
``+or``), ``{"errors": [{"reason", "field"}]}`` error bodies, 401 "Invalid Token",
and a 429 with ``Retry-After``. Create rules as documented: labels (instances and
firewalls) are unique and of letters, digits, ``-``, ``_`` and ``.``; an image needs a
``root_pass``; ``metadata.user_data`` is base64, at most 65535 bytes decoded, and only
in regions with the ``Metadata`` capability; ``firewall_id`` must name a firewall,
to which the new instance is then assigned. A new instance is ``provisioning`` and
``running`` from its first read on; a delete answers 200 ``{}``, as the SDK expects.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
from typing import Any

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response

#: region id -> capabilities (abridged to the ones the provider looks at)
REGIONS = {
    "us-ord": ["Linodes", "Cloud Firewall", "Metadata"],
    "us-iad": ["Linodes", "Cloud Firewall", "Metadata"],
    "fr-par": ["Linodes", "Cloud Firewall", "Metadata"],
    "us-east": ["Linodes", "Cloud Firewall"],
}
TYPES = {"g6-nanode-1": 5.0, "g6-standard-1": 12.0, "g6-standard-2": 24.0}
IMAGES = ("linode/debian12", "linode/debian13", "linode/ubuntu24.04")
NOW = "2026-12-01T10:00:00"
USER_DATA_MAX = 65535
#: the documented label rule (3-64 characters for an instance, 3-32 for a firewall)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|[-_.](?![-_.]))*[A-Za-z0-9]")


class FakeLinode(JsonApiFake):
    steps = {
        "create_firewall": r"^POST /v4/networking/firewalls ",
        "create_linode": r"^POST /v4/linode/instances ",
    }
    prefix = "/v4"
    fault_answer = (500, "server_error", "Internal Server Error")

    def __init__(self, token: str = "test-token") -> None:
        super().__init__(token)
        #: the page size when a request names none (the API's is 100)
        self.default_page_size = 100
        self.instances: dict[int, JSON] = {}
        self.firewalls: dict[int, JSON] = {}
        #: firewall id -> ids of the linodes assigned to it
        self.devices: dict[int, list[int]] = {}
        #: instance id -> its user-data, decoded
        self.user_data: dict[int, str] = {}
        self.root_passwords: dict[int, str] = {}
        #: region -> (status, code, reason) with which a create there is refused
        self.refusals_in: dict[str, tuple[int, str, str]] = {}
        self._ids = itertools.count(4200)
        self._ips = itertools.count(10)
        self.route("GET", r"/regions", self._list(self._regions))
        self.route("GET", r"/linode/types", self._list(self._types))
        self.route("POST", r"/linode/instances", self._create_instance)
        self.route("GET", r"/linode/instances", self._list(self._instances))
        self.route("GET", r"/linode/instances/(\d+)", self._get_instance)
        self.route("DELETE", r"/linode/instances/(\d+)", self._delete_instance)
        self.route("POST", r"/networking/firewalls", self._create_firewall)
        self.route("GET", r"/networking/firewalls", self._list(self._firewalls))
        self.route("GET", r"/networking/firewalls/(\d+)", self._get_firewall)
        self.route("DELETE", r"/networking/firewalls/(\d+)", self._delete_firewall)

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """An instance the user made in Cloud Manager: tags of theirs, no firewall."""
        with self.lock:
            body = {
                "label": f"users-own-{len(self.instances)}",
                "type": "g6-standard-1",
                "region": "us-ord",
                "image": "linode/debian12",
                "root_pass": "a-Complex-p4ssword!",
                "tags": ["prod"],
            }
            created = self._create_instance(Request("POST", "/v4/linode/instances", {}, body, {}))
            instance = created.body
            return str(instance["id"]), instance["ipv4"][0]

    def resources(self) -> set[str]:
        with self.lock:
            return {f"linode:{i}" for i in self.instances} | {
                f"firewall:{i}" for i in self.firewalls
            }

    def error(self, status: int, code: str, message: str) -> Response:
        reason = "Invalid Token" if status == 401 else message  # the API's words for a 401
        return Response(status, {"errors": [{"reason": reason}]})

    def rate_limited(self) -> Response:
        response = self.error(429, "too_many_requests", "Too Many Requests")
        response.headers["Retry-After"] = "0"  # seconds; the SDK's own interval applies then
        return response

    def _invalid(self, field: str, reason: str) -> Response:
        return Response(400, {"errors": [{"field": field, "reason": reason}]})

    # -- lists ----------------------------------------------------------------
    def _list(self, items: Any) -> Any:
        def handler(request: Request, _: re.Match[str] | None = None) -> Response:
            try:
                wanted = json.loads(request.headers.get("x-filter") or "{}")
            except ValueError:
                return self._invalid("X-Filter", "Invalid JSON")
            everything = [i for i in items() if _matches(i, wanted)]
            size = int(request.query.get("page_size", [self.default_page_size])[0])
            number = int(request.query.get("page", ["1"])[0])
            pages = max(1, -(-len(everything) // size))
            chunk = everything[(number - 1) * size : number * size]
            return Response(
                200, {"data": chunk, "page": number, "pages": pages, "results": len(everything)}
            )

        return handler

    def _regions(self) -> list[JSON]:
        return [
            {"id": name, "label": name, "country": name[:2], "capabilities": caps, "status": "ok"}
            for name, caps in REGIONS.items()
        ]

    def _types(self) -> list[JSON]:
        return [
            {
                "id": name,
                "label": name,
                "class": "nanode" if "nanode" in name else "standard",
                "disk": 25600,
                "memory": 1024,
                "vcpus": 1,
                "transfer": 1000,
                "price": {"hourly": round(monthly / 730, 4), "monthly": monthly},
            }
            for name, monthly in TYPES.items()
        ]

    def _instances(self) -> list[JSON]:
        return [self._read(i) for i in list(self.instances)]

    def _firewalls(self) -> list[JSON]:
        return [self._firewall(i) for i in self.firewalls]

    # -- instances ------------------------------------------------------------
    def _create_instance(self, request: Request, _: re.Match[str] | None = None) -> Response:
        body: JSON = request.body or {}
        for field, known in (("region", REGIONS), ("type", TYPES), ("image", IMAGES)):
            if body.get(field) not in known:
                return self._invalid(field, f"{field} is not valid")
        if body["region"] in self.refusals_in:
            return self.error(*self.refusals_in[body["region"]])
        label = str(body.get("label", ""))
        if not (3 <= len(label) <= 64 and _LABEL.fullmatch(label)):
            return self._invalid("label", "Label must begin and end with a letter or number")
        if any(i["label"] == label for i in self.instances.values()):
            return self._invalid("label", "Label must be unique among your linodes")
        if not body.get("root_pass") and not body.get("authorized_keys"):
            return self._invalid("root_pass", "root_pass is required when deploying an image")
        tags = body.get("tags", [])
        if any(not 3 <= len(t) <= 50 for t in tags):
            return self._invalid("tags", "Length must be 3-50 characters")
        user_data = (body.get("metadata") or {}).get("user_data")
        if user_data is not None:
            if "Metadata" not in REGIONS[body["region"]]:
                return self._invalid("metadata", "Metadata is not available in this region")
            try:
                decoded = base64.b64decode(user_data, validate=True)
            except binascii.Error:
                return self._invalid("metadata.user_data", "Must be base64-encoded")
            if len(decoded) > USER_DATA_MAX:
                return self._invalid("metadata.user_data", "Must not exceed 65535 bytes")
        firewall_id = body.get("firewall_id")
        if firewall_id is not None and firewall_id not in self.firewalls:
            return self._invalid("firewall_id", "Firewall not found")
        instance_id = next(self._ids)
        n = next(self._ips)
        self.instances[instance_id] = {
            "id": instance_id,
            "label": label,
            "group": "",
            "status": "provisioning",
            "created": NOW,
            "updated": NOW,
            "type": body["type"],
            "region": body["region"],
            "image": body["image"],
            "ipv4": [f"198.51.100.{n}", f"192.168.133.{n}"]
            if body.get("private_ip")
            else [f"198.51.100.{n}"],
            "ipv6": f"2001:db8::{n:x}/128",
            "tags": tags,
            "hypervisor": "kvm",
            "specs": {"disk": 25600, "memory": 1024, "vcpus": 1, "transfer": 1000},
            "alerts": {"cpu": 90, "network_in": 10, "network_out": 10, "io": 10000},
            "backups": {"enabled": False, "available": False, "schedule": {}},
            "watchdog_enabled": True,
            "has_user_data": user_data is not None,
            "disk_encryption": "disabled",
            "lke_cluster_id": None,
            "placement_group": None,
        }
        if user_data is not None:
            self.user_data[instance_id] = decoded.decode()
        self.root_passwords[instance_id] = str(body.get("root_pass", ""))
        if firewall_id is not None:
            self.devices[firewall_id].append(instance_id)
        return Response(200, dict(self.instances[instance_id]))

    def _read(self, instance_id: int) -> JSON:
        """The instance as the API shows it now: running from its first read on."""
        instance = self.instances[instance_id]
        instance["status"] = "running"
        return instance

    def _get_instance(self, request: Request, match: re.Match[str]) -> Response:
        instance_id = int(match.group(1))
        if instance_id not in self.instances:
            return self.error(404, "not_found", "Not found")
        return Response(200, self._read(instance_id))

    def _delete_instance(self, request: Request, match: re.Match[str]) -> Response:
        instance_id = int(match.group(1))
        if self.instances.pop(instance_id, None) is None:
            return self.error(404, "not_found", "Not found")
        for assigned in self.devices.values():
            if instance_id in assigned:
                assigned.remove(instance_id)
        return Response(200, {})

    # -- firewalls ------------------------------------------------------------
    def _create_firewall(self, request: Request, _: re.Match[str] | None = None) -> Response:
        body: JSON = request.body or {}
        label = str(body.get("label", ""))
        if not (3 <= len(label) <= 32 and _LABEL.fullmatch(label)):
            return self._invalid("label", "Label must begin and end with a letter or number")
        if any(f["label"] == label for f in self.firewalls.values()):
            return self._invalid("label", "Label must be unique")
        rules = body.get("rules") or {}
        for key in ("inbound_policy", "outbound_policy"):
            if rules.get(key) not in ("ACCEPT", "DROP"):
                return self._invalid(f"rules.{key}", "Must be one of ACCEPT, DROP")
        for rule in rules.get("inbound", []) + rules.get("outbound", []):
            if rule.get("protocol") not in ("TCP", "UDP", "ICMP", "IPENCAP"):
                return self._invalid("rules.protocol", "Must be one of TCP, UDP, ICMP, IPENCAP")
            if rule.get("action") not in ("ACCEPT", "DROP"):
                return self._invalid("rules.action", "Must be one of ACCEPT, DROP")
            if not set(rule.get("addresses") or {}) <= {"ipv4", "ipv6"}:
                return self._invalid("rules.addresses", "Only ipv4 and ipv6 are allowed")
        firewall_id = next(self._ids)
        self.firewalls[firewall_id] = {
            "id": firewall_id,
            "label": label,
            "created": NOW,
            "updated": NOW,
            "status": "enabled",
            "rules": {
                "inbound": rules.get("inbound", []),
                "inbound_policy": rules["inbound_policy"],
                "outbound": rules.get("outbound", []),
                "outbound_policy": rules["outbound_policy"],
                "version": 1,
                "fingerprint": f"{firewall_id:08x}",
            },
            "tags": body.get("tags", []),
        }
        self.devices[firewall_id] = list((body.get("devices") or {}).get("linodes", []))
        return Response(200, self._firewall(firewall_id))

    def _firewall(self, firewall_id: int) -> JSON:
        entities = [
            {
                "id": linode_id,
                "label": self.instances[linode_id]["label"],
                "type": "linode",
                "url": f"/v4/linode/instances/{linode_id}",
            }
            for linode_id in self.devices[firewall_id]
        ]
        return {**self.firewalls[firewall_id], "entities": entities}

    def _get_firewall(self, request: Request, match: re.Match[str]) -> Response:
        firewall_id = int(match.group(1))
        if firewall_id not in self.firewalls:
            return self.error(404, "not_found", "Not found")
        return Response(200, self._firewall(firewall_id))

    def _delete_firewall(self, request: Request, match: re.Match[str]) -> Response:
        """Deleting a firewall also removes it from the services it was assigned to."""
        firewall_id = int(match.group(1))
        if self.firewalls.pop(firewall_id, None) is None:
            return self.error(404, "not_found", "Not found")
        del self.devices[firewall_id]
        return Response(200, {})


def _matches(item: JSON, wanted: JSON) -> bool:
    """The subset of ``X-Filter`` the provider uses: equality (a list field matches when
    it contains the value), ``+and`` and ``+or``; ``+order_by`` and the like are ignored."""
    for key, value in wanted.items():
        if key == "+and":
            if not all(_matches(item, w) for w in value):
                return False
        elif key == "+or":
            if not any(_matches(item, w) for w in value):
                return False
        elif not key.startswith("+"):
            have = item.get(key)
            if not (value in have if isinstance(have, list) else have == value):
                return False
    return True
