"""A stateful fake of the Hetzner Cloud API v1 endpoints that the provider uses.

Shapes follow the API reference: ``{"server", "action", "next_actions",
"root_password"}`` on create, ``meta.pagination`` on lists, ``label_selector``
filters, action objects that run and then finish when read, ``{"error": {"code",
"message", "details"}}`` error bodies, ``RateLimit-*`` headers and the
``rate_limit_exceeded`` 429. A firewall still applied to a server cannot be
deleted (``resource_in_use``), as on the real API.
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response, page

LOCATIONS = ("hel1", "fsn1", "nbg1", "ash", "hil", "sin")
SERVER_TYPES = {"cx23": "3.49", "cx33": "5.49", "cpx11": "4.49"}
IMAGES = ("debian-13", "debian-12", "ubuntu-24.04")
NOW = "2026-11-23T10:00:00+00:00"


class FakeHetzner(JsonApiFake):
    steps = {"create_firewall": r"^POST /v1/firewalls ", "create_server": r"^POST /v1/servers "}
    prefix = "/v1"

    def __init__(self, token: str = "test-token") -> None:
        super().__init__(token)
        self.max_per_page = 50
        self.servers: dict[int, JSON] = {}
        self.firewalls: dict[int, JSON] = {}
        self.actions: dict[int, JSON] = {}
        self.user_data: dict[int, str] = {}
        #: how many reads of an action still find it running (a client that
        #: sleeps between polls is slowed by each; 0 for whole-CLI tests)
        self.running_reads = 1
        self._action_reads: dict[int, int] = {}
        #: ``{"code", "message"}`` with which the next action to finish fails
        self.action_error: JSON | None = None
        #: location -> (status, code, message) that a server create there answers, as
        #: the API does when a location has no room (412 ``resource_unavailable``)
        self.refusals_in: dict[str, tuple[int, str, str]] = {}
        self._ids = itertools.count(42)
        self._ips = itertools.count(10)
        self.route("GET", r"/locations", self._list("locations", self._locations))
        self.route("GET", r"/server_types", self._list("server_types", self._server_types))
        self.route("POST", r"/servers", self._create_server)
        self.route("GET", r"/servers", self._list("servers", self._servers))
        self.route("GET", r"/servers/(\d+)", self._get_server)
        self.route("DELETE", r"/servers/(\d+)", self._delete_server)
        self.route("POST", r"/firewalls", self._create_firewall)
        self.route("GET", r"/firewalls", self._list("firewalls", self._firewalls))
        self.route("GET", r"/firewalls/(\d+)", self._get("firewall", self.firewalls))
        self.route("DELETE", r"/firewalls/(\d+)", self._delete_firewall)
        self.route("GET", r"/actions/(\d+)", self._get_action)

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """A server the user made in the console: no labels of ours."""
        with self.lock:
            body = {
                "name": f"users-own-{len(self.servers)}",
                "server_type": "cx23",
                "image": "debian-13",
                "location": "hel1",
                "labels": {"env": "prod"},
            }
            created = self._create_server(Request("POST", "/v1/servers", {}, body, {}), None)
            server = created.body["server"]
            return str(server["id"]), server["public_net"]["ipv4"]["ip"]

    def resources(self) -> set[str]:
        with self.lock:
            return {f"server:{i}" for i in self.servers} | {f"firewall:{i}" for i in self.firewalls}

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"error": {"code": code, "message": message, "details": {}}})

    def rate_limited(self) -> Response:
        return self.error(429, "rate_limit_exceeded", "limit of 3600 requests per hour reached")

    def common_headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": "3600",
            "RateLimit-Remaining": "3599",
            "RateLimit-Reset": str(int(time.time()) + 1),
        }

    # -- generic list / get ---------------------------------------------------
    def _list(self, key: str, items: Any) -> Any:
        def handler(request: Request, _: re.Match[str]) -> Response:
            everything = [i for i in items() if _selected(i, request)]
            chunk, number, last = page(everything, request, self.max_per_page)
            pagination = {
                "page": number,
                "per_page": len(chunk),
                "previous_page": number - 1 or None,
                "next_page": number + 1 if number < last else None,
                "last_page": last,
                "total_entries": len(everything),
            }
            return Response(200, {key: chunk, "meta": {"pagination": pagination}})

        return handler

    def _get(self, key: str, table: dict[int, JSON]) -> Any:
        def handler(request: Request, match: re.Match[str]) -> Response:
            item = table.get(int(match.group(1)))
            if item is None:
                return self.error(404, "not_found", f"{key} with ID {match.group(1)} not found")
            return Response(200, {key: item})

        return handler

    def _locations(self) -> list[JSON]:
        return [
            {
                "id": n,
                "name": name,
                "description": name,
                "country": "FI",
                "city": name,
                "latitude": 0.0,
                "longitude": 0.0,
                "network_zone": "eu-central",
            }
            for n, name in enumerate(LOCATIONS, 1)
        ]

    def _server_types(self) -> list[JSON]:
        return [
            {
                "id": n,
                "name": name,
                "description": name.upper(),
                "cores": 2,
                "memory": 4.0,
                "disk": 40,
                "prices": [{"location": "hel1", "price_monthly": {"net": net, "gross": net}}],
                "storage_type": "local",
                "cpu_type": "shared",
                "architecture": "x86",
            }
            for n, (name, net) in enumerate(SERVER_TYPES.items(), 1)
        ]

    def _servers(self) -> list[JSON]:
        return [self._read(i) for i in list(self.servers)]

    def _firewalls(self) -> list[JSON]:
        return list(self.firewalls.values())

    # -- actions --------------------------------------------------------------
    def _action(self, command: str, resource: tuple[str, int]) -> JSON:
        action_id = next(self._ids)
        self.actions[action_id] = {
            "id": action_id,
            "command": command,
            "status": "running",
            "progress": 0,
            "started": NOW,
            "finished": None,
            "resources": [{"id": resource[1], "type": resource[0]}],
            "error": None,
        }
        return dict(self.actions[action_id])

    def _get_action(self, request: Request, match: re.Match[str]) -> Response:
        action = self.actions.get(int(match.group(1)))
        if action is None:
            return self.error(404, "not_found", f"action with ID {match.group(1)} not found")
        if self._action_reads.setdefault(action["id"], 0) >= self.running_reads:
            error, self.action_error = self.action_error, None
            status = "error" if error else "success"
            action.update(status=status, progress=100, finished=NOW, error=error)
        self._action_reads[action["id"]] += 1
        return Response(200, {"action": dict(action)})

    # -- servers --------------------------------------------------------------
    def _create_server(self, request: Request, _: re.Match[str]) -> Response:
        body: JSON = request.body or {}
        for field, known in (
            ("location", LOCATIONS),
            ("server_type", SERVER_TYPES),
            ("image", IMAGES),
        ):
            if body.get(field) not in known:
                return self.error(422, "invalid_input", f"invalid input in field '{field}'")
        if body.get("location") in self.refusals_in:
            return self.error(*self.refusals_in[body["location"]])
        if any(s["name"] == body.get("name") for s in self.servers.values()):
            return self.error(409, "uniqueness_error", "server name is already used")
        wanted = [f["firewall"] for f in body.get("firewalls", [])]
        if any(f not in self.firewalls for f in wanted):
            return self.error(404, "not_found", "firewall not found")
        server_id = next(self._ids)
        n = next(self._ips)
        self.user_data[server_id] = body.get("user_data", "")
        self.servers[server_id] = {
            "id": server_id,
            "name": body["name"],
            "status": "initializing",
            "created": NOW,
            "public_net": {
                "ipv4": {"id": n, "ip": f"198.51.100.{n}", "blocked": False, "dns_ptr": ""},
                "ipv6": {"id": n + 1000, "ip": "2001:db8::/64", "blocked": False, "dns_ptr": []},
                "floating_ips": [],
                "firewalls": [{"id": f, "status": "pending"} for f in wanted],
            },
            "private_net": [],
            "server_type": self._server_types()[list(SERVER_TYPES).index(body["server_type"])],
            "location": self._locations()[LOCATIONS.index(body["location"])],
            "image": {"id": 114690387, "name": body["image"], "type": "system"},
            "labels": body.get("labels", {}),
            "volumes": [],
            "rescue_enabled": False,
            "locked": False,
            "protection": {"delete": False, "rebuild": False},
        }
        for firewall_id in wanted:
            self.firewalls[firewall_id]["applied_to"].append(
                {"type": "server", "server": {"id": server_id}}
            )
        return Response(
            201,
            {
                "server": self.servers[server_id],
                "action": self._action("create_server", ("server", server_id)),
                "next_actions": [self._action("start_server", ("server", server_id))],
                "root_password": None,
            },
        )

    def _read(self, server_id: int) -> JSON:
        """The server as the API shows it now: running from its first read on."""
        server = self.servers[server_id]
        server["status"] = "running"
        for firewall in server["public_net"]["firewalls"]:
            firewall["status"] = "applied"
        return server

    def _get_server(self, request: Request, match: re.Match[str]) -> Response:
        server_id = int(match.group(1))
        if server_id not in self.servers:
            return self.error(404, "not_found", f"server with ID {server_id} not found")
        return Response(200, {"server": self._read(server_id)})

    def _delete_server(self, request: Request, match: re.Match[str]) -> Response:
        server_id = int(match.group(1))
        if self.servers.pop(server_id, None) is None:
            return self.error(404, "not_found", f"server with ID {server_id} not found")
        for firewall in self.firewalls.values():
            firewall["applied_to"] = [
                a for a in firewall["applied_to"] if a["server"]["id"] != server_id
            ]
        return Response(200, {"action": self._action("delete_server", ("server", server_id))})

    # -- firewalls ------------------------------------------------------------
    def _create_firewall(self, request: Request, _: re.Match[str]) -> Response:
        body: JSON = request.body or {}
        if any(f["name"] == body.get("name") for f in self.firewalls.values()):
            return self.error(409, "uniqueness_error", "firewall name is already used")
        firewall_id = next(self._ids)
        self.firewalls[firewall_id] = {
            "id": firewall_id,
            "name": body["name"],
            "labels": body.get("labels", {}),
            "created": NOW,
            "rules": [
                {"description": None, "destination_ips": [], "source_ips": [], **rule}
                for rule in body.get("rules", [])
            ],
            "applied_to": [],
        }
        return Response(201, {"firewall": self.firewalls[firewall_id], "actions": []})

    def _delete_firewall(self, request: Request, match: re.Match[str]) -> Response:
        firewall = self.firewalls.get(int(match.group(1)))
        if firewall is None:
            return self.error(404, "not_found", f"firewall with ID {match.group(1)} not found")
        if firewall["applied_to"]:
            return self.error(422, "resource_in_use", "firewall is still applied to a resource")
        del self.firewalls[firewall["id"]]
        return Response(204)


def _selected(item: JSON, request: Request) -> bool:
    """Apply ``label_selector`` (``k=v`` / ``k`` terms, comma-separated) and ``name``."""
    if "name" in request.query and item.get("name") != request.query["name"][0]:
        return False
    labels = item.get("labels", {})
    for term in filter(None, request.query.get("label_selector", [""])[0].split(",")):
        key, _, value = term.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True
