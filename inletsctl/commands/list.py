"""`inletsctl list`: hosts in the state, or found at a provider by tag (--remote)."""

from __future__ import annotations

from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import UsageError, map_provider_errors
from inletsctl.output import Format, emit_json, show_table, stdout, write_table
from inletsctl.providers_config import Access, open_provider
from inletsctl.store import Store
from inletsctl.summary import summarise


def register(app: typer.Typer) -> None:
    app.command("list")(list_hosts)


@o.with_access
def list_hosts(
    all: Annotated[bool, typer.Option("--all", help="Include deleted hosts.")] = False,
    provider: Annotated[
        str,
        typer.Option(
            "--provider", "-p", help="Only this provider.", autocompletion=o.complete_provider
        ),
    ] = "",
    remote: Annotated[
        bool, typer.Option("--remote", help="Ask the provider's API (needs --provider).")
    ] = False,
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """List hosts."""
    store = Store()
    if not remote:
        rows = [summarise(r, show_token=False) for r in store.all(include_deleted=all)]
        show_table([r for r in rows if not provider or r.provider == provider], output)
        return
    if not provider:
        raise UsageError("--remote needs --provider")
    prov = open_provider(provider, access, store.directory)
    with map_provider_errors():
        found = prov.list()
    docs = [
        {
            "id": h.id,
            "name": h.name,
            "provider": h.provider,
            "region": h.region,
            "status": h.status.value,
            "ip": h.ip,
        }
        for h in found
    ]
    if output is Format.json:
        emit_json(docs)
        return
    write_table(
        stdout(),
        ("ID", "PROVIDER", "STATUS", "IP", "NAME"),
        [(d["id"], d["provider"], d["status"], d["ip"] or "-", d["name"]) for d in docs],
    )
