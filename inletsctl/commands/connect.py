"""`inletsctl connect ID`: run the tunnel client for a host, in the foreground.

The token reaches the client through its environment, not its argv, so it never
shows in ``ps``. The client replaces this process, so signals reach it directly.
``--generate`` prints (or writes) the same client as a systemd unit, Kubernetes
objects or an ECS Anywhere task definition instead (``inletsctl.deploy``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from inletsctl.commands import _options as o
from inletsctl.errors import UsageError
from inletsctl.output import Format, emit_json, stderr
from inletsctl.providers_config import Access
from inletsctl.store import ENDED, HostRecord, Store
from inletsctl.summary import TOKEN_ENV, check_upstream, client_argv

if TYPE_CHECKING:
    from inletsctl.deploy import Target  # boto3's error helpers, yaml: imported when used


def register(app: typer.Typer) -> None:
    app.command()(connect)


@o.with_access
def connect(
    id: o.HostIdArg,
    upstream: Annotated[
        str,
        typer.Option(
            help="Where to forward: 127.0.0.1 (tcp) or http://127.0.0.1:8080; "
            "default: the one saved at create."
        ),
    ] = "",
    ports: Annotated[
        str,
        typer.Option(
            help="TCP: the public ports to ask for, PORT or PUBLIC:UPSTREAM; "
            "needed when the host was made without --ports."
        ),
    ] = "",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the command instead of running it.")
    ] = False,
    generate: Annotated[
        str,
        typer.Option(
            "--generate",
            metavar="systemd|kubernetes|ecs-anywhere",
            help="Instead of running the client: a systemd unit (with --output-dir), "
            "a Kubernetes Deployment and Secret, or an ECS Anywhere task definition.",
        ),
    ] = "",
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            help="systemd: write the unit, its token file (0600) and the fetch script here.",
        ),
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            "--register",
            help="ecs-anywhere: create the token's secret, an execution role, the task "
            "definition and a DAEMON service on --cluster (delete --id removes them).",
        ),
    ] = False,
    cluster: Annotated[
        str, typer.Option("--cluster", help="ecs-anywhere --register: the ECS cluster.")
    ] = "",
    secret_arn: Annotated[
        str,
        typer.Option(
            "--secret-arn", help="ecs-anywhere without --register: your secret of the token."
        ),
    ] = "",
    execution_role_arn: Annotated[
        str,
        typer.Option(
            "--execution-role-arn",
            help="ecs-anywhere without --register: a role that may read --secret-arn.",
        ),
    ] = "",
    release_url: Annotated[
        str,
        typer.Option(
            "--release-url", help="Where the generated client fetches tunnel-core.pyz from."
        ),
    ] = "",
    output: o.OutputOpt = Format.text,
    *,
    access: Access,
) -> None:
    """Run the tunnel client for a host, or --generate it as a deployable unit."""
    record = Store().get(id)
    if record.status in ENDED:
        raise UsageError(
            f"host {id} is {record.status}", hint="Create a new one: inletsctl create."
        )
    if record.engine != "tunnel-core":
        raise UsageError(
            f"host {id} runs {record.engine}; connect runs tunnel-core clients only",
            hint=f"Run the client command from `inletsctl get {id} --show-token`.",
        )
    check_upstream(record.mode, record.engine, upstream)
    o.parse_ports(ports)
    if record.mode == "tcp" and not (ports or record.ports):
        raise UsageError(
            f"host {id} was made without --ports: its server takes any port 1024-65535",
            hint=f"Say which: inletsctl connect {id} --ports 2222:22,8080.",
        )
    if generate:
        from inletsctl.deploy import Target

        try:
            target = Target(generate)
        except ValueError:
            raise UsageError(
                f"--generate {generate!r}: not one of systemd, kubernetes, ecs-anywhere"
            ) from None
        arns = secret_arn or execution_role_arn
        _check_generate_options(target, output_dir, register, cluster, arns)
        argv = client_argv(record, upstream, ports)
        _generate(target, record, argv, output_dir, register, cluster, release_url, output, access,
                  secret_arn, execution_role_arn)  # fmt: skip
        return
    if output_dir or register or cluster:
        raise UsageError("--output-dir, --register and --cluster go with --generate")
    argv = [sys.executable, "-m", "tunnel_core", *client_argv(record, upstream, ports)[1:]]
    if print_only or output is Format.json:
        if output is Format.json:
            emit_json({"id": record.id, "argv": argv, "env": [TOKEN_ENV]})
        else:
            typer.echo(" ".join(argv))
        return
    os.execve(sys.executable, argv, {**os.environ, TOKEN_ENV: record.token})


def _check_generate_options(
    target: Target, output_dir: Path | None, register: bool, cluster: str, arns: str
) -> None:
    """Options of one target are refused with another: they would be ignored."""
    if target.value == "systemd" and output_dir is None:
        raise UsageError(
            "--generate systemd writes files (the token's is never printed)",
            hint="Pass --output-dir DIR; the commands that install them are printed.",
        )
    if target.value != "systemd" and output_dir is not None:
        raise UsageError("--output-dir goes with --generate systemd")
    if target.value != "ecs-anywhere" and (register or cluster or arns):
        raise UsageError(
            "--register, --cluster, --secret-arn and --execution-role-arn go with "
            "--generate ecs-anywhere"
        )
    if register != bool(cluster):
        raise UsageError(
            "--register and --cluster go together",
            hint="Pass --register --cluster NAME, or neither to print the task definition.",
        )
    if register and arns:
        raise UsageError(
            "--register creates the secret and the execution role",
            hint="Drop --secret-arn and --execution-role-arn.",
        )


def _generate(
    target: Target,
    record: HostRecord,
    argv: list[str],
    output_dir: Path | None,
    register: bool,
    cluster: str,
    release_url: str,
    output: Format,
    access: Access,
    secret_arn: str,
    execution_role_arn: str,
) -> None:
    from inletsctl import deploy, release

    if release.is_object_url(release_url):
        # only an ecs-fargate exit server's task role reads such an object
        raise UsageError(
            f"--release-url {release_url}: a generated client downloads tunnel-core.pyz "
            "over https, without AWS credentials",
            hint="Pass an https:// release base (s3:// is for create --provider ecs-fargate).",
        )
    artifact = release.artifact(release_url or None)
    if artifact.local_build and release.is_default_base(release_url):
        stderr().print(
            f"Warning: {artifact.name} is a local build: {artifact.url} may not serve it, and "
            "the client refuses any other file; host it and pass --release-url.",
            style="yellow",
            markup=False,
        )
    if target is deploy.Target.systemd:
        assert output_dir is not None  # _check_generate_options
        commands = deploy.write_files(output_dir, deploy.systemd_files(record, argv, artifact))
        if output is Format.json:
            emit_json({"id": record.id, "directory": str(output_dir), "install": commands})
        else:
            typer.echo("\n".join(commands))
    elif target is deploy.Target.kubernetes:
        import yaml

        docs = deploy.kubernetes_objects(record, argv, artifact)
        if output is Format.json:
            emit_json(docs)
        else:
            typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
    elif not register:
        if not (secret_arn and execution_role_arn):
            stderr().print(
                f"Note: replace {deploy.SECRET_PLACEHOLDER} and {deploy.ROLE_PLACEHOLDER} "
                "(or pass --secret-arn and --execution-role-arn), or let --register make them.",
                markup=False,
            )
        secret = secret_arn or deploy.SECRET_PLACEHOLDER
        role = execution_role_arn or deploy.ROLE_PLACEHOLDER
        emit_json(deploy.task_definition(record, argv, artifact, secret, role))
    else:
        store = Store()
        ecs = deploy.open_ecs(access, store.directory)
        sent: dict[str, object] = {}

        def build(secret: str, role: str) -> dict[str, object]:
            sent.update(deploy.task_definition(record, argv, artifact, secret, role))
            return sent

        made = deploy.register(store, ecs, record, cluster, build)
        doc = deploy.ecs_document(made, sent)
        if output is Format.json:
            emit_json(doc)
        else:
            emit_json(sent)
            stderr().print(
                f"Registered service {made.service_arn} (DAEMON, EXTERNAL) on cluster "
                f"{made.cluster}; `inletsctl delete --id {record.id}` removes it with the host.",
                markup=False,
            )
