"""Option types shared by several commands, so every command spells them the same way."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from inletsctl.errors import InletsctlError, UsageError
from inletsctl.output import Format
from inletsctl.providers_config import Access
from providers.models import ServerSpec

OutputOpt = Annotated[
    Format, typer.Option("--output", "-o", help="text for people, json for scripts.")
]


def complete_provider(incomplete: str) -> list[str]:
    """Installed provider names (entry point metadata only: no SDK is imported)."""
    from providers import registry

    return [name for name in registry.names() if name.startswith(incomplete)]


def complete_host_id(incomplete: str) -> list[tuple[str, str]]:
    """Host ids in the state that are not deleted, each with its provider and name."""
    from inletsctl.store import Store

    try:
        hosts = Store().all()
    except InletsctlError:  # an unreadable state file: no suggestions, not a traceback
        return []
    return [(h.id, f"{h.provider} {h.name}") for h in hosts if h.id.startswith(incomplete)]


ProviderOpt = Annotated[
    str,
    typer.Option("--provider", "-p", help="local, ec2, aws, ...", autocompletion=complete_provider),
]
#: the positional host id of get, connect, logs and delete
HostIdArg = Annotated[
    str, typer.Argument(help="Host id from `inletsctl list`.", autocompletion=complete_host_id)
]


def parse_allow_ips(text: str) -> tuple[str, ...]:
    """``--allow-ips 203.0.113.0/24,2001:db8::/32`` -> the networks, normalised.

    Checked by the same parser as the engine's flag, so the user-data never holds a
    list the server would refuse at boot. "" -> () (everyone).
    """
    if not text.strip():
        return ()
    from tunnel_core.errors import ConfigError
    from tunnel_core.netaddr import parse_cidrs

    try:
        return tuple(str(n) for n in parse_cidrs("--allow-ips", text))
    except ConfigError as exc:
        raise UsageError(exc.message, hint=exc.hint) from None


def parse_regions(text: str) -> tuple[str, ...]:
    """``--region lon1,fra1`` -> ("lon1", "fra1"), the order they are tried in; "" -> ()."""
    regions = tuple(r for r in (part.strip() for part in text.split(",")) if r)
    twice = next((r for r in regions if regions.count(r) > 1), "")
    if twice:
        raise UsageError(
            f"--region: {twice!r} is given twice",
            hint="Give each region once; they are tried in the order given.",
        )
    return regions


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """``8080,2222:22`` -> ((8080, 8080), (2222, 22)): public port, upstream port.

    Refused here, before anything is paid for, is what the server or client would only
    refuse later: a public port given twice, or the one the control plane listens on.
    """
    pairs: dict[int, int] = {}
    control = ServerSpec.control_port
    for part in filter(None, (p.strip() for p in text.split(","))):
        public, _, upstream = part.partition(":")
        nums = [public, upstream or public]
        if not all(n.isdigit() and 1 <= int(n) <= 65535 for n in nums):
            raise UsageError(
                f"--ports: {part!r} is not PORT or PUBLIC:UPSTREAM with ports 1-65535",
                hint="Pass e.g. --ports 8080,2222:22.",
            )
        pub, up = int(nums[0]), int(nums[1])
        if pub in pairs:
            raise UsageError(
                f"--ports: public port {pub} is given twice",
                hint="Give each public port once; PUBLIC:UPSTREAM maps one to another local port.",
            )
        if pub == control:
            raise UsageError(
                f"--ports: {pub} is the tunnel's control port",
                hint=f"Expose it under another public port, e.g. --ports {control + 1}:{up}.",
            )
        pairs[pub] = up
    return tuple(pairs.items())


_CRED = "Credentials"
#: (name, annotation) of every credential / endpoint option; ``with_access`` adds them.
_ACCESS_OPTIONS: tuple[tuple[str, Any, object], ...] = (
    (
        "region",
        Annotated[
            str,
            typer.Option(
                "--region",
                "-r",
                help="Region; the provider's default if empty. create: REGION,REGION,... "
                "tries each in turn while the cloud answers with no capacity or quota.",
            ),
        ],
        "",
    ),
    (
        "access_token",
        Annotated[
            str,
            typer.Option(
                "--access-token", "-a", help="API token (prefer a file).", rich_help_panel=_CRED
            ),
        ],
        "",
    ),
    (
        "access_token_file",
        Annotated[
            Path | None,
            typer.Option(
                "--access-token-file", "-f", help="File with the API token.", rich_help_panel=_CRED
            ),
        ],
        None,
    ),
    (
        "secret_key",
        Annotated[str, typer.Option(help="Secret key (AWS).", rich_help_panel=_CRED)],
        "",
    ),
    (
        "secret_key_file",
        Annotated[
            Path | None, typer.Option(help="File with the secret key.", rich_help_panel=_CRED)
        ],
        None,
    ),
    (
        "session_token",
        Annotated[str, typer.Option(help="Session token (AWS).", rich_help_panel=_CRED)],
        "",
    ),
    (
        "profile",
        Annotated[
            str, typer.Option(help="SDK profile (AWS, Scaleway's scw).", rich_help_panel=_CRED)
        ],
        "",
    ),
    (
        "endpoint_url",
        Annotated[str, typer.Option(help="Override the API endpoint.", rich_help_panel=_CRED)],
        "",
    ),
)


#: click reads a group's options only before the subcommand, but people add ``-v`` to
#: the end of the command that just failed; so every command takes it too.
_VERBOSE_OPTION = (
    "verbose",
    Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")],
    False,
)


def _extend(
    fn: Callable[..., None],
    options: tuple[tuple[str, Any, object], ...],
    take: Callable[[dict[str, Any]], dict[str, Any]],
) -> Callable[..., None]:
    """Give a command more options; ``take`` turns their values into the kwargs it gets.

    typer reads options from the signature, so the wrapper's signature is the
    command's own, minus what ``take`` supplies, plus the options.
    """
    sig = inspect.signature(fn, eval_str=True)
    supplied = set(take({name: default for name, _, default in options}))
    params = [p for p in sig.parameters.values() if p.name not in supplied]
    params += [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
        for name, ann, default in options
    ]

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> None:
        values = {name: kwargs.pop(name) for name, _, _ in options}
        fn(*args, **kwargs, **take(values))

    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return command


def with_access(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command the credential options, passed to it as one ``access: Access``."""
    return _extend(fn, _ACCESS_OPTIONS, lambda values: {"access": Access(**values)})


def with_verbose(fn: Callable[..., None], on: Callable[[bool], None]) -> Callable[..., None]:
    """Give a command ``-v``; ``on(True)`` runs before its body when it is passed."""

    def take(values: dict[str, Any]) -> dict[str, Any]:
        if values["verbose"]:
            on(True)
        return {}

    return _extend(fn, (_VERBOSE_OPTION,), take)
