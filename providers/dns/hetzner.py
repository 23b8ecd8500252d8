"""Hetzner DNS (``https://dns.hetzner.com/api/v1``): records in the zones of a DNS Console
account, whose token is not the Cloud API's.

The token travels in the ``Auth-API-Token`` header; it comes from ``HETZNER_DNS_TOKEN``
(as Ansible's community.dns reads it) or ``HETZNER_DNS_API_TOKEN`` (the Terraform
provider's), and the endpoint from ``HETZNER_DNS_ENDPOINT``. The API has no change
status: a record is served once its create answered, so :meth:`wait` has nothing to
wait for and the kit reads the records back instead. Records are listed per zone
(there is no filter by name), paginated as zones are.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from providers.dns.base import DnsConfig, Record, Zone
from providers.dns.rest import JSON, delete_all, dns_api, record_of, relative, resolve

__all__ = ["HetznerDns"]

NAME = "hetzner"
TOKEN_ENV = ("HETZNER_DNS_TOKEN", "HETZNER_DNS_API_TOKEN")
ENDPOINT_ENV = "HETZNER_DNS_ENDPOINT"
DEFAULT_ENDPOINT = "https://dns.hetzner.com/api/v1"
PER_PAGE = 100


def _message(body: object) -> str:
    """``{"error": {"message": ..., "code": ...}}``, or the gateway's ``{"message": ...}``."""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else body.get("message")
    return message if isinstance(message, str) else ""


class HetznerDns:
    name: ClassVar[str] = NAME

    def __init__(self, config: DnsConfig) -> None:
        token, source = resolve(NAME, config.token, TOKEN_ENV)
        endpoint = config.endpoint_url or os.environ.get(ENDPOINT_ENV, "") or DEFAULT_ENDPOINT
        self._api = dns_api(
            NAME, endpoint, ENDPOINT_ENV, {"Auth-API-Token": token}, source, _message
        )

    def zones(self) -> list[Zone]:
        return [
            Zone(id=str(z["id"]), name=str(z["name"]).lower())
            for z in self._list("/zones", "zones")
        ]

    def records(self, zone: Zone, name: str = "") -> list[Record]:
        found = self._list("/records", "records", {"zone_id": zone.id})
        records = [record_of(r, zone, "value") for r in found]
        return [r for r in records if not name or r.name == name]

    def create(self, zone: Zone, records: Sequence[Record]) -> str:
        for r in records:
            body = {"zone_id": zone.id, "type": r.type, "name": relative(r.name, zone.name)}
            self._api.call("POST", "/records", body={**body, "value": r.value, "ttl": r.ttl})
        return ""

    def delete(self, zone: Zone, records: Sequence[Record]) -> str:
        return delete_all(self._api, (f"/records/{r.id}" for r in records))

    def wait(self, change: str, timeout: float) -> None:
        """Nothing to wait for: the API serves a record once it answered its create."""

    def _list(self, path: str, key: str, query: dict[str, str] | None = None) -> list[JSON]:
        return self._api.pages(path, key, query or {}, PER_PAGE, _more)


def _more(answer: JSON, page: int) -> bool:
    """Pages go up to ``meta.pagination.last_page``."""
    pagination = (answer.get("meta") or {}).get("pagination") or {}
    return page < int(pagination.get("last_page") or 1)
