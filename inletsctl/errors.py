"""Errors the CLI shows to a user: one line of message plus a hint, never a traceback.

Tree::

    InletsctlError                 root; caught once in ``cli.main``
    ├── UsageError                 bad flags or values (exit code 2)
    ├── StateError                 the host state file is unreadable, corrupt or newer
    ├── HostUnknown                no host with that id / ip in the state
    ├── ProviderFailure            a provider (or the user-data) failed; wraps ProviderError
    │   └── NoCapacity             that region is full or the quota used up: another may work
    └── NotReady                   create --wait gave up at --timeout; the host is kept

``map_provider_errors`` is the one boundary where ``providers.errors`` become ours:
spec errors the user can fix by changing a flag are usage errors, the rest failures
(``NotOurs`` too: the flags were right, the VM is someone else's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from providers.errors import (
    CapacityError,
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    NotOurs,
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


class NoCapacity(ProviderFailure):
    """The one failure after which ``create --region a,b`` tries the next region."""


class NotReady(InletsctlError):
    """The host exists but did not get ready in time; it is kept so its logs can be read.

    ``host_id`` lets ``create -o json`` still print the host's document before exit 1.
    """

    def __init__(self, message: str, hint: str, host_id: str) -> None:
        super().__init__(message, hint)
        self.host_id = host_id


_USAGE = (ProviderNotFound, InvalidSpec, CredentialsMissing, UserDataTooLarge)


@contextmanager
def map_provider_errors() -> Iterator[None]:
    try:
        yield
    except HostNotFound as exc:
        raise HostUnknown(exc.message, exc.hint) from exc
    except _USAGE as exc:
        raise UsageError(exc.message, exc.hint) from exc
    except NotOurs as exc:
        raise ProviderFailure(exc.message, exc.hint) from exc
    except CapacityError as exc:
        raise NoCapacity(exc.message, exc.hint) from exc
    except ProviderError as exc:
        raise ProviderFailure(exc.message, exc.hint) from exc
