"""Errors the CLI shows to a user: one line of message plus a hint, never a traceback.

Tree::

    InletsctlError                 root; caught once in ``cli.main``
    ├── UsageError                 bad flags or values (exit code 2)
    ├── StateError                 the host state file is unreadable, corrupt or newer
    ├── HostUnknown                no host with that id / ip in the state
    └── ProviderFailure            a provider (or the user-data) failed; wraps ProviderError

``map_provider_errors`` is the one boundary where ``providers.errors`` become ours:
spec errors the user can fix by changing a flag are usage errors, the rest failures.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from providers.errors import (
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    ProviderError,
    ProviderNotFound,
    UserDataTooLarge,
)


class InletsctlError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(InletsctlError):
    exit_code = 2


class StateError(InletsctlError):
    pass


class HostUnknown(InletsctlError):
    pass


class ProviderFailure(InletsctlError):
    pass


_USAGE = (ProviderNotFound, InvalidSpec, CredentialsMissing, UserDataTooLarge)


@contextmanager
def map_provider_errors() -> Iterator[None]:
    try:
        yield
    except HostNotFound as exc:
        raise HostUnknown(exc.message, exc.hint) from exc
    except _USAGE as exc:
        raise UsageError(exc.message, exc.hint) from exc
    except ProviderError as exc:
        raise ProviderFailure(exc.message, exc.hint) from exc
