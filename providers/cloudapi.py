"""Checks, messages and the request loop shared by providers that call a REST API.

Kept in one place so that every cloud rejects a typo, a bad token and a proxy's error
page with the same kind of one-line message, naming the fix, and waits out a 429 the
same way.
"""

from __future__ import annotations

import difflib
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from providers.credentials import INLETS_TOKEN_ENV
from providers.errors import InvalidSpec, ProviderAPIError
from providers.models import ProviderConfig

__all__ = [
    "TIMEOUT",
    "JsonApi",
    "Missing",
    "network_cause",
    "no_usable_answer",
    "not_api_json",
    "require_known",
    "token_rejected",
    "token_source",
]

#: (connect, read) seconds for one request of a :class:`JsonApi`
TIMEOUT = (10.0, 60.0)
#: 429s a :class:`JsonApi` waits out before the call fails
MAX_RETRIES = 5


def require_known(provider: str, kind: str, value: str, known: Iterable[str]) -> None:
    """Fail before any resource exists when ``value`` is not one the API lists."""
    choices = sorted(set(known))
    if value in choices:
        return
    close = difflib.get_close_matches(value, choices, n=3, cutoff=0.5)
    hint = f"Did you mean {' or '.join(close)}? " if close else ""
    raise InvalidSpec(
        f"{provider}: unknown {kind} {value!r}",
        hint=f"{hint}Valid values: {', '.join(choices)}.",
    )


def token_source(
    config: ProviderConfig, sdk_env: Sequence[str], environ: Mapping[str, str] | None = None
) -> str:
    """Where the token in use came from, in the words a user would fix it with."""
    env = os.environ if environ is None else environ
    if config.access_token:
        return "--access-token"
    for name in (*sdk_env, INLETS_TOKEN_ENV):
        if env.get(name, "").strip():
            return name
    return sdk_env[0]


def token_rejected(provider: str, source: str) -> ProviderAPIError:
    """The one-line 401 error: which token was refused and where it was set."""
    return ProviderAPIError(
        provider,
        f"the API rejected the token from {source} (401 Unauthorized)",
        hint=f"Set {source} to a valid read/write API token.",
        code="unauthorized",
    )


def network_cause(exc: BaseException) -> str:
    """The operating system's words for a failed connection (``Connection refused``).

    SDKs wrap it several layers deep (requests -> urllib3 -> socket), and their own
    text is a paragraph of pool and object reprs; this digs it out of the chain,
    the ``reason`` and the ``args``. "" when there is no socket error underneath.
    """
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        err = todo.pop(0)
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror):
            return f"cannot resolve the host name ({err.strerror or err})"
        if isinstance(err, TimeoutError):
            return "timed out"
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
        nested = (err.__cause__, err.__context__, getattr(err, "reason", None), *err.args)
        todo += [e for e in nested if isinstance(e, BaseException)]
    return ""


def no_usable_answer(
    provider: str, endpoint: str, exc: BaseException, endpoint_env: str
) -> ProviderAPIError:
    """The one-line error for an API that could not be reached, or answered no API's words."""
    cause = network_cause(exc)
    what = f"cannot reach {endpoint}: {cause}" if cause else f"no usable answer from {endpoint}"
    return ProviderAPIError(
        provider,
        what,
        hint=f"Check the network and proxy, or {endpoint_env} / --endpoint-url; "
        "`-v` shows the full error.",
    )


def not_api_json(provider: str, endpoint: str, status: int, fix: str) -> ProviderAPIError:
    """The error for an answer that carries none of the API's JSON (a proxy's error page).

    ``status`` is 0 when the HTTP status is unknown; ``fix`` names the variable (and
    flag) that point at the endpoint, e.g. ``"LINODE_URL / --endpoint-url"``.
    """
    how = f" HTTP {status}" if status else ""
    return ProviderAPIError(
        provider,
        f"{endpoint} answered{how} with something that is not the API's JSON",
        hint=f"Check {fix} and any proxy; `-v` shows the full error.",
        code=str(status or ""),
    )


def _backoff(retry: int) -> float:
    """Seconds before retry ``retry`` (0-based) of a 429: 1, 2, 4, 8, 16."""
    return min(2.0**retry, 16.0)


class Missing(ProviderAPIError):
    """The API's 404: callers turn it into a HostNotFound, or "already gone"."""


class _Refused(Exception):
    """A non-2xx answer, raised inside the error boundary and translated there."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class JsonApi:
    """A token-authenticated JSON REST API called through one requests session: 429s
    waited out, and the one boundary where requests' exceptions and the API's error
    bodies become ``providers.errors``."""

    def __init__(
        self,
        provider: str,
        endpoint: str,
        endpoint_env: str,
        headers: Mapping[str, str],
        token_source: str,
        message_of: Callable[[object], str],
        *,
        hints: Mapping[int, str] | None = None,
        not_json_fix: str = "",
        retry_interval: Callable[[int], float] = _backoff,
        max_retries: int = MAX_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``message_of(body)`` is the API's own words in an error body ("" if none);
        ``hints`` adds the API's own advice for a status below 500 (403, 429);
        ``not_json_fix`` is what an answer without the API's JSON tells the user to
        check (``endpoint_env`` unless given)."""
        import requests

        self.provider = provider
        self.endpoint = endpoint.rstrip("/")
        self._endpoint_env = endpoint_env
        self._token_source = token_source
        self._message_of = message_of
        self._hints = dict(hints or {})
        self._not_json_fix = not_json_fix or endpoint_env
        self._retry_interval = retry_interval
        self._max_retries = max_retries
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
        body: Any = None,
    ) -> dict[str, Any]:
        """One request; a 429 was refused, not done, so even a POST is sent again."""
        with self._errors():
            retry = 0
            while True:
                response = self._session.request(
                    method, self.endpoint + path, params=params, json=body, timeout=TIMEOUT
                )
                if response.status_code != 429 or retry >= self._max_retries:
                    break
                self._sleep(self._retry_interval(retry))
                retry += 1
            if response.status_code >= 400:
                try:
                    answer: object = response.json()
                except ValueError:
                    answer = None
                raise _Refused(response.status_code, answer)
            result: dict[str, Any] = response.json() if response.content else {}
            return result

    def pages(
        self,
        path: str,
        key: str,
        query: Mapping[str, str],
        per_page: int,
        more: Callable[[dict[str, Any], int], bool],
    ) -> list[dict[str, Any]]:
        """Every item under ``key`` of every numbered page; ``more(answer, page)`` says,
        in the API's own terms, whether another page follows."""
        items: list[dict[str, Any]] = []
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
        except _Refused as exc:
            raise self._translate(exc.status, exc.body) from exc
        except requests.RequestException as exc:  # includes a 2xx body that is not JSON
            raise no_usable_answer(self.provider, self.endpoint, exc, self._endpoint_env) from exc

    def _translate(self, status: int, body: object) -> ProviderAPIError:
        if status == 401:
            return token_rejected(self.provider, self._token_source)
        message = self._message_of(body)
        if not message:
            return not_api_json(self.provider, self.endpoint, status, self._not_json_fix)
        if status == 404:
            return Missing(self.provider, message, code="404")
        hint = self._hints.get(status)
        if hint is None and status >= 500:
            hint = (
                f"The API or a proxy before it failed: retry shortly, and check "
                f"{self._endpoint_env}."
            )
        return ProviderAPIError(
            self.provider, f"{message} (HTTP {status})", hint=hint, code=str(status)
        )
