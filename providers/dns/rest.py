"""What the token-authenticated DNS APIs (DigitalOcean Domains, Hetzner DNS) share: the
token, a :class:`providers.cloudapi.JsonApi` with DNS's hints, and records.

Tokens come from the flag, else the API's own variables. ``INLETS_ACCESS_TOKEN`` is
not read here: it is the VM cloud's token, and a DNS API is often another account's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from providers.cloudapi import JsonApi, Missing
from providers.dns.base import Record, Zone
from providers.errors import CredentialsMissing

JSON = dict[str, Any]


def resolve(
    provider: str,
    flag_value: str,
    env_names: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """(token, where it came from, in the words a user fixes it with)."""
    env = os.environ if environ is None else environ
    if flag_value:
        return flag_value.strip(), "--access-token"
    for name in env_names:
        value = env.get(name, "").strip()
        if value:
            return value, name
    raise CredentialsMissing(
        f"{provider}: no DNS API token found",
        hint=f"Set {' or '.join(env_names)}.",
    )


def dns_api(
    provider: str,
    endpoint: str,
    endpoint_env: str,
    headers: Mapping[str, str],
    token_source: str,
    message_of: Callable[[object], str],
) -> JsonApi:
    """The API as a DNS provider calls it: a 403 means a token without DNS write access."""
    hints = {
        403: f"Give the token from {token_source} write access to DNS.",
        429: "The API kept refusing with 429 (too many requests): retry in a minute.",
    }
    return JsonApi(provider, endpoint, endpoint_env, headers, token_source, message_of, hints=hints)


def delete_all(api: JsonApi, paths: Iterable[str]) -> str:
    """DELETE each record; one already gone is what we wanted. "" (no change to wait for)."""
    for path in paths:
        try:
            api.call("DELETE", path)
        except Missing:
            pass
    return ""


def record_of(r: JSON, zone: Zone, value_key: str) -> Record:
    """A record as both APIs list it: a relative ``name``, its value under ``value_key``."""
    return Record(
        name=absolute(str(r["name"]), zone.name),
        type=str(r["type"]),
        value=str(r.get(value_key) or ""),
        ttl=int(r.get("ttl") or 0),
        id=str(r["id"]),
    )


def relative(name: str, zone: str) -> str:
    """The record name both APIs want: ``app`` in ``example.com``, ``@`` for the apex."""
    return "@" if name == zone else name.removesuffix(f".{zone}")


def absolute(name: str, zone: str) -> str:
    """The other way round: what the APIs list as ``app`` or ``@`` is ``app.example.com``."""
    name = name.rstrip(".").lower()
    return zone if name in ("@", "") else f"{name}.{zone}"
