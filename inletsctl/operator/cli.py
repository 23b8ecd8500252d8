"""``inletsctl operator run`` (the kopf operator) and ``inletsctl operator manifests``.

Neither imports kopf until it runs: ``inletsctl --help`` stays as fast as without it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.commands.create import parse_duration
from inletsctl.errors import UsageError
from inletsctl.operator import resources as r
from inletsctl.providers_config import Access, provider_class
from inletsctl.readiness import Wait
from inletsctl.store import state_dir

app = typer.Typer(
    name="operator",
    help="Kubernetes: LoadBalancer Services get a public IP through an exit server.",
    no_args_is_help=True,
)

#: Where the Deployment's kopf answers liveness probes (the manifests probe it).
LIVENESS = "http://0.0.0.0:8080/healthz"
#: Where a pod finds its service account's token (kopf's in-cluster login reads it).
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
#: The Secret (in the operator's namespace) whose keys become the operator's environment.
CLOUD_SECRET = "inletsctl-cloud"

ProviderDefault = Annotated[
    str,
    typer.Option(
        "--provider",
        "-p",
        help=f"Provider for Services without a {r.PROVIDER} annotation.",
        autocompletion=o.complete_provider,
    ),
]
PlanDefault = Annotated[
    str, typer.Option("--plan", "-s", help=f"VM size for Services without {r.PLAN}.")
]
AnnotatedOnly = Annotated[
    bool,
    typer.Option(
        "--annotated-only",
        help=f'Only Services annotated {r.MANAGE}: "true" (default: every LoadBalancer).',
    ),
]


def register(parent: typer.Typer) -> None:
    parent.add_typer(app)


@app.command()
@o.with_access
def run(
    provider: ProviderDefault = "",
    plan: PlanDefault = "",
    annotated_only: AnnotatedOnly = False,
    namespace: Annotated[
        list[str], typer.Option("--namespace", "-n", help="Watch only these (default: all).")
    ] = [],  # noqa: B006 (typer reads the default; it is never mutated)
    wait: Annotated[
        Wait,
        typer.Option(
            help="Publish the IP once the cloud runs the VM (running) or once its tunnel "
            "server answers with the pinned certificate (ready)."
        ),
    ] = Wait.ready,
    timeout: Annotated[str, typer.Option(help="Give up on one exit server after this.")] = "5m",
    poll: Annotated[str, typer.Option(help="Time between status polls.")] = "2s",
    release_url: Annotated[
        str, typer.Option(help="Base URL of the releases (or INLETSCTL_RELEASE_URL).")
    ] = "",
    client_image: Annotated[
        str, typer.Option(help="Image of the tunnel client (any with python3 3.10+).")
    ] = r.CLIENT_IMAGE,
    liveness: Annotated[
        str, typer.Option(help=f"Serve kopf's liveness probe here, e.g. {LIVENESS}.")
    ] = "",
    retry_delay: Annotated[
        str, typer.Option(help="Wait this long before retrying after a cloud or API failure.")
    ] = "30s",
    *,
    access: Access,
) -> None:
    """Run the operator (in a pod, or anywhere with a kubeconfig) until stopped."""
    import kopf  # only here: the rest of the CLI never needs it

    from inletsctl.operator import handlers

    _require_cluster_access()
    if provider:
        provider_class(provider)  # an unknown name fails now, not at the first Service

    config = handlers.OperatorConfig(
        state_dir=state_dir(),
        provider=provider,
        region=access.region,
        plan=plan,
        annotated_only=annotated_only,
        wait=wait,
        timeout=parse_duration(timeout, "--timeout"),
        poll=parse_duration(poll),
        access=access,
        release_url=release_url,
        client_image=client_image,
        retry_delay=parse_duration(retry_delay, "--retry-delay"),
    )
    registry, settings = handlers.build(config)
    logging.getLogger().handlers.clear()  # kopf's own log lines, not each twice
    kopf.configure(verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
    kopf.run(
        registry=registry,
        settings=settings,
        standalone=True,
        clusterwide=not namespace,
        namespaces=namespace,
        liveness_endpoint=liveness or None,
    )


def _require_cluster_access() -> None:
    """kopf would retry a login that can never work; say what is missing instead."""
    kubeconfig = os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    if not (
        SERVICE_ACCOUNT_TOKEN.is_file()
        or any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p)
    ):
        raise UsageError(
            "no Kubernetes credentials: no service account token and no kubeconfig",
            hint="Run it in a pod with the manifests' ServiceAccount, or set KUBECONFIG.",
        )


@app.command()
def manifests(
    provider: ProviderDefault = "",
    region: Annotated[
        str, typer.Option("--region", "-r", help=f"Region for Services without {r.REGION}.")
    ] = "",
    plan: PlanDefault = "",
    annotated_only: AnnotatedOnly = False,
    namespace: Annotated[str, typer.Option(help="Namespace of the operator.")] = "inletsctl",
    image: Annotated[str, typer.Option(help="Image the operator runs in.")] = "python:3.12-slim",
    package: Annotated[
        str,
        typer.Option(
            help="pip requirement the operator installs at start: inletsctl==VERSION by "
            "default, or the URL of a wheel you host (make dist builds it)."
        ),
    ] = "",
    secret: Annotated[
        str, typer.Option(help="Secret whose keys become the operator's environment.")
    ] = CLOUD_SECRET,
) -> None:
    """Print the CRD, RBAC and the operator's Deployment, for `kubectl apply -f -`."""
    import yaml

    from inletsctl import release

    args = ["--liveness", LIVENESS]
    for flag, value in (("--provider", provider), ("--region", region), ("--plan", plan)):
        args += [flag, value] if value else []
    args += ["--annotated-only"] if annotated_only else []
    docs = r.manifests(namespace, image, package or f"inletsctl=={release.version()}", args, secret)
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
