"""`inletsctl delete`: remove a host and everything made with it."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import HostUnknown, ProviderFailure, UsageError
from inletsctl.output import Format, emit_json, literal, stderr, stdout, write_table
from inletsctl.providers_config import Access, dns_config, open_provider, opener
from inletsctl.store import HostRecord, Store

if TYPE_CHECKING:
    from inletsctl.hosts import Outcome  # jinja2, cryptography: imported when used


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


def _check_selection(all: bool, name: str, one: str, force: bool, region: str) -> None:
    """--all and --name pick rows of the state: nothing that names one host goes with them."""
    if all and name:
        raise UsageError("pass --all or --name, not both")
    if one:
        raise UsageError(
            "--all and --name select hosts from the state; an ID or --ip names one",
            hint="Drop the ID (or --ip), or drop --all / --name.",
        )
    if force:
        raise UsageError(
            "--force is for one VM inletsctl did not make; --all and --name delete only "
            "hosts inletsctl made",
            hint="Delete that VM alone: inletsctl delete --provider P --id ID --force.",
        )
    if region:
        raise UsageError(
            "--all and --name delete each host in the region the state has for it",
            hint="Drop --region.",
        )


_COLUMNS = ("ID", "PROVIDER", "REGION", "STATUS", "IP", "NAME")


def _confirm(records: Sequence[HostRecord]) -> None:
    """List what goes and ask on a terminal; in a script, refuse: nobody can answer."""
    count = f"{len(records)} host{'s' if len(records) != 1 else ''}"
    if not sys.stdin.isatty():
        raise UsageError(
            f"this would delete {count} ({', '.join(r.id for r in records)}) and stdin is "
            "not a terminal to confirm it on",
            hint="Pass --yes to delete them without asking.",
        )
    rows = [(r.id, r.provider, r.region or "-", r.status, r.ip or "-", r.name) for r in records]
    write_table(stderr(), _COLUMNS, rows)
    if not typer.confirm(f"Delete these {count} and everything made with them?", err=True):
        stderr().print("Nothing deleted.", markup=False)
        raise typer.Exit(1)


def _report(outcomes: Sequence[Outcome], output: Format) -> None:
    """Each host's result; then exit 1 naming the ones left, if any."""
    failed = [x for x in outcomes if x.error is not None]
    if output is Format.json:
        emit_json([_doc(x) for x in outcomes])
    elif not outcomes:
        stderr().print("No hosts to delete.", markup=False)
    out, err = stdout(), stderr()
    for x in outcomes:
        r = x.record
        if x.error is None:
            if output is Format.text:
                out.print(literal(f"Deleted {r.id} ({r.provider})"))
            continue
        err.print(literal(f"Failed: {r.id} ({r.provider}): {x.error.message}"), style="red")
        finish = f"run `inletsctl delete --id {r.id}`"
        hint = f"{x.error.hint} Then {finish}." if x.error.hint else f"Fix it, then {finish}."
        err.print(literal(f"  Hint: {hint}"))
    if failed:
        ids = ", ".join(x.record.id for x in failed)
        raise ProviderFailure(
            f"{len(failed)} of {len(outcomes)} hosts were not deleted: {ids}",
            hint="Fix what each says above, then `inletsctl delete --id ID` finishes it.",
        )


def _doc(outcome: Outcome) -> dict[str, str]:
    r = outcome.record
    doc = {"id": r.id, "provider": r.provider, "name": r.name, "status": r.status}
    if outcome.error is not None:
        doc |= {"error": outcome.error.message, "hint": outcome.error.hint}
    return doc


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
            help="Look up hosts the state never saw here; with --all or --name, only "
            "this provider's.",
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
    all: Annotated[
        bool,
        typer.Option("--all", help="Every host in the state (of --provider, if given)."),
    ] = False,
    name: Annotated[
        str, typer.Option("--name", help="Every host in the state with this name.")
    ] = "",
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Delete what --all or --name selects without asking."),
    ] = False,
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """Delete a host by ID (the state knows the rest) or by --ip; or --all, or by --name.

    A host the state never saw needs --provider: the id is tried as inletsctl's host id
    (everything tagged with it goes), then as the provider's own id. --all and --name
    list what they select and ask first (a script passes --yes).
    """
    from inletsctl import deploy, hosts  # jinja2, cryptography: only when used

    if all or name:
        _check_selection(all, name, host_id or id or ip, force, access.region)
        store = Store()
        records = hosts.select(store, provider, name)
        if not records and name:
            raise HostUnknown(
                f"no host named {name!r} in the state",
                hint="Run `inletsctl list` to see the hosts and their names.",
            )
        if records and not yes:
            _confirm(records)
        outcomes = hosts.delete_each(
            store,
            records,
            opener(access, store.directory),
            partial(dns_config, access),
            partial(deploy.remove_registered, access, store),
        )
        _report(outcomes, output)
        return
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
        record = hosts.delete(
            store,
            prov,
            record,
            partial(dns_config, access),
            partial(deploy.remove_registered, access, store),
        )
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
