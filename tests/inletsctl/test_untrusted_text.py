"""Names, tokens, ids and API errors print exactly as given, and never break the output.

They reach rich after the VM exists; markup (``[/b]`` raised ``MarkupError``), emoji codes
(``:smile:`` became a smiley) or a terminal escape in one of them must change nothing.
The CLI tests use the ``local`` provider, so they run offline; the TTY ones render into
a ``Console(force_terminal=True)`` or set ``FORCE_COLOR`` (read by rich 13 and later).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from inletsctl.cli import main
from inletsctl.output import Format, printable, show_summary, show_table
from inletsctl.progress import status_writer
from inletsctl.store import HostRecord
from inletsctl.summary import summarise
from tests.conftest import free_port, wait_for
from tests.inletsctl.conftest import run_cli

#: Markup that closes a tag never opened (rich raises), opens one, and an emoji code.
#: Every character is one ``cloud_init.check_token`` accepts (printable ASCII, no quotes
#: or backslash), so it is a valid --inlets-token too.
NASTY = "a[/b]b[bold]c:smile:d[link=x]e[/]"
NAME = f"n{NASTY}"
TOKEN = f"t{NASTY}"
WIDE = {"COLUMNS": "250"}  # a table row never wraps, so a cell is one substring

RECORD = HostRecord(
    id=f"h{NASTY}",
    provider="local",
    name=NAME,
    status=f"s{NASTY}",
    mode="tcp",
    engine="tunnel-core",
    control_port=8123,
    data_port=8000,
    fingerprint="sha256:" + "c" * 64,
    token=TOKEN,
    ip="192.0.2.1",
    ports="8080",
)


def console(tty: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=tty, width=250, highlight=False), buf


@pytest.mark.parametrize("tty", [False, True])
def test_summary_prints_every_value_as_given(tty: bool) -> None:
    out, buf = console(tty)
    show_summary(summarise(RECORD, show_token=True), Format.text, out)
    text = buf.getvalue()
    assert f"Host: {RECORD.id} (local), status: {RECORD.status}\n" in text
    assert f"Auth token: {TOKEN}\n" in text


@pytest.mark.parametrize("tty", [False, True])
def test_table_cells_are_not_markup(tty: bool) -> None:
    out, buf = console(tty)
    show_table([summarise(RECORD, show_token=False)], Format.text, out)
    row = next(line for line in buf.getvalue().splitlines() if NAME in line)
    assert RECORD.id in row and RECORD.status in row
    if not tty:
        assert row.split("\t") == [RECORD.id, "local", RECORD.status, "192.0.2.1", "tcp", NAME]


def test_terminal_control_characters_are_shown_escaped() -> None:
    """An ESC from a cloud API must not reach the terminal, nor a tab split a column."""
    evil = HostRecord(**{**RECORD.__dict__, "name": "x\x1b[2Jy\tz\r\u202e"})
    out, buf = console(tty=False)
    show_table([summarise(evil, show_token=False)], Format.text, out)
    assert buf.getvalue().split("\t")[-1] == "x\\x1b[2Jy\\tz\\r\\u202e\n"
    assert printable("line\nnext", keep="\n") == "line\nnext"


@pytest.mark.parametrize("tty", [False, True])
def test_progress_line_is_not_markup(tty: bool) -> None:
    """The host id and the cloud's status word in a poll line, plain and in the spinner."""
    text = f"[1] Host: h{NASTY}, status: {NASTY}"
    out, buf = console(tty)
    with status_writer(out) as show:
        show(text)
        if tty:  # the spinner's own thread draws the line
            wait_for(lambda: text in buf.getvalue(), what="the status line")
    assert text in buf.getvalue()


def test_a_progress_line_that_cannot_render_does_not_undo_the_host() -> None:
    """The reporter runs inside create's undo scope; a closed stderr must not end it."""
    closed = io.StringIO()
    closed.close()
    with status_writer(Console(file=closed, force_terminal=False)) as show:
        show("[1] Host: h-1, status: active")


def test_error_messages_are_printed_as_given(
    state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["get", NASTY]) == 1
    err = capsys.readouterr().err
    assert f"'{NASTY}'" in err and err.startswith("Error: ")


def test_create_list_get_with_markup_in_name_and_token(state_dir: Path) -> None:
    res = run_cli(
        "create", "--provider", "local", "--tcp", "--ports", str(free_port()),
        "--name", NAME, "--inlets-token", TOKEN, "-o", "text",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    found = re.search(r"^Host: (\w+) \(local\), status: \w+$", res.stdout, re.M)
    assert found, res.stdout
    host_id = found.group(1)
    try:
        assert f"\nAuth token: {TOKEN}\n" in res.stdout
        assert f"export INLETS_TOKEN='{TOKEN}'" in res.stdout  # shell-quoted, for the client

        listed = run_cli("list", env=WIDE)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split("\t")[-1] == f"{NAME}\n"
        table = run_cli("list", env={**WIDE, "FORCE_COLOR": "1"})
        assert table.returncode == 0, table.stderr
        assert "┃" in table.stdout, "FORCE_COLOR draws the TTY table"
        assert any(NAME in line and host_id in line for line in table.stdout.splitlines())
        remote = run_cli("list", "--provider", "local", "--remote")
        assert remote.returncode == 0, remote.stderr
        fields = remote.stdout.split("\t")
        assert (fields[0], fields[-1]) == (host_id, f"{NAME}\n"), remote.stdout

        got = run_cli("get", host_id, "--show-token", env={"FORCE_COLOR": "1"})
        assert got.returncode == 0, got.stderr
        assert f"\nAuth token: {TOKEN}\n" in got.stdout
        doc = json.loads(run_cli("get", host_id, "--show-token", "-o", "json").stdout)
        assert (doc["name"], doc["token"]) == (NAME, TOKEN)
    finally:
        deleted = run_cli("delete", "--id", host_id)
    assert deleted.returncode == 0, deleted.stderr


def test_create_on_a_tty_shows_the_status_line(state_dir: Path) -> None:
    res = run_cli(
        "create", "--provider", "local", "--tcp", "--ports", str(free_port()),
        "--name", NAME, "--inlets-token", TOKEN, "-o", "json", env={"FORCE_COLOR": "1"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    try:
        assert (doc["name"], doc["token"]) == (NAME, TOKEN)
        assert "\x1b[" in res.stderr, "FORCE_COLOR makes stderr a TTY: the spinner ran"
    finally:
        assert run_cli("delete", "--id", doc["id"]).returncode == 0


def test_a_name_the_terminal_cannot_encode_does_not_fail_create(state_dir: Path) -> None:
    res = run_cli(
        "create", "--provider", "local", "--tcp", "--ports", str(free_port()),
        "--name", "café", "-o", "text", env={"PYTHONIOENCODING": "ascii"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    host_id = re.search(r"^Host: (\w+) ", res.stdout, re.M).group(1)  # type: ignore[union-attr]
    try:
        assert run_cli("list", env={"PYTHONIOENCODING": "ascii"}).stdout.endswith("caf\\xe9\n")
    finally:
        assert run_cli("delete", "--id", host_id).returncode == 0
