"""`inletsctl download`: install tunnel-core.pyz (or inlets-pro) on this machine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from inletsctl.commands import _options as o
from inletsctl.output import Format, emit_json, stderr, stdout
from providers.models import Engine

if TYPE_CHECKING:  # the download machinery loads only when the command runs
    from inletsctl.download import Installed, Progress as OnProgress


def register(app: typer.Typer) -> None:
    app.command()(download)


def download(
    engine: Annotated[Engine, typer.Option(help="Which engine to install.")] = Engine.TUNNEL_CORE,
    pro: Annotated[bool, typer.Option("--pro", help="Same as --engine inlets-pro.")] = False,
    version: Annotated[
        str,
        typer.Option(help="vX.Y.Z or latest; default: this inletsctl's (latest for inlets-pro)."),
    ] = "",
    download_to: Annotated[
        Path | None,
        typer.Option(help="Install directory; default /usr/local/bin, else ~/.local/bin."),
    ] = None,
    os_name: Annotated[str, typer.Option("--os", help="linux, darwin or windows.")] = "",
    arch: Annotated[str, typer.Option(help="amd64, arm64 or armhf.")] = "",
    force: Annotated[bool, typer.Option(help="Replace a different existing file.")] = False,
    release_url: Annotated[
        str | None, typer.Option(help="Base URL of the releases (or INLETSCTL_RELEASE_URL).")
    ] = None,
    output: o.OutputOpt = Format.text,
) -> None:
    """Download a release, verify its published SHA-256, and install it atomically."""
    from inletsctl.download import Request, download as fetch

    req = Request(
        engine=Engine.INLETS_PRO if pro else engine,
        version=version,
        download_to=download_to,
        os_name=os_name,
        arch=arch,
        force=force,
        release_url=release_url,
    )
    with _progress_bar() as on_progress:
        done = fetch(req, progress=on_progress)
    _render(done, output)


@contextmanager
def _progress_bar() -> Iterator[OnProgress | None]:
    """A rich bar on a TTY; nothing at all in a pipe."""
    console = stderr()
    if not console.is_terminal:
        yield None
        return
    with Progress(
        "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console
    ) as bar:
        task = bar.add_task("Downloading", total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _render(done: Installed, output: Format) -> None:
    if output is Format.json:
        emit_json(
            {
                "path": str(done.path),
                "version": done.version,
                "sha256": done.sha256,
                "url": done.url,
                "engine": done.engine,
                "changed": done.changed,
            }
        )
        return
    out = stdout()
    verb = "Installed" if done.changed else "Already installed"
    out.print(f"{verb} {done.engine} {done.version} at {done.path}", markup=False)
    out.print(f"sha256 {done.sha256}", markup=False)
    if not done.on_path:
        stderr().print(
            f"Note: {done.path.parent} is not on your PATH; add it, e.g. "
            f'export PATH="{done.path.parent}:$PATH"',
            markup=False,
        )
