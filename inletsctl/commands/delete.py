"""`inletsctl delete`: remove a host and everything made with it."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import HostUnknown, UsageError
from inletsctl.output import Format, emit_json, stderr, stdout
from inletsctl.providers_config import Access, open_provider
from inletsctl.store import HostRecord, Store


def register(app: typer.Typer) -> None:
    app.command()(delete)


def _from_state(store: Store, host_id: str, ip: str, provider: str) -> HostRecord | None:
    """The row for our id, or for a provider's id (so deleting by it marks the row too)."""
    if host_id:
        try:
            return store.get(host_id)
        except HostUnknown:
            return store.find_provider_id(host_id, provider)
    found = store.find_ip(ip)
    if len(found) > 1:
        ids = ", ".join(r.id for r in found)
        raise UsageError(f"{len(found)} hosts have IP {ip}: {ids}", hint="Delete one with --id.")
    return found[0] if found else None


@o.with_access
def delete(
    host_id: Annotated[
        str,
        typer.Argument(
            metavar="[ID]",
            help="Host id from `inletsctl list` (as --id).",
            show_default=False,
            autocompletion=o.complete_host_id,
        ),
    ] = "",
    id: Annotated[
        str,
        typer.Option(
            "--id", "-i", help="Host id from `inletsctl list`.", autocompletion=o.complete_host_id
        ),
    ] = "",
    ip: Annotated[str, typer.Option("--ip", help="Host IP, instead of --id.")] = "",
    provider: Annotated[
        str,
        typer.Option(
            "--provider",
            "-p",
            help="Look up hosts the state never saw here.",
            autocompletion=o.complete_provider,
        ),
    ] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Delete a VM inletsctl did not make (with --provider); prints a warning.",
        ),
    ] = False,
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """Delete a host by ID (the state knows the rest) or by --ip.

    A host the state never saw needs --provider: the id is tried as inletsctl's host id
    (everything tagged with it goes), then as the provider's own id.
    """
    from inletsctl import hosts  # jinja2, cryptography: only when used

    if host_id and id and host_id != id:
        raise UsageError(f"two ids: {host_id!r} and --id {id!r}", hint="Give one.")
    id = host_id or id
    if bool(id) == bool(ip):
        raise UsageError("pass exactly one of ID (or --id) or --ip")
    store = Store()
    record = _from_state(store, id, ip, provider)
    if record is not None and not access.region:
        access = dataclasses.replace(access, region=record.region)
    if record is not None:
        prov = open_provider(provider or record.provider, access, store.directory)
        record = hosts.delete(store, prov, record)
        doc = {"id": record.id, "provider": record.provider, "status": record.status}
    elif provider:
        prov = open_provider(provider, access, store.directory)
        if force:
            stderr().print(
                f"Warning: --force: {id or ip} is deleted at {provider} even if inletsctl "
                "did not make it (only the VM, nothing around it).",
                style="yellow",
                markup=False,
            )
        hosts.delete_unrecorded(prov, host_id=id, ip=ip, force=force)
        doc = {"id": id, "ip": ip, "provider": provider, "status": "deleted"}
    else:
        what = f"id {id!r}" if id else f"IP {ip}"
        raise HostUnknown(
            f"no host with {what} in the state",
            hint="Pass --provider (and credentials) to find it at the provider.",
        )
    if output is Format.json:
        emit_json(doc)
    else:
        stdout().print(f"Deleted {doc['id'] or doc['ip']} ({doc['provider']})", markup=False)
