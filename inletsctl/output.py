"""Rendering: results to stdout (text or one JSON document), progress to stderr.

Colour and spinners only on a TTY; rich honours ``NO_COLOR`` itself.

Every value printed here may come from a user, a cloud API or the state file (names,
tokens, IPs, provider ids, error messages), and it is printed after the VM exists: a
value must never be parsed as rich markup or emoji codes (``[/b]`` in a token raised
``MarkupError``), and never reach the terminal as a control sequence. So the consoles
have markup and emoji off, and text goes through :func:`literal`, which rich renders
as it is, in a table cell or a spinner too (those parse plain ``str`` as markup).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import shlex
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from inletsctl.store import ENDED
from inletsctl.summary import TOKEN_ENV, Summary, netloc
from providers.models import ServerSpec


class Format(str, enum.Enum):
    text = "text"
    json = "json"


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True, markup=False, emoji=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def printable(value: object, keep: str = "") -> str:
    r"""``value`` with control characters (but those in ``keep``) shown as ``\x1b`` etc.

    An ESC from an API error could rewrite the user's terminal, a CR hide the start of a
    line, a tab or newline in a name shift the columns scripts cut from ``list``.
    """
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or c in keep else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def literal(value: object, keep: str = "") -> Text:
    """Text that rich prints exactly as given: no markup, no ``:emoji:`` codes."""
    return Text(printable(value, keep))


def tolerant_streams() -> None:
    """Characters stdout's encoding lacks are escaped instead of raising after the VM exists.

    Under ``PYTHONIOENCODING=ascii`` or a latin-1 terminal, a host name with ``é`` would
    otherwise end ``create`` with ``UnicodeEncodeError`` before the summary is out
    (stderr already uses ``backslashreplace``; JSON output is ASCII anyway).
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def as_dict(summary: Summary) -> dict[str, Any]:
    doc = dataclasses.asdict(summary)
    if doc["token"] is None:
        del doc["token"]
    for key in ("note", "skipped_regions", "dns", "load_balancer", "members"):
        if doc[key] is None:
            del doc[key]
    return doc


def summary_lines(summary: Summary) -> list[str]:
    lines = [
        f"Host: {summary.id} ({summary.provider}), status: {summary.status}",
        *_region_lines(summary),
        f"IP: {summary.ip or '(none yet)'}",
        *_group_lines(summary),
        f"TLS fingerprint: {summary.tls_fingerprint}",
    ]
    if summary.note:
        lines.append(f"Note: {summary.note}")
    if summary.token is not None:
        lines.append(f"Auth token: {summary.token}")
    if summary.domains:
        lines.append(f"HTTPS domains: {summary.domains}")
    if summary.dns is not None:
        lines.append(_dns_line(summary.dns))
    if summary.public_url:
        lines.append(f"Public URL: {summary.public_url}")
    elif summary.mode == "tcp" and summary.ports:
        public = (p.partition(":")[0] for p in summary.ports.split(","))
        balancer = (summary.load_balancer or {}).get("dns_name", "")
        host = balancer or netloc(summary.ip) or "<pending>"
        lines.append(f"Public TCP ports: {', '.join(f'{host}:{p}' for p in public)}")
    elif summary.mode == "tcp":
        lines.append(f"Public TCP ports: any in {ServerSpec.allow_ports} the client asks for")
    if summary.status in ENDED:
        return [*lines, "", f"It is {summary.status}: nothing to connect to. Make a new one with:",
                "  inletsctl create"]  # fmt: skip
    lines += ["", *_connect_lines(summary)]
    lines += ["", "Delete it with:", f"  {summary.delete_command}"]
    return lines


def _dns_line(dns: dict[str, Any]) -> str:
    """The addresses only: the claims beside them are bookkeeping (``-o json`` has them)."""
    points = [f"{r['name']} {r['type']} {r['value']}" for r in dns["records"] if r["type"] != "TXT"]
    return f"DNS ({dns['provider']}): {', '.join(points) or 'no records yet'}"


def _group_lines(summary: Summary) -> list[str]:
    """A load-balanced group: where the public is served, and each exit server."""
    if summary.load_balancer is None:
        return []
    lb = summary.load_balancer
    lines = [f"Load balancer: {lb['type']} {lb['dns_name'] or '(none yet)'}"]
    lines += [f"  member {m['id']} {m['ip'] or '-'} {m['zone']}" for m in summary.members or []]
    return lines


def _region_lines(summary: Summary) -> list[str]:
    """Which of several regions won, and why each before it did not: said only when asked."""
    if summary.skipped_regions is None:
        return []
    lines = [f"Region: {summary.region}"]
    lines += [f"  not {s['region']}: {s['reason']}" for s in summary.skipped_regions]
    return lines


def _connect_lines(summary: Summary) -> list[str]:
    """The client reads the token from its environment, so it never shows in ``ps``."""
    if summary.token is not None:
        lines = ["Connect a client with:", f"  export {TOKEN_ENV}={shlex.quote(summary.token)}"]
    else:
        lines = [
            f"Connect a client with ({TOKEN_ENV} set to the token from "
            f"`inletsctl get {summary.id} --show-token`):"
        ]
    lines.append(f"  {summary.client_command}")
    if summary.engine == "tunnel-core":
        lines.append(f"or let inletsctl pass the token: inletsctl connect {summary.id}")
    return lines


def show_summary(summary: Summary, fmt: Format, console: Console | None = None) -> None:
    if fmt is Format.json:
        emit_json(as_dict(summary))
        return
    out = console or stdout()
    for text in summary_lines(summary):
        out.print(literal(text))


_COLUMNS = ("ID", "PROVIDER", "STATUS", "IP", "MODE", "NAME")


def _row(r: Summary) -> tuple[str, ...]:
    return (r.id, r.provider, r.status, r.ip or "-", r.mode, r.name)


def write_rows(out: Console, rows: Iterable[Sequence[str]]) -> None:
    """Tab-separated lines for scripts, written past rich, which would expand the tabs."""
    for row in rows:
        out.file.write("\t".join(printable(v) for v in row) + "\n")


def write_table(out: Console, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A rich table with a header on a TTY; in a pipe, one tab-separated line per row and
    nothing else, so ``cut -f1`` gives the ids."""
    if not out.is_terminal:
        write_rows(out, rows)
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(literal(v) for v in row))
    out.print(table)


def show_table(rows: Sequence[Summary], fmt: Format, console: Console | None = None) -> None:
    if fmt is Format.json:
        emit_json([as_dict(r) for r in rows])
        return
    write_table(console or stdout(), _COLUMNS, [_row(r) for r in rows])
