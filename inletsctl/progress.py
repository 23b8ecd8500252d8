"""Poll progress on stderr: a rich status line on a TTY, plain lines otherwise.

The reporter runs inside ``hosts.create`` after the VM exists, where an exception would
undo the VM: lines go to rich as :func:`~inletsctl.output.literal` text (a spinner parses
a plain ``str`` as markup, and ids and status words come from the cloud), and a line that
still fails to render is dropped rather than raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console

from inletsctl.output import literal
from providers.models import Host

if TYPE_CHECKING:  # inletsctl.hosts pulls in jinja2 and the engine; not for --help
    from inletsctl.hosts import Progress

log = logging.getLogger(__name__)


def line(n: int, host: Host, tunnel: str = "") -> str:
    """The cloud's own word for the state (DigitalOcean's ``new``) when it gives one, and
    the tunnel server's answer (``ready`` or why not) once it is probed."""
    status = host.additional.get("provider_status") or host.status.value
    probed = f", tunnel: {tunnel}" if tunnel else ""
    return f"[{n}] Host: {host.id}, status: {status}{probed}"


@contextmanager
def status_writer(console: Console) -> Iterator[Callable[[str], None]]:
    """``show(text)``: replaces the spinner's line on a TTY, appends a line otherwise."""
    if console.is_terminal:
        with console.status(literal("Creating host")) as status:
            yield _never_raises(lambda text: status.update(literal(text)))
    else:
        yield _never_raises(lambda text: console.print(literal(text)))


def _never_raises(show: Callable[[str], None]) -> Callable[[str], None]:
    def guarded(text: str) -> None:
        try:
            show(text)
        except Exception:  # progress is advisory; the host is worth more than one line
            log.debug("progress line not shown: %r", text, exc_info=True)

    return guarded


@contextmanager
def poll_reporter(console: Console) -> Iterator[Progress]:
    with status_writer(console) as show:

        def report(n: int, host: Host, tunnel: str) -> None:
            show(line(n, host, tunnel))

        yield report
