"""`inletsctl kfwd`: not here, on purpose; it says so and shows the two commands that do it.

The Go inletsctl's ``kfwd`` forwards a Kubernetes service through a tunnel by talking
to the cluster's API. That would make a Kubernetes client a dependency of a tool whose
job is renting exit servers, for what ``kubectl port-forward`` plus ``inletsctl
connect`` already do. Go users who type it get this explanation, not "No such command".
"""

from __future__ import annotations

import typer

from inletsctl.errors import UsageError

WHY = (
    "kfwd is not part of this inletsctl: it would need a Kubernetes API client for what "
    "`kubectl port-forward` and `inletsctl connect` already do together"
)
RECIPE = (
    "kubectl port-forward svc/NAME 8080:80 &  then  "
    "inletsctl connect ID --upstream http://127.0.0.1:8080 (or, in TCP mode, --ports 80:8080)"
)


def register(app: typer.Typer) -> None:
    app.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help=f"Not implemented, on purpose: {WHY}. Instead: {RECIPE}.",
        short_help="Not here, on purpose: kubectl port-forward + inletsctl connect do it.",
    )(kfwd)


def kfwd() -> None:
    raise UsageError(WHY, hint=f"Forward the service yourself: {RECIPE}.")
