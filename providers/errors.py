"""Errors raised by providers.

Tree::

    ProviderError                  root; every provider failure the user can act on
    ├── ProviderNotFound           no provider registered under that name
    ├── PluginError                a provider module failed to import or is claimed twice
    ├── CredentialsMissing         no credentials found; names the variable to set
    ├── InvalidSpec                a region / plan / image / port the provider rejects up front
    ├── UserDataTooLarge           rendered user-data is over the provider's limit
    ├── ProviderAPIError           the cloud API answered with an error (code + hint)
    │   └── CapacityError          no room in that region now, or the account's quota is used up
    ├── HostNotFound               no host with that id / ip at the provider
    └── ProvisionTimeout           a cloud action did not finish within the polls allowed

Every error carries a one-line ``message`` and a ``hint`` that says what to do; the
CLI prints both without a traceback. Chain SDK exceptions with ``raise ... from exc``
so ``-v`` still shows the cause.
"""

from __future__ import annotations


class ProviderError(Exception):
    """Root of provider errors: a user-facing message plus a hint."""

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = self.default_hint if hint is None else hint

    def __str__(self) -> str:
        return self.message


class ProviderNotFound(ProviderError):
    default_hint = "Run `inletsctl create --help` to see the installed providers."


class PluginError(ProviderError):
    default_hint = "Reinstall the package that provides it, or remove it."


class CredentialsMissing(ProviderError):
    default_hint = "Pass --access-token-file, or set the variable named above."


class InvalidSpec(ProviderError):
    pass


class UserDataTooLarge(ProviderError):
    default_hint = "Use fewer or shorter options (domains, ports) so the user-data fits."


class ProviderAPIError(ProviderError):
    def __init__(
        self, provider: str, message: str, hint: str | None = None, code: str = ""
    ) -> None:
        super().__init__(f"{provider}: {message}", hint)
        self.provider = provider
        self.code = code


class CapacityError(ProviderAPIError):
    """The cloud would take the request elsewhere or later, not as it is here and now.

    A region out of capacity for the plan, or an account at its instance / vCPU /
    server quota: the flags are valid, so this is no usage error, and another region
    may well work, which is what ``create --region a,b`` tries next. Auth and
    validation errors are never this: trying another region would not fix them.
    """


class HostNotFound(ProviderError):
    default_hint = "Run `inletsctl list --all` to see the hosts inletsctl knows of."


class NotOurs(ProviderError):
    default_hint = "inletsctl never deletes what it did not make; pass --force to delete it anyway."


class UndoFailed(ProviderError):
    """What a failed create made could not all be removed; ``host_id`` finishes it."""

    def __init__(self, host_id: str, cause: str, failure: str, cause_hint: str = "") -> None:
        # Nothing may have been made (an endpoint that never answered), so say what could
        # not be done, keep the hint that fixes the cause, and name the command after it.
        finish = f"Then run `inletsctl delete --id {host_id}`: it removes whatever was made."
        super().__init__(
            f"{cause}; looking up and removing what it made failed too: {failure}",
            hint=f"{cause_hint} {finish}" if cause_hint else finish,
        )
        self.host_id = host_id


class ProvisionTimeout(ProviderError):
    default_hint = "Run the same command again shortly; `inletsctl delete --id ID` removes it."
