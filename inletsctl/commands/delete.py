"""`inletsctl delete`: remove a host and everything made with it."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import HostUnknown, UsageError, map_provider_errors
from inletsctl.output import Format, emit_json, stdout
from inletsctl.providers_config import Access, open_provider
from inletsctl.store import HostRecord, Store


def register(app: typer.Typer) -> None:
    app.command()(delete)


def _from_state(store: Store, host_id: str, ip: str) -> HostRecord | None:
    if host_id:
        try:
            return store.get(host_id)
        except HostUnknown:
            return None
    found = store.find_ip(ip)
    if len(found) > 1:
        ids = ", ".join(r.id for r in found)
        raise UsageError(f"{len(found)} hosts have IP {ip}: {ids}", hint="Delete one with --id.")
    return found[0] if found else None


@o.with_access
def delete(
    id: Annotated[str, typer.Option("--id", help="Host id from `inletsctl list`.")] = "",
    ip: Annotated[str, typer.Option("--ip", help="Host IP, instead of --id.")] = "",
    provider: Annotated[
        str, typer.Option("--provider", "-p", help="Look up hosts the state never saw here.")
    ] = "",
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """Delete a host by --id (the state knows the rest) or by --ip."""
    from inletsctl import hosts  # jinja2, cryptography: only when used

    if bool(id) == bool(ip):
        raise UsageError("pass exactly one of --id or --ip")
    store = Store()
    record = _from_state(store, id, ip)
    if record is not None and not access.region:
        access = dataclasses.replace(access, region=record.region)
    if record is not None:
        prov = open_provider(provider or record.provider, access, store.directory)
        record = hosts.delete(store, prov, record)
        doc = {"id": record.id, "provider": record.provider, "status": record.status}
    elif provider:
        prov = open_provider(provider, access, store.directory)
        with map_provider_errors():
            prov.delete(host_id=id or None, ip=ip or None)
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
