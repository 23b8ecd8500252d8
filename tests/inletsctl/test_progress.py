from __future__ import annotations

import io

from rich.console import Console

from inletsctl.progress import line, poll_reporter
from providers.models import Host, HostStatus

HOST = Host("h-1", "n", "p", "r", HostStatus.CREATING)


def test_plain_lines_when_not_a_tty() -> None:
    buf = io.StringIO()
    with poll_reporter(Console(file=buf, force_terminal=False)) as report:
        report(1, 500, HOST)
        report(2, 500, HOST)
    assert buf.getvalue().splitlines() == [
        "[1/500] Host: h-1, status: creating",
        "[2/500] Host: h-1, status: creating",
    ]


def test_the_providers_own_status_word_is_shown() -> None:
    new = Host("h-1", "n", "p", "r", HostStatus.CREATING, additional={"provider_status": "new"})
    active = Host("h-1", "n", "p", "r", HostStatus.ACTIVE, additional={"provider_status": "active"})
    assert line(1, 500, new) == "[1/500] Host: h-1, status: new"
    assert line(2, 500, active) == "[2/500] Host: h-1, status: active"


def test_status_line_on_a_tty_leaves_no_scrollback_per_poll() -> None:
    buf = io.StringIO()
    with poll_reporter(Console(file=buf, force_terminal=True, width=80)) as report:
        for n in range(1, 4):
            report(n, 500, HOST)
    assert line(3, 500, HOST) not in buf.getvalue().splitlines()
