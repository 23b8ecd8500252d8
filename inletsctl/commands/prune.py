"""`inletsctl prune`: mark the hosts their provider no longer has; delete nothing."""

from __future__ import annotations

from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import ProviderFailure, UsageError
from inletsctl.output import Format, emit_json, literal, stderr, stdout
from inletsctl.providers_config import Access, opener
from inletsctl.store import Store


def register(app: typer.Typer) -> None:
    app.command()(prune)


@o.with_access
def prune(
    provider: Annotated[
        str,
        typer.Option(
            "--provider", "-p", help="Only this provider.", autocompletion=o.complete_provider
        ),
    ] = "",
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """Mark as gone the hosts in the state that their provider no longer has.

    Each provider is asked for its hosts tagged as inletsctl's (one list per provider and
    region); nothing at any provider is deleted or changed.
    """
    from inletsctl import hosts  # jinja2, cryptography: only when used

    if access.region:
        raise UsageError(
            "prune asks each provider in the regions the state has for its hosts",
            hint="Drop --region.",
        )
    store = Store()
    result = hosts.prune(store, opener(access, store.directory), provider)
    if output is Format.json:
        emit_json(
            {
                "gone": [r.id for r in result.gone],
                "kept": [r.id for r in result.kept],
                "unasked": [
                    {
                        "provider": u.provider,
                        "region": u.region,
                        "error": u.error.message,
                        "ids": [r.id for r in u.records],
                    }
                    for u in result.unasked
                ],
            }
        )
    else:
        out = stdout()
        for r in result.gone:
            out.print(literal(f"Gone: {r.id} ({r.provider}, {r.name}): marked gone"))
        unasked = sum(len(u.records) for u in result.unasked)
        stderr().print(
            f"{len(result.gone)} gone, {len(result.kept)} still there"
            + (f", {unasked} not asked" if unasked else "")
            + ".",
            markup=False,
        )
    err = stderr()
    for u in result.unasked:
        where = f"{u.provider} ({u.region})" if u.region else u.provider
        err.print(literal(f"Failed: {where}: {u.error.message}"), style="red")
        if u.error.hint:
            err.print(literal(f"  Hint: {u.error.hint}"))
    if result.unasked:
        names = ", ".join(sorted({u.provider for u in result.unasked}))
        raise ProviderFailure(
            f"could not list the hosts at {names}: their rows are left as they were",
            hint="Fix what each says above, then run `inletsctl prune` again.",
        )
