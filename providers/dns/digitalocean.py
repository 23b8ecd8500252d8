"""DigitalOcean's Domains API (``/v2/domains``): records in the zones the account hosts.

The REST API is called directly: python-digitalocean's ``Domain`` hides the status of
a failed call, and these four endpoints need nothing it adds. The token is the one
the droplet provider uses (``DIGITALOCEAN_ACCESS_TOKEN``), and so is the endpoint
setting (``DIGITALOCEAN_END_POINT``). The API has no change status: a record is
served once the create call answered 201, so :meth:`wait` has nothing to wait for
and the kit reads the records back instead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from providers.dns.base import DnsConfig, Record, Zone
from providers.dns.rest import JSON, delete_all, dns_api, record_of, relative, resolve

__all__ = ["DigitalOceanDns"]

NAME = "digitalocean"
TOKEN_ENV = ("DIGITALOCEAN_ACCESS_TOKEN",)
ENDPOINT_ENV = "DIGITALOCEAN_END_POINT"
DEFAULT_ENDPOINT = "https://api.digitalocean.com/v2"
#: the largest page the API serves
PER_PAGE = 200


def _message(body: object) -> str:
    """The documented error body: ``{"id": "not_found", "message": "..."}``."""
    message = body.get("message") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""


class DigitalOceanDns:
    name: ClassVar[str] = NAME

    def __init__(self, config: DnsConfig) -> None:
        token, source = resolve(NAME, config.token, TOKEN_ENV)
        endpoint = config.endpoint_url or os.environ.get(ENDPOINT_ENV, "") or DEFAULT_ENDPOINT
        self._api = dns_api(
            NAME, endpoint, ENDPOINT_ENV, {"Authorization": f"Bearer {token}"}, source, _message
        )

    def zones(self) -> list[Zone]:
        return [
            Zone(id=d["name"], name=d["name"].lower()) for d in self._list("/domains", "domains")
        ]

    def records(self, zone: Zone, name: str = "") -> list[Record]:
        # ``name`` filters by the fully qualified name, as the API reference says
        query = {"name": name} if name else {}
        found = self._list(f"/domains/{zone.id}/records", "domain_records", query)
        return [record_of(r, zone, "data") for r in found]

    def create(self, zone: Zone, records: Sequence[Record]) -> str:
        for r in records:
            body = {"type": r.type, "name": relative(r.name, zone.name), "data": r.value}
            self._api.call("POST", f"/domains/{zone.id}/records", body={**body, "ttl": r.ttl})
        return ""

    def delete(self, zone: Zone, records: Sequence[Record]) -> str:
        return delete_all(self._api, (f"/domains/{zone.id}/records/{r.id}" for r in records))

    def wait(self, change: str, timeout: float) -> None:
        """Nothing to wait for: the API serves a record once it answered its create."""

    def _list(self, path: str, key: str, query: dict[str, str] | None = None) -> list[JSON]:
        return self._api.pages(path, key, query or {}, PER_PAGE, _more)


def _more(answer: JSON, page: int) -> bool:
    """``links.pages.next`` is there while another page follows."""
    return bool(((answer.get("links") or {}).get("pages") or {}).get("next"))
