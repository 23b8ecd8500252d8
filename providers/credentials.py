"""One place that decides which secret a provider uses.

Order: an explicit flag (``--access-token`` / ``--access-token-file``, which the CLI
puts in ``ProviderConfig.access_token``), then the SDK's own variable(s), then
``INLETS_ACCESS_TOKEN``, as inletsctl users already export it. A missing token is a
``CredentialsMissing`` that names every variable that would have worked.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from providers.errors import CredentialsMissing
from providers.models import ProviderConfig

INLETS_TOKEN_ENV = "INLETS_ACCESS_TOKEN"


def resolve_token(
    provider: str,
    config: ProviderConfig,
    sdk_env: Sequence[str],
    environ: Mapping[str, str] | None = None,
) -> str:
    env = os.environ if environ is None else environ
    if config.access_token:
        return config.access_token.strip()
    for name in (*sdk_env, INLETS_TOKEN_ENV):
        value = env.get(name, "").strip()
        if value:
            return value
    names = " or ".join((*sdk_env, INLETS_TOKEN_ENV))
    raise CredentialsMissing(
        f"{provider}: no API token found",
        hint=f"Set {names}, or pass --access-token-file FILE.",
    )
