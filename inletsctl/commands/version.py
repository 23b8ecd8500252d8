"""`inletsctl version`."""

from __future__ import annotations

import platform
from importlib.metadata import version as dist_version

import typer

from inletsctl.commands import _options as o
from inletsctl.output import Format, emit_json


def register(app: typer.Typer) -> None:
    app.command()(version)


def version(output: o.OutputOpt = Format.text) -> None:
    """Print the version of inletsctl (the VM runs the same tunnel-core release)."""
    doc = {"version": dist_version("inletsctl"), "python": platform.python_version()}
    if output is Format.json:
        emit_json(doc)
    else:
        typer.echo(f"inletsctl {doc['version']} (python {doc['python']})")
