"""`inletsctl logs ID`: what the provider can show of a host's console.

When a host stays ``unready`` the answer is on the VM (cloud-init could not fetch the
engine, the unit failed), and a cloud's console output is the only view of it that
needs no SSH key. Providers offer it through the optional ``console_output`` method;
for one without it, the user is pointed at the places that have it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import ProviderFailure, map_provider_errors
from inletsctl.output import Format, emit_json, printable
from inletsctl.providers_config import Access, open_provider
from inletsctl.store import Store


def register(app: typer.Typer) -> None:
    app.command()(logs)


@o.with_access
def logs(
    id: o.HostIdArg,
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """Print a host's console output (what the VM logged while booting), as the provider has it."""
    store = Store()
    record = store.get(id)
    if not access.region:
        access = dataclasses.replace(access, region=record.region)
    prov = open_provider(record.provider, access, store.directory)
    console_output: Callable[[str], str] | None = getattr(prov, "console_output", None)
    if console_output is None:
        raise ProviderFailure(
            f"{record.provider}: this provider has no console output API",
            hint=(
                "Open the VM's console in the cloud's web console, or ssh to it and run "
                "`journalctl -u cloud-final -u tunnel-core`."
            ),
        )
    if not record.provider_id:
        raise ProviderFailure(
            f"host {id} has no provider id: its create never got an answer",
            hint=f"Remove whatever it left with `inletsctl delete --id {id}`.",
        )
    with map_provider_errors():
        text = console_output(record.provider_id)
    if output is Format.json:
        emit_json({"id": record.id, "provider": record.provider, "console_output": text})
        return
    if sys.stdout.isatty():
        text = printable(text, keep="\n\t")  # a VM's console must not drive the terminal
    sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
