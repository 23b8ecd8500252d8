from __future__ import annotations

import io

from rich.console import Console

from inletsctl.progress import line, poll_reporter
from providers.models import Host, HostStatus

HOST = Host("h-1", "n", "p", "r", HostStatus.CREATING)
ACTIVE = Host("h-1", "n", "p", "r", HostStatus.ACTIVE)


def test_plain_lines_when_not_a_tty() -> None:
    buf = io.StringIO()
    with poll_reporter(Console(file=buf, force_terminal=False)) as report:
        report(1, HOST, "")
        report(2, ACTIVE, "certificate mismatch")
        report(3, ACTIVE, "ready")
    assert buf.getvalue().splitlines() == [
        "[1] Host: h-1, status: creating",
        "[2] Host: h-1, status: active, tunnel: certificate mismatch",
        "[3] Host: h-1, status: active, tunnel: ready",
    ]


def test_the_providers_own_status_word_is_shown() -> None:
    new = Host("h-1", "n", "p", "r", HostStatus.CREATING, additional={"provider_status": "new"})
    active = Host("h-1", "n", "p", "r", HostStatus.ACTIVE, additional={"provider_status": "active"})
    assert line(1, new) == "[1] Host: h-1, status: new"
    assert line(2, active) == "[2] Host: h-1, status: active"


def test_status_line_on_a_tty_leaves_no_scrollback_per_poll() -> None:
    buf = io.StringIO()
    with poll_reporter(Console(file=buf, force_terminal=True, width=80)) as report:
        for n in range(1, 4):
            report(n, HOST, "")
    assert line(3, HOST) not in buf.getvalue().splitlines()
