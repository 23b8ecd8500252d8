"""Poll progress on stderr: a rich status line on a TTY, plain lines otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console

from providers.models import Host

if TYPE_CHECKING:  # inletsctl.hosts pulls in jinja2 and the engine; not for --help
    from inletsctl.hosts import Progress


def line(n: int, host: Host, tunnel: str = "") -> str:
    """The cloud's own word for the state (DigitalOcean's ``new``) when it gives one, and
    the tunnel server's answer (``ready`` or why not) once it is probed."""
    status = host.additional.get("provider_status") or host.status.value
    probed = f", tunnel: {tunnel}" if tunnel else ""
    return f"[{n}] Host: {host.id}, status: {status}{probed}"


@contextmanager
def poll_reporter(console: Console) -> Iterator[Progress]:
    if not console.is_terminal:

        def plain(n: int, host: Host, tunnel: str) -> None:
            console.print(line(n, host, tunnel), markup=False)

        yield plain
        return
    with console.status("Creating host") as status:

        def live(n: int, host: Host, tunnel: str) -> None:
            status.update(line(n, host, tunnel).replace("[", "\\["))

        yield live
