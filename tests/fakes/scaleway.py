"""A stateful fake of the Scaleway Instance API v1 (and the marketplace's local images).

Shapes follow the API reference and the Go SDK's recorded traffic: zoned paths
(``/instance/v1/zones/{zone}/...``), ``X-Auth-Token`` auth, ``{"server": ...}``
envelopes, lists with ``X-Total-Count`` and ``page``/``per_page``, the ``tags``
filter (comma-separated, all must match), servers created ``stopped`` with
``allowed_actions``, user-data as a ``text/plain`` PATCH per key, ``poweron`` and
``terminate`` actions answered with a task, and errors as ``{"type", "message"}``
(``unknown_resource`` for a 404 as the Instance API spells it, ``denied_authentication``
for a 401, ``invalid_request_error`` / ``Validation Error`` with ``fields`` for a 400).
As on the real API: a running server cannot be deleted (it is terminated, which
takes its local volumes along), a deleted stopped server leaves its volumes, a
flexible IP outlives its server, and a security group in use cannot be deleted.
"""

from __future__ import annotations

import itertools
import re
import uuid
from typing import Any

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response, page

ZONES = ("fr-par-1", "fr-par-2", "nl-ams-1", "pl-waw-1")
#: label -> the commercial types its instance_local image runs on
LOCAL_IMAGES = {
    "debian_bookworm": ("STARDUST1-S", "DEV1-S", "DEV1-M", "GP1-XS"),
    "ubuntu_noble": ("STARDUST1-S", "DEV1-S", "DEV1-M", "GP1-XS"),
}
#: label -> types of its instance_sbs image (never the one we ask for)
SBS_IMAGES = {label: ("PLAY2-PICO", "PLAY2-NANO", *types) for label, types in LOCAL_IMAGES.items()}
NOW = "2026-12-01T10:00:00.000000+00:00"
ZONED = r"/instance/v1/zones/([a-z]{2}-[a-z]{3}-\d)"
RUNNING_ACTIONS = ["poweroff", "terminate", "reboot", "stop_in_place", "backup"]
STOPPED_ACTIONS = ["poweron", "backup"]


def image_id(label: str, zone: str, kind: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{label}/{zone}/{kind}"))


class FakeScaleway(JsonApiFake):
    steps = {
        "create_security_group": r"^POST /instance/v1/zones/[^/]+/security_groups ",
        "set_security_group_rules": r"^PUT /instance/v1/zones/[^/]+/security_groups/[^/]+/rules ",
        "create_ip": r"^POST /instance/v1/zones/[^/]+/ips ",
        "create_server": r"^POST /instance/v1/zones/[^/]+/servers ",
        "set_user_data": r"^PATCH /instance/v1/zones/[^/]+/servers/[^/]+/user_data/cloud-init ",
        "poweron": r'^POST /instance/v1/zones/[^/]+/servers/[^/]+/action .*"poweron"',
    }
    fault_answer = (500, "internal_error", "Internal server error")

    def __init__(self, token: str = "", project: str = "") -> None:
        super().__init__(token or str(uuid.uuid4()))
        self.project = project or str(uuid.uuid4())
        self.max_per_page = 100
        self.servers: dict[str, JSON] = {}
        self.volumes: dict[str, JSON] = {}
        self.ips: dict[str, JSON] = {}
        self.security_groups: dict[str, JSON] = {}
        #: server id -> {key: content}, as PATCHed
        self.user_data: dict[str, dict[str, str]] = {}
        #: how many reads of a starting / stopping server still find it so (0 for
        #: whole-CLI tests, whose client sleeps between polls)
        self.transition_reads = 1
        self._reads: dict[str, int] = {}
        self._ips = itertools.count(10)
        default = self._security_group(
            "fr-par-1", "Default security group", [], project_default=True
        )
        self.security_groups[default["id"]] = default
        self.route("GET", r"/marketplace/v2/local-images", self._local_images)
        for kind in ("servers", "ips", "security_groups", "volumes"):
            self.route("GET", rf"{ZONED}/{kind}", self._list(kind))
        self.route("POST", rf"{ZONED}/security_groups", self._create_security_group)
        self.route("PUT", rf"{ZONED}/security_groups/([^/]+)/rules", self._set_rules)
        self.route("DELETE", rf"{ZONED}/security_groups/([^/]+)", self._delete_security_group)
        self.route("POST", rf"{ZONED}/ips", self._create_ip)
        self.route("DELETE", rf"{ZONED}/ips/([^/]+)", self._delete_ip)
        self.route("POST", rf"{ZONED}/servers", self._create_server)
        self.route("GET", rf"{ZONED}/servers/([^/]+)", self._get_server)
        self.route("DELETE", rf"{ZONED}/servers/([^/]+)", self._delete_server)
        self.route("PATCH", rf"{ZONED}/servers/([^/]+)/user_data/([^/]+)", self._set_user_data)
        self.route("POST", rf"{ZONED}/servers/([^/]+)/action", self._action)
        self.route("DELETE", rf"{ZONED}/volumes/([^/]+)", self._delete_volume)

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """A running server the user made in the console: tags of its own, a dynamic IP."""
        with self.lock:
            zone = "fr-par-1"
            default = next(g for g in self.security_groups.values() if g["project_default"])
            server = self._new_server(
                zone,
                {
                    "name": f"users-own-{len(self.servers)}",
                    "commercial_type": "DEV1-S",
                    "image": image_id("debian_bookworm", zone, "instance_local"),
                    "tags": ["env=prod"],
                },
                default,
                [self._server_ip(str(uuid.uuid4()), self._address(), dynamic=True)],
            )
            server.update(state="running", allowed_actions=list(RUNNING_ACTIONS))
            return server["id"], server["public_ips"][0]["address"]

    def resources(self) -> set[str]:
        with self.lock:
            return (
                {f"server:{i}" for i in self.servers}
                | {f"volume:{i}" for i in self.volumes}
                | {f"ip:{i}" for i in self.ips}
                | {f"security_group:{i}" for i in self.security_groups}
            )

    def authorized(self, request: Request) -> bool:
        return request.headers.get("x-auth-token") == self.token

    def error(self, status: int, code: str, message: str) -> Response:
        if status == 401:
            body: JSON = {
                "type": "denied_authentication",
                "message": "authentication is denied",
                "method": "api_key",
                "reason": "not_found",
            }
            return Response(401, body)
        if status == 404:
            return Response(404, {"type": "unknown_resource", "message": message})
        return Response(status, {"type": code, "message": message})

    def rate_limited(self) -> Response:
        return Response(429, {"type": "too_many_requests", "message": "rate limit exceeded"})

    # -- lists ----------------------------------------------------------------
    def _list(self, kind: str) -> Any:
        table: dict[str, JSON] = getattr(self, kind)

        def handler(request: Request, match: re.Match[str]) -> Response:
            zone = match.group(1)
            if kind == "servers":
                for server_id in [s["id"] for s in self.servers.values() if s["zone"] == zone]:
                    self._observe(server_id)
            items = [i for i in table.values() if i["zone"] == zone and _selected(i, request)]
            chunk, _, _ = page(items, request, self.max_per_page)
            headers = {"X-Total-Count": str(len(items))}
            return Response(200, {kind: chunk}, headers)

        return handler

    def _local_images(self, request: Request, _: re.Match[str]) -> Response:
        label = request.query.get("image_label", [""])[0]
        zone = request.query.get("zone", [""])[0]
        wanted = request.query.get("type", ["unknown_type"])[0]
        number = int(request.query.get("page", ["1"])[0])
        images = []
        for kind, table in (("instance_local", LOCAL_IMAGES), ("instance_sbs", SBS_IMAGES)):
            if label in table and zone in ZONES and wanted in ("unknown_type", kind):
                images.append(
                    {
                        "id": image_id(label, zone, kind),
                        "arch": "x86_64",
                        "zone": zone,
                        "compatible_commercial_types": list(table[label]),
                        "label": label,
                        "type": kind,
                    }
                )
        chunk = images if number == 1 else []
        return Response(200, {"local_images": chunk, "total_count": len(images)})

    # -- security groups ------------------------------------------------------
    def _security_group(
        self, zone: str, name: str, tags: list[str], project_default: bool = False, **rest: Any
    ) -> JSON:
        return {
            "id": str(uuid.uuid4()),
            "name": name,
            "description": rest.get("description", ""),
            "enable_default_security": rest.get("enable_default_security", True),
            "inbound_default_policy": rest.get("inbound_default_policy", "accept"),
            "outbound_default_policy": rest.get("outbound_default_policy", "accept"),
            "organization": self.project,
            "project": self.project,
            "tags": tags,
            "project_default": project_default,
            "organization_default": False,
            "servers": [],
            "stateful": rest.get("stateful", True),
            "state": "available",
            "zone": zone,
            "creation_date": NOW,
            "modification_date": NOW,
            "rules": [],
        }

    def _create_security_group(self, request: Request, match: re.Match[str]) -> Response:
        body: JSON = request.body or {}
        if "stateful" not in body or not body.get("project"):
            return _validation({"stateful": ["required"], "project": ["required"]})
        fields = {k: v for k, v in body.items() if k not in ("name", "tags", "project")}
        group = self._security_group(
            match.group(1), body.get("name", ""), body.get("tags") or [], **fields
        )
        self.security_groups[group["id"]] = group
        return Response(201, {"security_group": group})

    def _set_rules(self, request: Request, match: re.Match[str]) -> Response:
        group = self.security_groups.get(match.group(2))
        if group is None:
            return self.error(404, "", '"instance_security_group" not found')
        rules = []
        for rule in (request.body or {}).get("rules") or []:
            if rule.get("protocol") not in ("TCP", "UDP", "ICMP", "ANY"):
                return _validation({"protocol": ["invalid"]})
            rules.append({"id": str(uuid.uuid4()), "editable": True, "zone": group["zone"], **rule})
        group["rules"] = rules
        return Response(200, {"rules": rules})

    def _delete_security_group(self, request: Request, match: re.Match[str]) -> Response:
        group = self.security_groups.get(match.group(2))
        if group is None:
            return self.error(404, "", '"instance_security_group" not found')
        if group["servers"] or group["project_default"]:
            return self.error(
                400, "invalid_request_error", "group is in use. you cannot delete it."
            )
        del self.security_groups[group["id"]]
        return Response(204)

    # -- flexible IPs -----------------------------------------------------------
    def _address(self) -> str:
        return f"192.0.2.{next(self._ips)}"

    def _create_ip(self, request: Request, match: re.Match[str]) -> Response:
        body: JSON = request.body or {}
        if not body.get("project"):
            return _validation({"project": ["required"]})
        ip = {
            "id": str(uuid.uuid4()),
            "address": self._address(),
            "prefix": None,
            "reverse": None,
            "server": None,
            "organization": self.project,
            "project": body["project"],
            "zone": match.group(1),
            "type": body.get("type", "routed_ipv4"),
            "state": "detached",
            "tags": body.get("tags") or [],
            "ipam_id": str(uuid.uuid4()),
        }
        self.ips[ip["id"]] = ip
        return Response(201, {"ip": ip})

    def _delete_ip(self, request: Request, match: re.Match[str]) -> Response:
        ip = self.ips.get(match.group(2))
        if ip is None:
            return self.error(404, "", '"instance_ip" not found')
        if ip["server"] is not None:
            return self.error(400, "invalid_request_error", "ip is attached to a server")
        del self.ips[ip["id"]]
        return Response(204)

    # -- servers --------------------------------------------------------------
    def _server_ip(self, ip_id: str, address: str, dynamic: bool = False) -> JSON:
        return {
            "id": ip_id,
            "address": address,
            "gateway": "62.210.0.1",
            "netmask": "32",
            "family": "inet",
            "dynamic": dynamic,
            "provisioning_mode": "dhcp",
            "tags": [],
            "ipam_id": str(uuid.uuid4()),
            "state": "attached",
        }

    def _create_server(self, request: Request, match: re.Match[str]) -> Response:
        zone = match.group(1)
        body: JSON = request.body or {}
        image = next(
            (i for i in self._images(zone) if i["id"] == body.get("image")),
            None,
        )
        if image is None:
            return self.error(404, "", '"instance_image" not found')
        if body.get("commercial_type") not in image["compatible_commercial_types"]:
            return _validation({"commercial_type": ["not compatible with the image"]})
        if not body.get("project"):
            return _validation({"project": ["required"]})
        group = self.security_groups.get(body.get("security_group") or "")
        if group is None or group["zone"] != zone:
            return self.error(404, "", '"instance_security_group" not found')
        ips = [self.ips.get(i) for i in body.get("public_ips") or []]
        if any(ip is None or ip["zone"] != zone for ip in ips):
            return self.error(404, "", '"instance_ip" not found')
        if any(ip is not None and ip["server"] is not None for ip in ips):
            return self.error(400, "invalid_request_error", "ip is already attached")
        attached = [self._server_ip(ip["id"], ip["address"]) for ip in ips if ip is not None]
        if not attached and body.get("dynamic_ip_required", True):
            attached = [self._server_ip(str(uuid.uuid4()), self._address(), dynamic=True)]
        server = self._new_server(zone, body, group, attached)
        for ip in ips:
            if ip is not None:
                ip.update(server={"id": server["id"], "name": server["name"]}, state="attached")
        return Response(201, {"server": server})

    def _images(self, zone: str) -> list[JSON]:
        return [
            {"id": image_id(label, zone, kind), "compatible_commercial_types": list(types)}
            for kind, table in (("instance_local", LOCAL_IMAGES), ("instance_sbs", SBS_IMAGES))
            for label, types in table.items()
        ]

    def _new_server(self, zone: str, body: JSON, group: JSON, public_ips: list[JSON]) -> JSON:
        server_id = str(uuid.uuid4())
        summary = {"id": server_id, "name": body["name"]}
        volume = {
            "id": str(uuid.uuid4()),
            "name": "Debian Bookworm_volume_0",
            "volume_type": "l_ssd",
            "export_uri": None,
            "organization": self.project,
            "project": self.project,
            "server": summary,
            "size": 10_000_000_000,
            "state": "available",
            "creation_date": NOW,
            "modification_date": NOW,
            "tags": [],
            "zone": zone,
        }
        self.volumes[volume["id"]] = volume
        server = {
            "id": server_id,
            "name": body["name"],
            "arch": "x86_64",
            "commercial_type": body["commercial_type"],
            "boot_type": "local",
            "organization": self.project,
            "project": body.get("project", self.project),
            "hostname": body["name"],
            "image": {"id": body["image"], "name": "Debian Bookworm", "zone": zone},
            "volumes": {"0": {**volume, "boot": False}},
            "tags": body.get("tags") or [],
            "state": "stopped",
            "protected": False,
            "state_detail": "",
            "public_ip": public_ips[0] if public_ips else None,
            "public_ips": public_ips,
            "mac_address": "de:00:00:c6:ec:bf",
            "routed_ip_enabled": body.get("routed_ip_enabled", True),
            "ipv6": None,
            "extra_networks": [],
            "dynamic_ip_required": body.get("dynamic_ip_required", True),
            "enable_ipv6": False,
            "private_ip": None,
            "creation_date": NOW,
            "modification_date": NOW,
            "bootscript": None,
            "security_group": {"id": group["id"], "name": group["name"]},
            "location": None,
            "maintenances": [],
            "allowed_actions": list(STOPPED_ACTIONS),
            "placement_group": None,
            "private_nics": [],
            "zone": zone,
            "filesystems": [],
            "end_of_service": False,
        }
        self.servers[server_id] = server
        group["servers"].append(summary)
        return server

    def _observe(self, server_id: str) -> JSON | None:
        """The server as a read finds it: a starting or stopping one settles after
        ``transition_reads`` reads (a terminated one is then gone)."""
        server = self.servers[server_id]
        if server["state"] in ("starting", "stopping"):
            reads = self._reads.get(server_id, 0)
            if reads < self.transition_reads:
                self._reads[server_id] = reads + 1
                return server
            self._reads.pop(server_id, None)
            if server["state"] == "starting":
                server.update(state="running", allowed_actions=list(RUNNING_ACTIONS))
            else:
                self._remove(server_id, with_local_volumes=True)
        return self.servers.get(server_id)

    def _remove(self, server_id: str, with_local_volumes: bool) -> None:
        server = self.servers.pop(server_id)
        for volume in server["volumes"].values():
            if with_local_volumes and volume["volume_type"] == "l_ssd":
                self.volumes.pop(volume["id"], None)
            elif volume["id"] in self.volumes:
                self.volumes[volume["id"]].update(server=None)
        for ip in self.ips.values():
            if ip["server"] and ip["server"]["id"] == server_id:
                ip.update(server=None, state="detached")
        for group in self.security_groups.values():
            group["servers"] = [s for s in group["servers"] if s["id"] != server_id]
        self.user_data.pop(server_id, None)

    def _server_or_404(self, server_id: str) -> JSON | Response:
        if server_id not in self.servers:
            return self.error(404, "", '"instance_server" not found')
        return self.servers[server_id]

    def _get_server(self, request: Request, match: re.Match[str]) -> Response:
        found = self._server_or_404(match.group(2))
        if isinstance(found, Response):
            return found
        server = self._observe(found["id"])
        if server is None:
            return self.error(404, "", '"instance_server" not found')
        return Response(200, {"server": server})

    def _delete_server(self, request: Request, match: re.Match[str]) -> Response:
        found = self._server_or_404(match.group(2))
        if isinstance(found, Response):
            return found
        if found["state"] != "stopped":
            return self.error(400, "invalid_request_error", "instance should be powered off.")
        self._remove(found["id"], with_local_volumes=False)
        return Response(204)

    def _set_user_data(self, request: Request, match: re.Match[str]) -> Response:
        found = self._server_or_404(match.group(2))
        if isinstance(found, Response):
            return found
        if not request.headers.get("content-type", "").startswith("text/plain"):
            return self.error(400, "invalid_request_error", "content-type must be text/plain")
        self.user_data.setdefault(found["id"], {})[match.group(3)] = request.raw.decode()
        return Response(204)

    def _action(self, request: Request, match: re.Match[str]) -> Response:
        found = self._server_or_404(match.group(2))
        if isinstance(found, Response):
            return found
        action = (request.body or {}).get("action", "poweron")
        if action not in found["allowed_actions"] or action not in ("poweron", "terminate"):
            return self.error(400, "invalid_request_error", f"{action} is not allowed now")
        found.update(state="starting" if action == "poweron" else "stopping", allowed_actions=[])
        task = {
            "id": str(uuid.uuid4()),
            "description": f"server_{action}",
            "status": "pending",
            "href_from": f"/servers/{found['id']}/action",
            "href_result": f"/servers/{found['id']}",
            "started_at": NOW,
            "terminated_at": None,
            "progress": 0,
            "zone": found["zone"],
        }
        return Response(202, {"task": task})

    # -- volumes --------------------------------------------------------------
    def _delete_volume(self, request: Request, match: re.Match[str]) -> Response:
        volume = self.volumes.get(match.group(2))
        if volume is None:
            return self.error(404, "", '"instance_volume" not found')
        if volume["server"] is not None:
            return self.error(400, "invalid_request_error", "a server is attached to this volume")
        del self.volumes[volume["id"]]
        return Response(204)


def _validation(fields: JSON) -> Response:
    return Response(
        400, {"type": "invalid_request_error", "message": "Validation Error", "fields": fields}
    )


def _selected(item: JSON, request: Request) -> bool:
    """Apply ``tags`` (comma-separated, every one must be on the item), ``project``, ``name``."""
    wanted = [t for t in request.query.get("tags", [""])[0].split(",") if t]
    if any(tag not in item.get("tags", []) for tag in wanted):
        return False
    project = request.query.get("project", [""])[0]
    if project and item.get("project") != project:
        return False
    return request.query.get("name", [""])[0] in item.get("name", "")
