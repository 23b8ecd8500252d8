"""Checks, messages and the request loop shared by providers that call a REST API.

Kept in one place so that every cloud rejects a typo, a bad token and a proxy's error
page with the same kind of one-line message, naming the fix, and waits out a 429 the
same way.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from providers.credentials import INLETS_TOKEN_ENV
from providers.errors import InvalidSpec, ProviderAPIError
from providers.models import ProviderConfig

if TYPE_CHECKING:
    import requests

__all__ = [
    "TIMEOUT",
    "Refused",
    "network_cause",
    "no_usable_answer",
    "not_api_json",
    "require_known",
    "token_rejected",
    "send_json",
    "token_source",
]

#: (connect, read) seconds for one request of a JSON API called through requests
TIMEOUT = (10.0, 60.0)


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


class Refused(Exception):
    """A non-2xx answer from :func:`send_json`, for the caller's error boundary to translate.

    ``body`` is the decoded JSON, or None when the answer was not JSON.
    """

    def __init__(self, status: int, body: object) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def send_json(
    session: requests.Session,
    method: str,
    url: str,
    *,
    params: Mapping[str, str] | None,
    body: Any,
    max_retries: int,
    wait: Callable[[int], None],
) -> dict[str, Any]:
    """One request; a 429 was refused, not done, so even a POST is sent again after
    ``wait(retry)``, up to ``max_retries`` times. Raises :class:`Refused` for a status >= 400.

    requests' own exceptions pass through: the caller's boundary knows its endpoint.
    """
    retry = 0
    while True:
        response = session.request(method, url, params=params, json=body, timeout=TIMEOUT)
        if response.status_code != 429 or retry >= max_retries:
            break
        wait(retry)
        retry += 1
    if response.status_code >= 400:
        try:
            answer: object = response.json()
        except ValueError:
            answer = None
        raise Refused(response.status_code, answer)
    result: dict[str, Any] = response.json() if response.content else {}
    return result
