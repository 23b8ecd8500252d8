"""`inletsctl get ID`: the create summary again (token only with --show-token)."""

from __future__ import annotations

from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.output import Format, show_summary
from inletsctl.store import Store
from inletsctl.summary import check_upstream, summarise


def register(app: typer.Typer) -> None:
    app.command()(get)


def get(
    id: o.HostIdArg,
    show_token: Annotated[bool, typer.Option(help="Include the tunnel token.")] = False,
    upstream: Annotated[
        str, typer.Option(help="Upstream for the client command; default: the one saved at create.")
    ] = "",
    ports: Annotated[
        str, typer.Option(help="TCP ports for the client command; default: those of create.")
    ] = "",
    output: o.OutputOpt = Format.text,
) -> None:
    """Show a host from the state."""
    record = Store().get(id)
    check_upstream(record.mode, record.engine, upstream)
    o.parse_ports(ports)
    show_summary(summarise(record, show_token, upstream, ports), output)
