"""`inletsctl connect ID --generate`: a host's tunnel client as something to deploy.

Every shape runs the one client command ``create`` prints (``summary.client_argv``),
with the token in its environment, never in argv, and fetches tunnel-core.pyz and
checks its pinned SHA-256 with the script the exit server's cloud-init runs
(``cloud_init/templates/fetch.py.j2``):

* ``systemd``: a hardened unit, its EnvironmentFile (the token, 0600) and that fetch
  script, written to ``--output-dir``. Files, not a page: the token is never printed
  (an EnvironmentFile cut out of a terminal lands in scrollback and shell history), and
  three files with their modes install with three ``install`` commands.
* ``kubernetes``: the operator's own client Deployment and Secret
  (``operator.resources.deployment`` and ``token_secret``), for ``kubectl apply -f -``.
* ``ecs-anywhere``: an ECS task definition for external instances (``EXTERNAL``,
  ``networkMode: host``) whose token is a Secrets Manager ``valueFrom``; ``--register``
  makes the secret, an execution role, the task definition and a DAEMON service, and
  records the cluster with the host first, so ``delete --id`` removes them all.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cloud_init
from inletsctl.errors import ProviderFailure, UsageError, map_provider_errors
from inletsctl.operator import resources
from inletsctl.providers_config import Access, config
from inletsctl.release import Artifact, write_atomic
from inletsctl.store import HostRecord, Store
from inletsctl.summary import TOKEN_ENV
from providers import kit
from providers.ecs_anywhere import EcsAnywhere, Names, Registration
from providers.errors import UndoFailed

JSON = dict[str, Any]


class Target(str, enum.Enum):
    systemd = "systemd"
    kubernetes = "kubernetes"
    ecs_anywhere = "ecs-anywhere"


#: ``additional`` keys of a host whose client was registered on ECS Anywhere; the cluster
#: and region are written before the first call, the ARNs once all of them answered
ECS_CLUSTER = "ecs_cluster"
ECS_REGION = "ecs_region"
_ECS_KEYS = (ECS_CLUSTER, ECS_REGION, "ecs_service", "ecs_task_definition", "ecs_secret")

#: where the unit expects its files once installed (the printed commands put them there)
ETC = "/etc/inletsctl"
UNIT_PYTHON = "/usr/bin/python3"
#: a word of a unit's Exec line that needs no quoting and that systemd leaves alone
_UNIT_WORD = re.compile(r"^[A-Za-z0-9.,:_/=@+\[\]-]+$")


def unit_name(record: HostRecord) -> str:
    return f"inletsctl-client-{record.id}"


def _unit_words(argv: Sequence[str]) -> str:
    """Refuse what a unit would reinterpret (``%`` specifiers, ``$`` variables, spaces)."""
    for word in argv:
        if not _UNIT_WORD.match(word):
            raise UsageError(
                f"{word!r} cannot go into a systemd unit's command line unquoted",
                hint="Pass --upstream and --ports without spaces, quotes, % or $.",
            )
    return " ".join(argv)


@dataclass(frozen=True)
class File:
    name: str
    text: str
    mode: int
    #: where the printed install command puts it
    target: str


def systemd_files(record: HostRecord, argv: Sequence[str], artifact: Artifact) -> list[File]:
    """The unit, its EnvironmentFile and the fetch script, each with its mode and target.

    The service runs as a DynamicUser in its own StateDirectory, where ExecStartPre
    downloads the pyz and checks it before ExecStart runs it; nothing else is writable.
    """
    name = unit_name(record)
    home = f"{ETC}/{record.id}"
    env = f"{home}/token.env"
    fetch = f"{home}/fetch.py"
    pyz = f"%S/{name}/tunnel-core.pyz"
    pre = f"{UNIT_PYTHON} -I {fetch} {_unit_words([artifact.url, artifact.sha256])} {pyz}"
    start = f"{UNIT_PYTHON} -I -S {pyz} {_unit_words(argv[1:])}"
    unit = f"""[Unit]
Description=inletsctl tunnel client of host {record.id} ({record.mode})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
DynamicUser=yes
StateDirectory={name}
EnvironmentFile={env}
ExecStartPre={pre}
ExecStart={start}
Restart=always
RestartSec=2
UMask=0077
CapabilityBoundingSet=
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service

[Install]
WantedBy=multi-user.target
"""
    with map_provider_errors():
        token = cloud_init.check_token(record.token)
    return [
        File(f"{name}.service", unit, 0o644, f"/etc/systemd/system/{name}.service"),
        File("token.env", f"{TOKEN_ENV}={token}\n", 0o600, env),
        File("fetch.py", cloud_init.fetch_script(), 0o644, fetch),
    ]


def write_files(directory: Path, files: Sequence[File]) -> list[str]:
    """Each file written whole with its mode from the start (never briefly world-readable);
    returns the commands that install them and start the unit."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    commands = []
    for f in files:
        write_atomic(directory / f.name, f.text.encode(), mode=f.mode)
        commands.append(f"install -D -m {f.mode:04o} {directory / f.name} {f.target}")
    unit = next(f.name for f in files if f.name.endswith(".service"))
    return [*commands, f"systemctl daemon-reload && systemctl enable --now {unit}"]


def kubernetes_objects(record: HostRecord, argv: Sequence[str], artifact: Artifact) -> list[JSON]:
    """The Secret and the client Deployment, in the namespace ``kubectl`` is told.

    Labelled by host id, so ``kubectl delete secret,deployment -l`` finds them.
    """
    labels = {f"{resources.GROUP}/host-id": record.id}
    meta: JSON = {
        "name": unit_name(record),
        "labels": {**labels, "app.kubernetes.io/managed-by": "inletsctl"},
    }
    return [
        resources.token_secret(meta, record.token),
        resources.deployment(meta, labels, record.id, argv, artifact.url, artifact.sha256),
    ]


#: placeholders of a task definition printed without --register
SECRET_PLACEHOLDER = "SECRET_ARN"
ROLE_PLACEHOLDER = "EXECUTION_ROLE_ARN"


def task_definition(
    record: HostRecord,
    argv: Sequence[str],
    artifact: Artifact,
    secret_arn: str = SECRET_PLACEHOLDER,
    role_arn: str = ROLE_PLACEHOLDER,
    image: str = resources.CLIENT_IMAGE,
) -> JSON:
    """RegisterTaskDefinition's input for external instances.

    The image is a multi-arch Python image (amd64 and arm64 alike: the pyz is pure
    Python), so no ``runtimePlatform`` pins an architecture. The engine lands on a
    tmpfs: the root file system is read-only. The ECS agent reads the token with the
    execution role and hands it over as ``$INLETS_TOKEN``.
    """
    container: JSON = {
        "name": "tunnel-client",
        "image": image,
        "essential": True,
        "command": resources.client_command(argv, artifact.url, artifact.sha256),
        "environment": [{"name": "FETCH_PY", "value": cloud_init.fetch_script()}],
        "secrets": [{"name": TOKEN_ENV, "valueFrom": secret_arn}],
        "memoryReservation": 32,
        "readonlyRootFilesystem": True,
        "dockerSecurityOptions": ["no-new-privileges"],
        "linuxParameters": {
            "capabilities": {"drop": ["ALL"]},
            "tmpfs": [
                {
                    "containerPath": resources.PYZ_PATH.rsplit("/", 1)[0],
                    "size": 64,
                    "mountOptions": ["nosuid", "nodev"],
                }
            ],
        },
    }
    return {
        "family": Names(record.id).family,
        "requiresCompatibilities": ["EXTERNAL"],
        "networkMode": "host",
        "executionRoleArn": role_arn,
        "containerDefinitions": [container],
    }


def registered(record: HostRecord) -> bool:
    return bool(record.additional.get(ECS_CLUSTER))


#: providers whose credential flags are AWS's: ``delete`` passes them on to ECS
_AWS = ("ec2", "aws", "ecs-fargate")


def open_ecs(access: Access, state_dir: Path, record: HostRecord | None = None) -> EcsAnywhere:
    """ECS of ``connect --register`` (its flags are AWS's), or of ``delete`` (``record``):
    the region the registration recorded, and the delete's flags only when the exit
    server is on AWS too; otherwise boto3's own chain (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``)."""
    if record is not None:
        region = record.additional.get(ECS_REGION, "")
        access = (
            replace(access, region=region) if record.provider in _AWS else Access(region=region)
        )
    with map_provider_errors():
        return EcsAnywhere(config(access, state_dir))


def remove_registered(access: Access, store: Store, record: HostRecord) -> None:
    """``delete``'s step before the exit server: a registered client goes first."""
    if registered(record):
        unregister(store, open_ecs(access, store.directory, record), record)


def register(
    store: Store,
    ecs: EcsAnywhere,
    record: HostRecord,
    cluster: str,
    build: Callable[[str, str], Mapping[str, Any]],
) -> Registration:
    """Register the client on ``cluster``; on any failure or interrupt, nothing stays.

    The cluster and region are recorded before the first call, so a ``kill -9`` at any
    point leaves what ``delete --id`` needs; an undo that succeeded forgets them again.
    """
    if registered(record):
        where = record.additional[ECS_CLUSTER]
        raise UsageError(
            f"host {record.id}'s client was registered on ECS cluster {where} already "
            "(or a registration was interrupted)",
            hint=f"`inletsctl delete --id {record.id}` removes it with the exit server.",
        )
    with map_provider_errors():
        ecs.check_cluster(cluster)
    before = dict(record.additional)
    with kit.sigterm_raises():
        store.update(record.id, additional={**before, ECS_CLUSTER: cluster, ECS_REGION: ecs.region})
        try:
            with map_provider_errors():
                made = ecs.register(record.id, cluster, record.token, build)
        except BaseException as exc:
            _undo(ecs, record.id, cluster, exc)
            store.update(record.id, additional=before)
            raise
        store.update(
            record.id,
            additional={
                **before,
                ECS_CLUSTER: cluster,
                ECS_REGION: ecs.region,
                "ecs_service": made.service_arn,
                "ecs_task_definition": made.task_definition_arn,
                "ecs_secret": made.secret_arn,
            },
        )
    return made


def _undo(ecs: EcsAnywhere, host_id: str, cluster: str, cause: BaseException) -> None:
    try:
        kit.undo_with(lambda hid: ecs.purge(hid, cluster), host_id, cause)
    except UndoFailed as failed:
        raise ProviderFailure(failed.message, failed.hint) from failed


def unregister(store: Store, ecs: EcsAnywhere, record: HostRecord) -> list[str]:
    """What ``delete`` runs before the exit server goes: the service, every task
    definition revision, the role and the secret; the row forgets the cluster after."""
    cluster = record.additional[ECS_CLUSTER]
    with map_provider_errors():
        removed = ecs.purge(record.id, cluster)
    rest = {k: v for k, v in record.additional.items() if k not in _ECS_KEYS}
    store.update(record.id, additional=rest)
    return removed


def ecs_document(made: Registration, definition: Mapping[str, Any]) -> JSON:
    """``-o json`` of a registration: what was made, and the task definition sent."""
    return {
        "cluster": made.cluster,
        "region": made.region,
        "service_arn": made.service_arn,
        "task_definition_arn": made.task_definition_arn,
        "secret_arn": made.secret_arn,
        "execution_role_arn": made.role_arn,
        "task_definition": dict(definition),
    }
