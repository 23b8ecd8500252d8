"""Poll progress on stderr: a rich status line on a TTY, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console

from providers.models import Host

if TYPE_CHECKING:  # inletsctl.hosts pulls in jinja2 and the engine; not for --help
    from inletsctl.hosts import Progress


def line(n: int, total: int, host: Host) -> str:
    """The cloud's own word for the state (DigitalOcean's ``new``) when it gives one."""
    status = host.additional.get("provider_status") or host.status.value
    return f"[{n}/{total}] Host: {host.id}, status: {status}"


@contextmanager
def poll_reporter(console: Console) -> Iterator[Progress]:
    if not console.is_terminal:

        def plain(n: int, total: int, host: Host) -> None:
            console.print(line(n, total, host), markup=False)

        yield plain
        return
    with console.status("Creating host") as status:

        def live(n: int, total: int, host: Host) -> None:
            status.update(line(n, total, host).replace("[", "\\["))

        yield live
