"""The token-authenticated JSON APIs (DigitalOcean Domains, Hetzner DNS): one session,
429s waited out, and the one boundary where requests' exceptions and the API's error
bodies become ``providers.errors``.

Tokens come from the flag, else the API's own variables. ``INLETS_ACCESS_TOKEN`` is
not read here: it is the VM cloud's token, and a DNS API is often another account's.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from providers.cloudapi import Refused, no_usable_answer, not_api_json, send_json, token_rejected
from providers.dns.base import Record, Zone
from providers.errors import CredentialsMissing, ProviderAPIError

JSON = dict[str, Any]
MAX_RETRIES = 5


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


def _backoff(retry: int) -> float:
    """Seconds before retry ``retry`` (0-based) of a 429: 1, 2, 4, 8, 16."""
    return min(2.0**retry, 16.0)


class Missing(ProviderAPIError):
    """The API's 404: a record or zone that is not (or no longer) there."""


class JsonApi:
    """One JSON REST API as a DNS provider calls it."""

    def __init__(
        self,
        provider: str,
        endpoint: str,
        endpoint_env: str,
        headers: Mapping[str, str],
        token_source: str,
        message_of: Callable[[object], str],
        *,
        retry_interval: Callable[[int], float] = _backoff,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``message_of(body)`` is the API's own words in an error body ("" if none)."""
        import requests

        self.provider = provider
        self.endpoint = endpoint.rstrip("/")
        self._endpoint_env = endpoint_env
        self._token_source = token_source
        self._message_of = message_of
        self._retry_interval = retry_interval
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update(
            {**headers, "Accept": "application/json", "User-Agent": "inletsctl"}
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: JSON | None = None,
    ) -> JSON:
        """One request; a 429 was refused, not done, so even a POST is sent again."""
        with self._errors():
            return send_json(
                self._session,
                method,
                self.endpoint + path,
                params=params,
                body=body,
                max_retries=MAX_RETRIES,
                wait=lambda retry: self._sleep(self._retry_interval(retry)),
            )

    def pages(
        self,
        path: str,
        key: str,
        query: Mapping[str, str],
        per_page: int,
        more: Callable[[JSON, int], bool],
    ) -> list[JSON]:
        """Every item under ``key`` of every page; ``more(answer, page)`` says, in the
        API's own terms, whether another page follows."""
        items: list[JSON] = []
        page = 1
        while True:
            params = {**query, "page": str(page), "per_page": str(per_page)}
            answer = self.call("GET", path, params=params)
            items += answer.get(key) or []
            if not more(answer, page):
                return items
            page += 1

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import requests

        try:
            yield
        except Refused as exc:
            raise self._translate(exc.status, exc.body) from exc
        except requests.RequestException as exc:  # includes a 2xx body that is not JSON
            raise no_usable_answer(self.provider, self.endpoint, exc, self._endpoint_env) from exc

    def _translate(self, status: int, body: object) -> ProviderAPIError:
        if status == 401:
            return token_rejected(self.provider, self._token_source)
        message = self._message_of(body)
        if not message:
            return not_api_json(self.provider, self.endpoint, status, self._endpoint_env)
        if status == 404:
            return Missing(self.provider, message, code="404")
        if status == 403:
            hint = f"Give the token from {self._token_source} write access to DNS."
        elif status == 429:
            hint = "The API kept refusing with 429 (too many requests): retry in a minute."
        elif status >= 500:
            hint = (
                f"The API or a proxy before it failed: retry shortly, and check "
                f"{self._endpoint_env}."
            )
        else:
            hint = None
        return ProviderAPIError(
            self.provider, f"{message} (HTTP {status})", hint=hint, code=str(status)
        )


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
