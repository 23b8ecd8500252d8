"""A stateful fake of the Hetzner DNS API (``https://dns.hetzner.com/api/v1``).

Shapes follow the API reference as far as it could be read offline: the token in an
``Auth-API-Token`` header (a 401 with the gateway's ``{"message": ...}`` without it),
``{"zones": [...], "meta": {"pagination": ...}}`` and ``{"records": [...]}`` lists
filtered by ``zone_id``, ``{"record": ...}`` from a create (200), an empty 200 from a
delete, and ``{"error": {"message", "code"}}`` error bodies. Record names are relative
to the zone (``@`` for the apex).
"""

from __future__ import annotations

import re
import uuid

from providers.testing.jsonapi import JSON, JsonApiFake, Request, Response, page

TYPES = ("A", "AAAA", "NS", "MX", "CNAME", "RP", "TXT", "SOA", "HINFO", "SRV", "DANE",
         "TLSA", "DS", "CAA")  # fmt: skip


class FakeHetznerDns(JsonApiFake):
    prefix = "/api/v1"
    steps = {
        "create_claim": r'^POST /api/v1/records/? .*"type": "TXT"',
        "create_address": r'^POST /api/v1/records/? .*"type": "A"',
    }

    def __init__(self, token: str = "dns-test-token") -> None:
        super().__init__(token)
        self.max_per_page = 100
        #: zone id -> zone
        self.zones: dict[str, JSON] = {}
        #: record id -> record
        self.records: dict[str, JSON] = {}
        self.route("GET", r"/zones/?", self._list_zones)
        self.route("GET", r"/records/?", self._list_records)
        self.route("POST", r"/records/?", self._create_record)
        self.route("GET", r"/records/([0-9a-f]+)/?", self._get_record)
        self.route("DELETE", r"/records/([0-9a-f]+)/?", self._delete_record)

    def authorized(self, request: Request) -> bool:
        return request.headers.get("auth-api-token") == self.token

    def error(self, status: int, code: str, message: str) -> Response:
        if status == 401:  # the gateway answers before the API does
            return Response(401, {"message": "Invalid authentication credentials"})
        return Response(status, {"error": {"message": message, "code": status}})

    def rate_limited(self) -> Response:
        return Response(429, {"message": "API rate limit exceeded"})

    # -- test control -------------------------------------------------------
    def add_zone(self, name: str) -> str:
        with self.lock:
            zone_id = uuid.uuid4().hex[:22]
            self.zones[zone_id] = {
                "id": zone_id,
                "name": name,
                "ttl": 86400,
                "status": "verified",
                "records_count": 0,
                "is_secondary_dns": False,
                "created": "2026-11-23 10:00:00.000 +0000 UTC",
                "modified": "2026-11-23 10:00:00.000 +0000 UTC",
            }
            return zone_id

    def add_record(self, zone: str, name: str, type: str, value: str) -> None:
        """A record the user made (``name`` relative, as the console takes it)."""
        zone_id = next(i for i, z in self.zones.items() if z["name"] == zone)
        body = {"zone_id": zone_id, "name": name, "type": type, "value": value, "ttl": 3600}
        with self.lock:
            assert self._new_record(body).status == 200

    def dns_records(self) -> set[tuple[str, str, str]]:
        """Every record as (fully qualified name, type, value)."""
        with self.lock:
            out = set()
            for r in self.records.values():
                zone = self.zones[r["zone_id"]]["name"]
                out.add(
                    (zone if r["name"] == "@" else f"{r['name']}.{zone}", r["type"], r["value"])
                )
            return out

    # -- routes -----------------------------------------------------------------
    def _paged(self, key: str, everything: list[JSON], request: Request) -> Response:
        chunk, number, last = page(everything, request, self.max_per_page)
        pagination = {
            "page": number,
            "per_page": len(chunk),
            "previous_page": max(number - 1, 1),
            "next_page": min(number + 1, last),
            "last_page": last,
            "total_entries": len(everything),
        }
        return Response(200, {key: chunk, "meta": {"pagination": pagination}})

    def _list_zones(self, request: Request, _: re.Match[str]) -> Response:
        name = request.query.get("name", [""])[0]
        zones = [z for z in self.zones.values() if not name or z["name"] == name]
        return self._paged("zones", zones, request)

    def _list_records(self, request: Request, _: re.Match[str]) -> Response:
        zone_id = request.query.get("zone_id", [""])[0]
        if zone_id and zone_id not in self.zones:
            return self.error(404, "not_found", "zone not found")
        records = [r for r in self.records.values() if not zone_id or r["zone_id"] == zone_id]
        return self._paged("records", records, request)

    def _create_record(self, request: Request, _: re.Match[str]) -> Response:
        return self._new_record(request.body or {})

    def _new_record(self, body: JSON) -> Response:
        if body.get("zone_id") not in self.zones:
            return self.error(404, "not_found", "zone not found")
        if body.get("type") not in TYPES:
            return self.error(422, "unprocessable_entity", "invalid record type")
        if not body.get("name") or not body.get("value"):
            return self.error(422, "unprocessable_entity", "name and value are required")
        record_id = uuid.uuid4().hex
        record = {
            "id": record_id,
            "type": body["type"],
            "name": body["name"],
            "value": body["value"],
            "ttl": body.get("ttl"),
            "zone_id": body["zone_id"],
            "created": "2026-11-23 10:00:00.000 +0000 UTC",
            "modified": "2026-11-23 10:00:00.000 +0000 UTC",
        }
        self.records[record_id] = record
        self.zones[body["zone_id"]]["records_count"] += 1
        return Response(200, {"record": record})

    def _get_record(self, request: Request, match: re.Match[str]) -> Response:
        record = self.records.get(match.group(1))
        if record is None:
            return self.error(404, "not_found", "record not found")
        return Response(200, {"record": record})

    def _delete_record(self, request: Request, match: re.Match[str]) -> Response:
        record = self.records.pop(match.group(1), None)
        if record is None:
            return self.error(404, "not_found", "record not found")
        self.zones[record["zone_id"]]["records_count"] -= 1
        return Response(200)
