"""`inletsctl connect ID`: run the tunnel client for a host, in the foreground.

The token reaches the client through its environment, not its argv, so it never
shows in ``ps``. The client replaces this process, so signals reach it directly.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import UsageError
from inletsctl.output import Format, emit_json
from inletsctl.store import ENDED, Store
from inletsctl.summary import TOKEN_ENV, check_upstream, client_argv


def register(app: typer.Typer) -> None:
    app.command()(connect)


def connect(
    id: o.HostIdArg,
    upstream: Annotated[
        str,
        typer.Option(
            help="Where to forward: 127.0.0.1 (tcp) or http://127.0.0.1:8080; "
            "default: the one saved at create."
        ),
    ] = "",
    ports: Annotated[
        str,
        typer.Option(
            help="TCP: the public ports to ask for, PORT or PUBLIC:UPSTREAM; "
            "needed when the host was made without --ports."
        ),
    ] = "",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the command instead of running it.")
    ] = False,
    output: o.OutputOpt = Format.text,
) -> None:
    """Run the tunnel client for a host."""
    record = Store().get(id)
    if record.status in ENDED:
        raise UsageError(
            f"host {id} is {record.status}", hint="Create a new one: inletsctl create."
        )
    if record.engine != "tunnel-core":
        raise UsageError(
            f"host {id} runs {record.engine}; connect runs tunnel-core clients only",
            hint=f"Run the client command from `inletsctl get {id} --show-token`.",
        )
    check_upstream(record.mode, record.engine, upstream)
    o.parse_ports(ports)
    if record.mode == "tcp" and not (ports or record.ports):
        raise UsageError(
            f"host {id} was made without --ports: its server takes any port 1024-65535",
            hint=f"Say which: inletsctl connect {id} --ports 2222:22,8080.",
        )
    argv = [sys.executable, "-m", "tunnel_core", *client_argv(record, upstream, ports)[1:]]
    if print_only or output is Format.json:
        if output is Format.json:
            emit_json({"id": record.id, "argv": argv, "env": [TOKEN_ENV]})
        else:
            typer.echo(" ".join(argv))
        return
    os.execve(sys.executable, argv, {**os.environ, TOKEN_ENV: record.token})
