"""Rendering: results to stdout (text or one JSON document), progress to stderr.

Colour and spinners only on a TTY; rich honours ``NO_COLOR`` itself.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from inletsctl.summary import Summary


class Format(str, enum.Enum):
    text = "text"
    json = "json"


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def as_dict(summary: Summary) -> dict[str, Any]:
    doc = dataclasses.asdict(summary)
    if doc["token"] is None:
        del doc["token"]
    return doc


def show_summary(summary: Summary, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json(as_dict(summary))
        return
    out = stdout()
    out.print(f"Host: {summary.id} ({summary.provider}), status: {summary.status}")
    out.print(f"IP: {summary.ip or '(none yet)'}")
    out.print(f"TLS fingerprint: {summary.tls_fingerprint}")
    if summary.token is not None:
        out.print(f"Auth token: {summary.token}")
    if summary.domains:
        out.print(f"HTTPS domains: {summary.domains}")
    out.print("")
    out.print("Connect a client with:")
    out.print(f"  {summary.client_command}", markup=False)
    out.print("")
    out.print("Delete it with:")
    out.print(f"  {summary.delete_command}", markup=False)


def show_table(rows: Sequence[Summary], fmt: Format) -> None:
    if fmt is Format.json:
        emit_json([as_dict(r) for r in rows])
        return
    out = stdout()
    if not out.is_terminal:
        for r in rows:
            print("\t".join((r.id, r.provider, r.status, r.ip or "-", r.mode, r.name)))
        return
    table = Table("ID", "PROVIDER", "STATUS", "IP", "MODE", "NAME")
    for r in rows:
        table.add_row(r.id, r.provider, r.status, r.ip or "-", r.mode, r.name)
    out.print(table)
