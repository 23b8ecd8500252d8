"""Option types shared by several commands, so every command spells them the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from inletsctl.output import Format
from inletsctl.providers_config import Access

OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="text for people, json for scripts.")
]
ProviderOpt = Annotated[str, typer.Option("--provider", "-p", help="local, ec2, aws, ...")]

_CRED = "Credentials"
AccessTokenOpt = Annotated[
    str,
    typer.Option(help="API token (prefer the file or the SDK's variable).", rich_help_panel=_CRED),
]
AccessTokenFileOpt = Annotated[
    Path | None, typer.Option(help="File holding the API token.", rich_help_panel=_CRED)
]
SecretKeyOpt = Annotated[str, typer.Option(help="Secret key (AWS).", rich_help_panel=_CRED)]
SecretKeyFileOpt = Annotated[
    Path | None, typer.Option(help="File holding the secret key.", rich_help_panel=_CRED)
]
SessionTokenOpt = Annotated[str, typer.Option(help="Session token (AWS).", rich_help_panel=_CRED)]
ProfileOpt = Annotated[str, typer.Option(help="SDK profile name (AWS).", rich_help_panel=_CRED)]
EndpointOpt = Annotated[
    str, typer.Option(help="Override the provider's API endpoint.", rich_help_panel=_CRED)
]
RegionOpt = Annotated[str, typer.Option(help="Region; the provider's default if empty.")]


def access(
    access_token: str,
    access_token_file: Path | None,
    secret_key: str,
    secret_key_file: Path | None,
    session_token: str,
    profile: str,
    endpoint_url: str,
    region: str,
) -> Access:
    return Access(
        access_token=access_token,
        access_token_file=access_token_file,
        secret_key=secret_key,
        secret_key_file=secret_key_file,
        session_token=session_token,
        profile=profile,
        endpoint_url=endpoint_url,
        region=region,
    )
