"""The typer app: registers one module per command and maps errors to exit codes.

``InletsctlError`` (and provider errors that slipped past a boundary) are printed as
one line plus a hint, with the traceback only under ``-v``. Exit codes: 0 success,
1 failure, 2 usage error. To add a command, add its module to ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated

import typer

from inletsctl.commands._options import with_verbose
from inletsctl.errors import InletsctlError, map_provider_errors
from inletsctl.output import literal, stderr, tolerant_streams
from providers.kit import Terminated

COMMANDS = (
    "create",
    "delete",
    "prune",
    "list",
    "get",
    "logs",
    "connect",
    "version",
    "download",
    "kfwd",
    "operator",
)

app = typer.Typer(
    name="inletsctl",
    help="Give a machine behind NAT a public IP: rent an exit server, connect a tunnel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
_state = {"verbose": False}


def _set_verbose(verbose: bool) -> None:
    _state["verbose"] = verbose
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks.")] = False,
) -> None:
    _set_verbose(verbose)


def _register() -> None:
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"inletsctl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"inletsctl.commands.{name}":
                raise
            continue  # a command whose module is not installed yet
        module.register(app)
    for info in app.registered_commands:  # `inletsctl get ID -v` as well as `-v get ID`
        assert info.callback is not None
        info.callback = with_verbose(info.callback, _set_verbose)


_register()


def main(argv: list[str] | None = None) -> int:
    tolerant_streams()
    console = stderr()
    try:
        with map_provider_errors():
            # standalone mode: typer prints its own usage errors (exit 2) and --help
            app(args=argv, prog_name="inletsctl")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except InletsctlError as exc:
        if _state["verbose"]:
            console.print_exception()
        # messages quote names, ids and cloud API errors: printed as they are
        console.print(literal(f"Error: {exc.message}", keep="\n"), style="red")
        if exc.hint:
            console.print(literal(f"Hint: {exc.hint}", keep="\n"))
        return exc.exit_code
    except Terminated:  # SIGTERM inside create: its undo has run, as for Ctrl-C
        console.print("Error: terminated (SIGTERM)", style="red", markup=False)
        return 1
    except Exception as exc:  # a bug: still one line, the traceback only under -v
        if _state["verbose"]:
            console.print_exception()
        first = str(exc).strip().splitlines()[:1] or [""]
        console.print(literal(f"Error: unexpected {type(exc).__name__}: {first[0]}"), style="red")
        console.print(
            literal("Hint: this is a bug in inletsctl; rerun with -v and report the traceback.")
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
