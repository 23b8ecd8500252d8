"""ECS Anywhere: a host's tunnel client as a DAEMON service on a cluster's external instances.

What ``inletsctl connect ID --generate ecs-anywhere --register --cluster C`` makes, in
order, each tagged ``inletsctl=exit-server`` and ``inletsctl-host=<host id>`` in the
call that creates it, and each named after the host id:

1. a Secrets Manager secret ``inletsctl/<host id>/token`` holding the tunnel token;
2. an IAM role ``inletsctl-client-<host id>`` (the task execution role) that may read
   that one secret and nothing else;
3. a task definition revision of the family ``inletsctl-client-<host id>``;
4. a service of the same name, ``launchType: EXTERNAL``, ``schedulingStrategy: DAEMON``.

The names are the idempotency token here: :meth:`EcsAnywhere.purge` needs only the host
id and the cluster to find what a lost answer, a Ctrl-C or a ``kill -9`` left, and it
removes only what carries our tag. boto3 is imported through ``EC2Provider`` when an
``EcsAnywhere`` is made, never when this module is imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from providers.ec2_errors import aws_errors, error_code
from providers.errors import InvalidSpec
from providers.fargate import TASKS_ASSUME_ROLE
from providers.kit import require_ours
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE, ProviderConfig

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

NAME = "ecs-anywhere"
_POLICY_NAME = "read-tunnel-token"
#: what is missing when AWS refuses; each names the flag or permission that fixes it
HINTS: Mapping[str, str] = {
    "ClusterNotFoundException": (
        "No ECS cluster of that name in this region: pass --cluster NAME (and --region), "
        "or create it (aws ecs create-cluster --cluster-name NAME)."
    ),
    "AccessDeniedException": (
        "Grant the IAM identity ecs:RegisterTaskDefinition, ecs:DeregisterTaskDefinition, "
        "ecs:DeleteTaskDefinitions, ecs:CreateService, ecs:DeleteService, ecs:Describe*, "
        "ecs:List*, ecs:TagResource, secretsmanager:CreateSecret, secretsmanager:DeleteSecret, "
        "secretsmanager:DescribeSecret, iam:CreateRole, iam:PutRolePolicy, iam:DeleteRole*, "
        "iam:GetRole, iam:ListRolePolicies, iam:TagRole and iam:PassRole."
    ),
    "AccessDenied": (
        "Grant the IAM identity iam:CreateRole, iam:PutRolePolicy, iam:TagRole, iam:GetRole, "
        "iam:ListRolePolicies, iam:DeleteRolePolicy, iam:DeleteRole and iam:PassRole."
    ),
    "ResourceExistsException": (
        "A secret of that name exists already: `inletsctl delete --id ID` removes what an "
        "earlier --register made."
    ),
    "EntityAlreadyExists": (
        "A role of that name exists already: `inletsctl delete --id ID` removes what an "
        "earlier --register made."
    ),
}
#: the codes that say "already gone": nothing to remove
_GONE = {
    "ClusterNotFoundException",
    "ServiceNotFoundException",
    "ResourceNotFoundException",
    "NoSuchEntity",
}


@dataclass(frozen=True)
class Names:
    """Everything of one host's client is named after its host id."""

    host_id: str

    @property
    def secret(self) -> str:
        return f"inletsctl/{self.host_id}/token"

    @property
    def family(self) -> str:
        return f"inletsctl-client-{self.host_id}"

    @property
    def service(self) -> str:
        return self.family

    @property
    def role(self) -> str:
        return self.family


@dataclass(frozen=True)
class Registration:
    """What ``register`` made; the state keeps it so ``get`` and ``delete`` can name it."""

    cluster: str
    region: str
    secret_arn: str
    role_arn: str
    task_definition_arn: str
    service_arn: str


#: builds the task definition from the secret's and the execution role's ARNs
TaskDefinition = Callable[[str, str], Mapping[str, Any]]


def _tags(host_id: str) -> list[dict[str, str]]:
    """Secrets Manager's and IAM's spelling (``Key``/``Value``)."""
    return [{"Key": TAG_KEY, "Value": TAG_VALUE}, {"Key": HOST_ID_TAG, "Value": host_id}]


def _ecs_tags(host_id: str) -> list[dict[str, str]]:
    """ECS's spelling (``key``/``value``)."""
    return [{"key": t["Key"], "value": t["Value"]} for t in _tags(host_id)]


def _tag_map(tags: Any) -> dict[str, str]:
    """Either spelling as a map, for ``require_ours``."""
    return {t.get("Key", t.get("key", "")): t.get("Value", t.get("value", "")) for t in tags or ()}


class EcsAnywhere:
    """One account and region's ECS, Secrets Manager and IAM, from the EC2 provider's flags."""

    def __init__(self, config: ProviderConfig) -> None:
        from providers.ec2 import EC2Provider

        aws = EC2Provider(config)
        self.region = aws.region
        self.ecs = cast("ECSClient", aws.aws_client("ecs"))
        self.secrets = cast("SecretsManagerClient", aws.aws_client("secretsmanager"))
        self.iam = cast("IAMClient", aws.aws_client("iam"))

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        with aws_errors(action, provider=NAME, hints=HINTS):
            yield

    def check_cluster(self, cluster: str) -> None:
        """Before anything is made: a missing cluster is the likeliest mistake."""
        with self._errors(f"look up the ECS cluster {cluster}"):
            found = self.ecs.describe_clusters(clusters=[cluster])["clusters"]
        if not any(c.get("status") == "ACTIVE" for c in found):
            raise InvalidSpec(
                f"{NAME}: no active ECS cluster {cluster!r} in {self.region}",
                hint=HINTS["ClusterNotFoundException"],
            )

    def register(
        self, host_id: str, cluster: str, token: str, task_definition: TaskDefinition
    ) -> Registration:
        """Secret, role, task definition, service: each step needs the one before it.

        A failure midway leaves what was made; the caller undoes it with :meth:`purge`.
        """
        names = Names(host_id)
        with self._errors("create the token's secret"):
            secret_arn = self.secrets.create_secret(
                Name=names.secret,
                Description=f"inletsctl tunnel token of host {host_id}",
                SecretString=token,
                Tags=cast(Any, _tags(host_id)),
            )["ARN"]
        with self._errors("create the task execution role"):
            role_arn = self.iam.create_role(
                RoleName=names.role,
                AssumeRolePolicyDocument=json.dumps(TASKS_ASSUME_ROLE),
                Description=f"inletsctl: reads the tunnel token of host {host_id}",
                Tags=cast(Any, _tags(host_id)),
            )["Role"]["Arn"]
            self.iam.put_role_policy(
                RoleName=names.role,
                PolicyName=_POLICY_NAME,
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": "secretsmanager:GetSecretValue",
                                "Resource": secret_arn,
                            }
                        ],
                    }
                ),
            )
        document = dict(task_definition(secret_arn, role_arn))
        with self._errors("register the task definition"):
            definition = self.ecs.register_task_definition(
                **document, tags=cast(Any, _ecs_tags(host_id))
            )["taskDefinition"]
        arn = definition["taskDefinitionArn"]
        with self._errors(f"create the DAEMON service in cluster {cluster}"):
            service = self.ecs.create_service(
                cluster=cluster,
                serviceName=names.service,
                taskDefinition=arn,
                launchType="EXTERNAL",
                schedulingStrategy="DAEMON",
                tags=cast(Any, _ecs_tags(host_id)),
                propagateTags="SERVICE",
            )["service"]
        return Registration(cluster, self.region, secret_arn, role_arn, arn, service["serviceArn"])

    def purge(self, host_id: str, cluster: str) -> list[str]:
        """Remove what carries our tag and the host's names: service, task definition
        revisions, role, secret (the reverse of :meth:`register`). Returns what went."""
        names = Names(host_id)
        return [
            *self._purge_service(names, cluster),
            *self._purge_task_definitions(names),
            *self._purge_role(names),
            *self._purge_secret(names),
        ]

    def _purge_service(self, names: Names, cluster: str) -> list[str]:
        from botocore.exceptions import ClientError

        with self._errors(f"remove the service {names.service} from cluster {cluster}"):
            try:
                found = self.ecs.describe_services(
                    cluster=cluster, services=[names.service], include=["TAGS"]
                )["services"]
            except ClientError as exc:
                if error_code(exc) in _GONE:
                    return []  # no cluster, no service
                raise
            removed = []
            for service in found:
                if service.get("status") == "INACTIVE":
                    continue
                arn = service["serviceArn"]
                require_ours(NAME, f"service {arn}", _tag_map(service.get("tags")), False)
                self.ecs.delete_service(cluster=cluster, service=arn, force=True)
                removed.append(arn)
            return removed

    def _purge_task_definitions(self, names: Names) -> list[str]:
        """Every revision of the family: deregistered (ACTIVE), then deleted."""
        with self._errors(f"remove the task definitions {names.family}"):
            removed = []
            for status in ("ACTIVE", "INACTIVE"):
                for arn in self._revisions(names.family, status):
                    described = self.ecs.describe_task_definition(
                        taskDefinition=arn, include=["TAGS"]
                    )
                    require_ours(
                        NAME, f"task definition {arn}", _tag_map(described.get("tags")), False
                    )
                    if status == "ACTIVE":
                        self.ecs.deregister_task_definition(taskDefinition=arn)
                    self.ecs.delete_task_definitions(taskDefinitions=[arn])
                    removed.append(arn)
            return removed

    def _revisions(self, family: str, status: str) -> list[str]:
        """ARNs of ``family`` itself (``familyPrefix`` matches longer families too)."""
        pages = self.ecs.get_paginator("list_task_definitions").paginate(
            familyPrefix=family, status=cast(Any, status)
        )
        return [
            arn
            for page in pages
            for arn in page["taskDefinitionArns"]
            if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family
        ]

    def _purge_role(self, names: Names) -> list[str]:
        from botocore.exceptions import ClientError

        with self._errors(f"remove the role {names.role}"):
            try:
                role = self.iam.get_role(RoleName=names.role)["Role"]
                require_ours(NAME, f"role {role['Arn']}", _tag_map(role.get("Tags")), False)
                for policy in self.iam.list_role_policies(RoleName=names.role)["PolicyNames"]:
                    self.iam.delete_role_policy(RoleName=names.role, PolicyName=policy)
                self.iam.delete_role(RoleName=names.role)
            except ClientError as exc:
                if error_code(exc) in _GONE:
                    return []
                raise
            return [role["Arn"]]

    def _purge_secret(self, names: Names) -> list[str]:
        from botocore.exceptions import ClientError

        with self._errors(f"remove the secret {names.secret}"):
            try:
                secret = self.secrets.describe_secret(SecretId=names.secret)
                if secret.get("DeletedDate"):
                    return []  # scheduled for deletion already: not readable, going
                require_ours(NAME, f"secret {secret['ARN']}", _tag_map(secret.get("Tags")), False)
                self.secrets.delete_secret(SecretId=secret["ARN"], ForceDeleteWithoutRecovery=True)
            except ClientError as exc:
                if error_code(exc) in _GONE:
                    return []
                raise
            return [secret["ARN"]]
