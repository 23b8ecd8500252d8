"""A stateful fake of the DigitalOcean API v2 endpoints that the provider uses.

Shapes follow the API reference: ``{"droplet": ...}`` with ``links.actions`` on
create, ``links.pages`` / ``meta.total`` on lists, ``{"id", "message"}`` error
bodies, ``ratelimit-*`` headers on every answer and ``retry-after`` on a 429.
A new droplet is ``new`` without an address, and ``active`` with one from the
second time it is read, as the real API reports a booting droplet.

Domains (``/v2/domains``) hold records as the Domains API shows them: ``name``
relative to the domain (``@`` for the apex) in answers and creates, but fully
qualified in the ``name`` query filter; ``data`` is the value, 201 on create, 204 on
delete. :class:`FakeDigitalOceanDns` names the DNS steps a fault can be armed at.
"""

from __future__ import annotations

import itertools
import re
import time
import uuid
from typing import Any

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response, page

REGIONS = ("lon1", "fra1", "ams3", "nyc1", "sfo3", "sgp1")
SIZES = {"s-1vcpu-512mb-10gb": 4.0, "s-1vcpu-1gb": 6.0, "s-2vcpu-2gb": 18.0}
IMAGES = ("debian-13-x64", "debian-12-x64", "ubuntu-24-04-x64")
#: documented body of a 429
RATE_LIMITED = {"id": "too_many_requests", "message": "API Rate limit exceeded."}


class FakeDigitalOcean(JsonApiFake):
    steps = {
        "create_droplet": r"^POST /v2/droplets/? ",
        "create_firewall": r"^POST /v2/firewalls/? ",
    }
    prefix = "/v2"

    def __init__(self, token: str = "test-token", retry_after: int | None = 7) -> None:
        super().__init__(token)
        self.retry_after = retry_after
        #: epoch second sent as ``ratelimit-reset``
        self.reset_at = int(time.time()) + 60
        self.max_per_page = 200
        #: sizes a region offers, where it is not all of them
        self.region_sizes: dict[str, list[str]] = {}
        #: regions listed with ``available: false`` (closed to new droplets)
        self.closed_regions: set[str] = set()
        #: region -> (status, code, message) that a droplet create there answers, as the
        #: API does when a region is full (422 ``Region is not available``)
        self.refusals_in: dict[str, tuple[int, str, str]] = {}
        self.droplets: dict[int, JSON] = {}
        self.firewalls: dict[str, JSON] = {}
        self.tags: set[str] = set()
        self.user_data: dict[int, str] = {}
        self._reads: dict[int, int] = {}
        self._ids = itertools.count(3164444)
        self._ips = itertools.count(10)
        self.route("GET", r"/regions/?", self._list_regions)
        self.route("GET", r"/sizes/?", self._list_sizes)
        self.route("POST", r"/droplets/?", self._create_droplet)
        self.route("GET", r"/droplets/?", self._list_droplets)
        self.route("GET", r"/droplets/(\d+)/?", self._get_droplet)
        self.route("DELETE", r"/droplets/(\d+)/?", self._delete_droplet)
        self.route("POST", r"/firewalls/?", self._create_firewall)
        self.route("GET", r"/firewalls/?", self._list_firewalls)
        self.route("GET", r"/firewalls/([0-9a-f-]+)/?", self._get_firewall)
        self.route("DELETE", r"/firewalls/([0-9a-f-]+)/?", self._delete_firewall)
        #: domain name -> record id -> record
        self.domains: dict[str, dict[int, JSON]] = {}
        self.route("GET", r"/domains/?", self._list_domains)
        self.route("GET", r"/domains/([^/]+)/records/?", self._list_records)
        self.route("POST", r"/domains/([^/]+)/records/?", self._create_record)
        self.route("DELETE", r"/domains/([^/]+)/records/(\d+)/?", self._delete_record)

    # -- the FakeCloud protocol ---------------------------------------------
    def foreign_vm(self) -> tuple[str, str]:
        """A droplet the user made in the console: no tags of ours, already booted."""
        with self.lock:
            body = {
                "name": f"users-own-{len(self.droplets)}",
                "region": "lon1",
                "size": "s-1vcpu-1gb",
                "image": "debian-12-x64",
                "tags": ["prod"],
            }
            created = self._create_droplet(Request("POST", "/v2/droplets", {}, body, {}), None)
            droplet_id = created.body["droplet"]["id"]
            self._read(droplet_id)
            droplet = self._read(droplet_id)
            return str(droplet_id), droplet["networks"]["v4"][0]["ip_address"]

    def resources(self) -> set[str]:
        with self.lock:
            return {f"droplet:{i}" for i in self.droplets} | {
                f"firewall:{i}" for i in self.firewalls
            }

    def add_domain(self, name: str) -> None:
        with self.lock:
            self.domains.setdefault(name, {})

    def add_record(self, domain: str, name: str, type: str, data: str) -> None:
        """A record the user made (``name`` relative, as the console takes it)."""
        body = {"type": type, "name": name, "data": data, "ttl": 1800}
        with self.lock:
            assert self._new_record(domain, body).status == 201

    def dns_records(self) -> set[tuple[str, str, str]]:
        """Every record as (fully qualified name, type, data)."""
        with self.lock:
            return {
                (domain if r["name"] == "@" else f"{r['name']}.{domain}", r["type"], r["data"])
                for domain, records in self.domains.items()
                for r in records.values()
            }

    def error(self, status: int, code: str, message: str) -> Response:
        return Response(status, {"id": code, "message": message})

    def rate_limited(self) -> Response:
        headers = {} if self.retry_after is None else {"retry-after": str(self.retry_after)}
        return Response(429, dict(RATE_LIMITED), headers)

    def common_headers(self) -> dict[str, str]:
        return {
            "ratelimit-limit": "5000",
            "ratelimit-remaining": "4999",
            "ratelimit-reset": str(self.reset_at),
        }

    # -- lists ----------------------------------------------------------------
    def _paged(
        self, path: str, everything: list[JSON], request: Request, key: str = ""
    ) -> Response:
        """A page of ``everything`` under ``key`` (default: the last part of ``path``)."""
        key = key or path
        items, number, last = page(everything, request, self.max_per_page)
        pages: JSON = {}
        if number < last:
            per_page = min(int(request.query.get("per_page", ["25"])[0]), self.max_per_page)
            query = f"page={number + 1}&per_page={per_page}"
            if "tag_name" in request.query:
                query += f"&tag_name={request.query['tag_name'][0]}"
            pages["next"] = f"{self.base_url}/{path}?{query}"
            pages["last"] = f"{self.base_url}/{path}?page={last}&per_page={per_page}"
        return Response(
            200, {key: items, "links": {"pages": pages}, "meta": {"total": len(everything)}}
        )

    def _list_regions(self, request: Request, _: re.Match[str]) -> Response:
        regions = [
            {
                "slug": slug,
                "name": slug.upper(),
                "sizes": self.region_sizes.get(slug, list(SIZES)),
                "features": ["ipv6", "metadata"],
                "available": slug not in self.closed_regions,
            }
            for slug in REGIONS
        ]
        return self._paged("regions", regions, request)

    def _list_sizes(self, request: Request, _: re.Match[str]) -> Response:
        sizes = [
            {
                "slug": slug,
                "memory": 512,
                "vcpus": 1,
                "disk": 10,
                "transfer": 0.5,
                "price_monthly": price,
                "price_hourly": round(price / 672, 5),
                "regions": list(REGIONS),
                "available": True,
                "description": "Basic",
            }
            for slug, price in SIZES.items()
        ]
        return self._paged("sizes", sizes, request)

    # -- droplets -------------------------------------------------------------
    def _create_droplet(self, request: Request, _: re.Match[str]) -> Response:
        body = request.body or {}
        for field, known in (("region", REGIONS), ("size", SIZES), ("image", IMAGES)):
            if body.get(field) not in known:
                return self.error(
                    422,
                    "unprocessable_entity",
                    f"You specified an invalid {field} for Droplet creation.",
                )
        if body["region"] in self.refusals_in:
            return self.error(*self.refusals_in[body["region"]])
        droplet_id = next(self._ids)
        tags = list(body.get("tags") or [])
        self.tags.update(tags)
        self.user_data[droplet_id] = body.get("user_data", "")
        self.droplets[droplet_id] = {
            "id": droplet_id,
            "name": body["name"],
            "memory": 512,
            "vcpus": 1,
            "disk": 10,
            "locked": False,
            "status": "new",
            "created_at": "2026-11-23T10:00:00Z",
            "features": [],
            "backup_ids": [],
            "snapshot_ids": [],
            "image": {"slug": body["image"], "distribution": "Debian"},
            "volume_ids": [],
            "size": {"slug": body["size"]},
            "size_slug": body["size"],
            "networks": {"v4": [], "v6": []},
            "region": {"slug": body["region"], "name": body["region"].upper()},
            "tags": tags,
            "vpc_uuid": str(uuid.uuid4()),
        }
        self._reads[droplet_id] = 0
        action = {"id": next(self._ids), "rel": "create", "href": f"{self.base_url}/actions/1"}
        return Response(202, {"droplet": self.droplets[droplet_id], "links": {"actions": [action]}})

    def _read(self, droplet_id: int) -> JSON:
        """The droplet as the API shows it now: booted from its second read on."""
        droplet = self.droplets[droplet_id]
        self._reads[droplet_id] += 1
        if droplet["status"] == "new" and self._reads[droplet_id] >= 2:
            droplet["status"] = "active"
            droplet["networks"]["v4"] = [
                {
                    "ip_address": f"203.0.113.{next(self._ips)}",
                    "netmask": "255.255.255.0",
                    "gateway": "203.0.113.1",
                    "type": "public",
                }
            ]
        return droplet

    def _list_droplets(self, request: Request, _: re.Match[str]) -> Response:
        tag = request.query.get("tag_name", [""])[0]
        items = [self._read(i) for i, d in self.droplets.items() if not tag or tag in d["tags"]]
        return self._paged("droplets", items, request)

    def _get_droplet(self, request: Request, match: re.Match[str]) -> Response:
        droplet_id = int(match.group(1))
        if droplet_id not in self.droplets:
            return self.error(404, "not_found", "The resource you requested could not be found.")
        return Response(200, {"droplet": self._read(droplet_id)})

    def _delete_droplet(self, request: Request, match: re.Match[str]) -> Response:
        if self.droplets.pop(int(match.group(1)), None) is None:
            return self.error(404, "not_found", "The resource you requested could not be found.")
        return Response(204)

    # -- firewalls ------------------------------------------------------------
    def _create_firewall(self, request: Request, _: re.Match[str]) -> Response:
        body: dict[str, Any] = request.body or {}
        missing = [t for t in body.get("tags") or [] if t not in self.tags]
        if missing:
            return self.error(422, "unprocessable_entity", f"tag {missing[0]} does not exist")
        firewall_id = str(uuid.uuid4())
        self.firewalls[firewall_id] = {
            "id": firewall_id,
            "name": body["name"],
            "status": "waiting",
            "created_at": "2026-11-23T10:00:01Z",
            "pending_changes": [],
            "droplet_ids": body.get("droplet_ids") or [],
            "tags": body.get("tags") or [],
            "inbound_rules": body.get("inbound_rules") or [],
            "outbound_rules": body.get("outbound_rules") or [],
        }
        return Response(202, {"firewall": self.firewalls[firewall_id]})

    def _list_firewalls(self, request: Request, _: re.Match[str]) -> Response:
        return self._paged("firewalls", list(self.firewalls.values()), request)

    def _get_firewall(self, request: Request, match: re.Match[str]) -> Response:
        firewall = self.firewalls.get(match.group(1))
        if firewall is None:
            return self.error(404, "not_found", "The resource you requested could not be found.")
        return Response(200, {"firewall": firewall})

    def _delete_firewall(self, request: Request, match: re.Match[str]) -> Response:
        if self.firewalls.pop(match.group(1), None) is None:
            return self.error(404, "not_found", "The resource you requested could not be found.")
        return Response(204)

    # -- domains ----------------------------------------------------------------
    def _list_domains(self, request: Request, _: re.Match[str]) -> Response:
        domains = [{"name": d, "ttl": 1800, "zone_file": ""} for d in self.domains]
        return self._paged("domains", domains, request)

    def _list_records(self, request: Request, match: re.Match[str]) -> Response:
        domain = match.group(1)
        if domain not in self.domains:
            return self.error(404, "not_found", "The resource you requested could not be found.")
        wanted = request.query.get("name", [""])[0]
        kind = request.query.get("type", [""])[0]
        items = [
            r
            for r in self.domains[domain].values()
            if (not wanted or (domain if r["name"] == "@" else f"{r['name']}.{domain}") == wanted)
            and (not kind or r["type"] == kind)
        ]
        return self._paged(f"domains/{domain}/records", items, request, key="domain_records")

    def _create_record(self, request: Request, match: re.Match[str]) -> Response:
        return self._new_record(match.group(1), request.body or {})

    def _new_record(self, domain: str, body: JSON) -> Response:
        if domain not in self.domains:
            return self.error(404, "not_found", "The resource you requested could not be found.")
        if body.get("type") not in ("A", "AAAA", "CAA", "CNAME", "MX", "NS", "TXT", "SRV"):
            return self.error(422, "unprocessable_entity", "Type is not included in the list")
        if not body.get("name") or not body.get("data") or str(body["name"]).endswith(domain):
            return self.error(422, "unprocessable_entity", "Name is invalid")
        if int(body.get("ttl") or 1800) < 30:
            return self.error(422, "unprocessable_entity", "TTL must be at least 30 seconds")
        record_id = next(self._ids)
        self.domains[domain][record_id] = {
            "id": record_id,
            "type": body["type"],
            "name": body["name"],
            "data": body["data"],
            "priority": None,
            "port": None,
            "ttl": int(body.get("ttl") or 1800),
            "weight": None,
            "flags": None,
            "tag": None,
        }
        return Response(201, {"domain_record": self.domains[domain][record_id]})

    def _delete_record(self, request: Request, match: re.Match[str]) -> Response:
        records = self.domains.get(match.group(1), {})
        if records.pop(int(match.group(2)), None) is None:
            return self.error(404, "not_found", "The resource you requested could not be found.")
        return Response(204)


class FakeDigitalOceanDns(FakeDigitalOcean):
    """The same API, with the steps of ``create --dns digitalocean`` named for faults."""

    steps = {
        **FakeDigitalOcean.steps,
        "create_claim": r'^POST /v2/domains/[^/]+/records/? .*"type": "TXT"',
        "create_address": r'^POST /v2/domains/[^/]+/records/? .*"type": "A"',
    }
