"""Checks and messages shared by providers that call a token-authenticated REST API.

Kept in one place so that every cloud rejects a typo and a bad token with the same
kind of one-line message, naming the fix.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Iterable, Mapping, Sequence

from providers.credentials import INLETS_TOKEN_ENV
from providers.errors import InvalidSpec, ProviderAPIError
from providers.models import ProviderConfig

__all__ = [
    "network_cause",
    "no_usable_answer",
    "require_known",
    "token_rejected",
    "token_source",
]


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
