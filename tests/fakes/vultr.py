"""A stateful fake of the Vultr API v2 endpoints that the provider uses.

Shapes follow the API reference (its OpenAPI document): ``{"instance": ...}`` (202)
on create, ``{"firewall_group": ...}`` and ``{"firewall_rule": ...}`` (201), lists
as ``{"<items>": [...], "meta": {"total", "links": {"next", "prev"}}}`` with an
opaque ``cursor`` and ``per_page`` (default 100, at most 500), the ``tag`` /
``label`` / ``main_ip`` / ``region`` filters of the instance list, 204 on delete,
and ``{"error": "...", "status": N}`` error bodies. A new instance is ``pending``
with ``main_ip`` ``0.0.0.0`` and ``active``/``running`` with addresses from its first
read. Deleting a firewall group still linked to an instance is refused; the real
API's behaviour there is not documented, and this is the stricter guess.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import itertools
import re
import uuid
from collections.abc import Callable
from typing import Any

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response

REGIONS = ("lhr", "ams", "fra", "ewr", "sjc", "sgp")
#: plan id -> (monthly cost, the regions that offer it)
PLANS: dict[str, tuple[float, tuple[str, ...]]] = {
    "vc2-1c-1gb": (5.0, REGIONS),
    "vc2-1c-2gb": (10.0, REGIONS),
    "vhf-1c-1gb": (6.0, ("ewr", "sjc")),
}
#: os_id -> name (the ids of the real list; do not rely on them, as its docs say)
OPERATING_SYSTEMS = {
    2136: "Debian 12 x64 (bookworm)",
    2284: "Ubuntu 24.04 LTS x64",
    1743: "Ubuntu 22.04 LTS x64",
}
NOW = "2026-12-01T10:00:00+00:00"
MAX_RULES = 50


class FakeVultr(JsonApiFake):
    steps = {
        "create_firewall_group": r"^POST /v2/firewalls ",
        "create_firewall_rule": r"^POST /v2/firewalls/[^/ ]+/rules ",
        "create_instance": r"^POST /v2/instances ",
    }
    prefix = "/v2"

    def __init__(self, token: str = "test-token") -> None:
        super().__init__(token)
        self.max_per_page = 500
        self.instances: dict[str, JSON] = {}
        self.firewall_groups: dict[str, JSON] = {}
        self.rules: dict[str, list[JSON]] = {}
        self.user_data: dict[str, str] = {}
        self._addresses: dict[str, tuple[str, str]] = {}
        self._ips = itertools.count(10)
        self.route("GET", r"/regions", self._list("regions", self._regions))
        self.route("GET", r"/plans", self._list("plans", self._plans))
        self.route("GET", r"/os", self._list("os", self._systems))
        self.route("POST", r"/instances", self._create_instance)
        self.route("GET", r"/instances", self._list("instances", self._instances))
        self.route("GET", r"/instances/([^/]+)", self._get_instance)
        self.route("DELETE", r"/instances/([^/]+)", self._delete_instance)
        self.route("POST", r"/firewalls", self._create_group)
        self.route("GET", r"/firewalls", self._list("firewall_groups", self._groups))
        self.route("GET", r"/firewalls/([^/]+)", self._get_group)
        self.route("DELETE", r"/firewalls/([^/]+)", self._delete_group)
        self.route("POST", r"/firewalls/([^/]+)/rules", self._create_rule)

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """An instance the user made in the portal: no tags of ours, already running."""
        with self.lock:
            body = {"region": "lhr", "plan": "vc2-1c-1gb", "os_id": 2136, "tags": ["env=prod"]}
            made = self._create_instance(Request("POST", "/v2/instances", {}, body, {}), None)
            instance_id = made.body["instance"]["id"]
            return instance_id, self._read(instance_id)["main_ip"]

    def resources(self) -> set[str]:
        with self.lock:
            return {f"instance:{i}" for i in self.instances} | {
                f"firewall_group:{g}" for g in self.firewall_groups
            }

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"error": message, "status": status})

    def rate_limited(self) -> Response:
        return self.error(429, "rate_limited", "Rate limit reached - please try again later.")

    # -- lists ------------------------------------------------------------------
    def _list(self, key: str, items: Callable[[Request], list[JSON]]) -> Any:
        def handler(request: Request, _: re.Match[str]) -> Response:
            everything = items(request)
            per_page = min(int(_arg(request, "per_page") or 100), self.max_per_page)
            start = _decode_cursor(_arg(request, "cursor"))
            end = start + per_page
            links = {
                "next": _cursor(end) if end < len(everything) else "",
                "prev": _cursor(max(start - per_page, 0)) if start else "",
            }
            chunk = everything[start:end]
            return Response(200, {key: chunk, "meta": {"total": len(everything), "links": links}})

        return handler

    def _regions(self, request: Request) -> list[JSON]:
        return [
            {"id": r, "city": r.upper(), "country": "GB", "continent": "Europe", "options": []}
            for r in REGIONS
        ]

    def _plans(self, request: Request) -> list[JSON]:
        return [
            {
                "id": plan,
                "vcpu_count": 1,
                "ram": 1024,
                "disk": 25,
                "disk_count": 1,
                "bandwidth": 1024,
                "monthly_cost": cost,
                "type": plan.split("-")[0],
                "locations": list(locations),
            }
            for plan, (cost, locations) in PLANS.items()
        ]

    def _systems(self, request: Request) -> list[JSON]:
        return [
            {"id": i, "name": name, "arch": "x64", "family": name.split()[0].lower()}
            for i, name in OPERATING_SYSTEMS.items()
        ]

    def _instances(self, request: Request) -> list[JSON]:
        filters = {f: _arg(request, f) for f in ("tag", "label", "main_ip", "region")}
        found = []
        for instance_id in list(self.instances):
            instance = self._read(instance_id)
            if filters["tag"] and filters["tag"] not in instance["tags"]:
                continue
            if any(
                filters[f] and instance[f] != filters[f] for f in ("label", "main_ip", "region")
            ):
                continue
            found.append(instance)
        return found

    def _groups(self, request: Request) -> list[JSON]:
        return list(self.firewall_groups.values())

    # -- instances ------------------------------------------------------------
    def _create_instance(self, request: Request, _: re.Match[str] | None) -> Response:
        body: JSON = request.body or {}
        if body.get("region") not in REGIONS:
            return self.error(400, "", "Invalid region.")
        plan = PLANS.get(body.get("plan", ""))
        if plan is None or body["region"] not in plan[1]:
            return self.error(400, "", "Invalid plan.")
        if body.get("os_id") not in OPERATING_SYSTEMS:
            return self.error(400, "", "Invalid os_id.")
        try:
            user_data = base64.b64decode(body.get("user_data", ""), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return self.error(400, "", "Invalid user_data: it must be base64 encoded.")
        group_id = body.get("firewall_group_id", "")
        if group_id and group_id not in self.firewall_groups:
            return self.error(400, "", "Invalid firewall group.")
        tags = body.get("tags") or []
        if not all(isinstance(t, str) for t in tags):
            return self.error(400, "", "Invalid tags.")
        instance_id = str(uuid.uuid4())
        n = next(self._ips)
        self._addresses[instance_id] = (f"192.0.2.{n}", f"2001:db8:0:{n:x}::1")
        self.user_data[instance_id] = user_data
        self.instances[instance_id] = {
            "id": instance_id,
            "os": OPERATING_SYSTEMS[body["os_id"]],
            "ram": 1024,
            "disk": 25,
            "main_ip": "0.0.0.0",
            "vcpu_count": 1,
            "region": body["region"],
            "plan": body["plan"],
            "date_created": NOW,
            "status": "pending",
            "allowed_bandwidth": 1000,
            "netmask_v4": "",
            "gateway_v4": "0.0.0.0",
            "power_status": "running",
            "server_status": "none",
            "v6_network": "",
            "v6_main_ip": "",
            "v6_network_size": 0,
            "label": body.get("label", ""),
            "internal_ip": "",
            "kvm": "",
            "hostname": body.get("hostname", "vultr.guest"),
            "os_id": body["os_id"],
            "app_id": 0,
            "image_id": "",
            "firewall_group_id": group_id,
            "features": ["ipv6"] if body.get("enable_ipv6") else [],
            "tags": list(tags),
        }
        if group_id:
            self.firewall_groups[group_id]["instance_count"] += 1
        return Response(202, {"instance": {**self.instances[instance_id], "default_password": "x"}})

    def _read(self, instance_id: str) -> JSON:
        """The instance as the API shows it now: booted, with its addresses, once read."""
        instance = self.instances[instance_id]
        ipv4, ipv6 = self._addresses[instance_id]
        instance.update(status="active", server_status="ok", main_ip=ipv4)
        if "ipv6" in instance["features"]:
            instance.update(v6_main_ip=ipv6, v6_network=ipv6[:-1], v6_network_size=64)
        return instance

    def _get_instance(self, request: Request, match: re.Match[str]) -> Response:
        if match.group(1) not in self.instances:
            return self.error(404, "", "Invalid instance-id.")
        return Response(200, {"instance": self._read(match.group(1))})

    def _delete_instance(self, request: Request, match: re.Match[str]) -> Response:
        instance = self.instances.pop(match.group(1), None)
        if instance is None:
            return self.error(404, "", "Invalid instance-id.")
        group = self.firewall_groups.get(instance["firewall_group_id"])
        if group is not None:
            group["instance_count"] -= 1
        return Response(204)

    # -- firewall groups ------------------------------------------------------
    def _create_group(self, request: Request, _: re.Match[str]) -> Response:
        body: JSON = request.body or {}
        group_id = str(uuid.uuid4())
        self.rules[group_id] = []
        self.firewall_groups[group_id] = {
            "id": group_id,
            "description": body.get("description", ""),
            "date_created": NOW,
            "date_modified": NOW,
            "instance_count": 0,
            "rule_count": 0,
            "max_rule_count": MAX_RULES,
        }
        return Response(201, {"firewall_group": self.firewall_groups[group_id]})

    def _get_group(self, request: Request, match: re.Match[str]) -> Response:
        group = self.firewall_groups.get(match.group(1))
        if group is None:
            return self.error(404, "", "Invalid firewall group.")
        return Response(200, {"firewall_group": group})

    def _delete_group(self, request: Request, match: re.Match[str]) -> Response:
        group = self.firewall_groups.get(match.group(1))
        if group is None:
            return self.error(404, "", "Invalid firewall group.")
        if group["instance_count"]:
            return self.error(400, "", "Firewall group is in use by an instance.")
        del self.firewall_groups[group["id"]]
        del self.rules[group["id"]]
        return Response(204)

    def _create_rule(self, request: Request, match: re.Match[str]) -> Response:
        group = self.firewall_groups.get(match.group(1))
        if group is None:
            return self.error(404, "", "Invalid firewall group.")
        body: JSON = request.body or {}
        if any(body.get(f) in (None, "") for f in ("ip_type", "protocol", "subnet")):
            return self.error(400, "", "ip_type, protocol, subnet and subnet_size are required.")
        try:
            net = ipaddress.ip_network(f"{body['subnet']}/{body.get('subnet_size')}")
        except ValueError:
            return self.error(400, "", "Invalid subnet.")
        if f"v{net.version}" != body["ip_type"] or body["protocol"] not in ("tcp", "udp", "icmp"):
            return self.error(400, "", "Invalid ip_type or protocol.")
        if not re.fullmatch(r"\d+(:\d+)?", str(body.get("port", ""))):
            return self.error(400, "", "Invalid port: a port or a range such as 8000:9000.")
        if group["rule_count"] >= MAX_RULES:
            return self.error(400, "", "Firewall group has reached its maximum number of rules.")
        rule = {
            "id": group["rule_count"] + 1,
            "type": body["ip_type"],
            "ip_type": body["ip_type"],
            "action": "accept",
            "protocol": body["protocol"],
            "port": body["port"],
            "subnet": body["subnet"],
            "subnet_size": body["subnet_size"],
            "source": body.get("source", ""),
            "notes": body.get("notes", ""),
        }
        self.rules[group["id"]].append(rule)
        group["rule_count"] += 1
        return Response(201, {"firewall_rule": rule})


def _arg(request: Request, name: str) -> str:
    return request.query.get(name, [""])[0]


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"next__{offset}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor).decode().split("__")[1]) if cursor else 0
