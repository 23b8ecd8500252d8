"""`connect --generate ecs-anywhere --register` against a moto server (ECS, Secrets Manager,
IAM) taught ECS Anywhere's rules (tests/fakes/aws/ecs_anywhere.py), with the kit's faults
at every step: a lost answer, a dropped connection, Ctrl-C, SIGTERM, and kill -9 of the
CLI followed by one `delete --id`. Whatever happens, nothing stays registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inletsctl import deploy
from inletsctl.errors import ProviderFailure, UsageError
from inletsctl.release import Artifact
from inletsctl.store import READY, HostRecord, Store
from inletsctl.summary import client_argv
from providers.ecs_anywhere import EcsAnywhere, Names
from providers.kit import Terminated
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE, ProviderConfig
from providers.testing.faults import IN_PROCESS, Fault, FaultPlan, FaultProxy
from tests.fakes.aws.ecs_anywhere import ecs_anywhere_rules
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    REGION,
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
    plain_client,
)

pytestmark = pytest.mark.network
CLUSTER = "edge"
#: the five calls of a registration, told apart by their bodies (ECS and Secrets Manager
#: speak JSON with the operation in a header; IAM is a query API)
STEPS = {
    "CreateSecret": r'^POST / .*"SecretString"',
    "CreateRole": r"^POST / .*\bAction=CreateRole\b",
    "PutRolePolicy": r"^POST / .*\bAction=PutRolePolicy\b",
    "RegisterTaskDefinition": r'^POST / .*"containerDefinitions"',
    "CreateService": r'^POST / .*"schedulingStrategy"',
}
INTERNAL = (500, {"Content-Type": "application/x-amz-json-1.1"}, b'{"__type":"ServerException"}')
ARTIFACT = Artifact(url="https://releases.example/t/tunnel-core.pyz", sha256="ab" * 32, version="1")


@pytest.fixture
def aws(moto: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, FaultPlan]]:
    """moto with ECS Anywhere's rules and a cluster, behind a fault proxy (its URL, plan)."""
    with ecs_anywhere_rules(monkeypatch):
        plain_client(moto, service="ecs").create_cluster(clusterName=CLUSTER)
        plan = FaultPlan(STEPS)
        proxy = FaultProxy(moto, plan, lambda: INTERNAL)
        try:
            yield proxy.url, plan
        finally:
            proxy.stop()


def host(store: Store, host_id: str = "0123456789ab") -> HostRecord:
    """A ready tcp host in the state; no exit server needed to register its client."""
    return store.add(
        HostRecord(
            id=host_id,
            provider="local",
            name="edge",
            status=READY,
            mode="tcp",
            engine="tunnel-core",
            control_port=8123,
            data_port=8000,
            fingerprint="sha256:" + "cd" * 32,
            token="tok-" + "x" * 40,
            ip="203.0.113.7",
            ports="2222:22",
            region="local",
        )
    )


def opened(url: str) -> EcsAnywhere:
    return EcsAnywhere(
        ProviderConfig(
            region=REGION,
            access_token=CREDENTIALS["aws_access_key_id"],
            secret_key=CREDENTIALS["aws_secret_access_key"],
            endpoint_url=url,
        )
    )


def registered(url: str, host_id: str) -> dict[str, list[str]]:
    """What moto holds of a host's client, by kind; empty lists when nothing."""
    names = Names(host_id)
    ecs = plain_client(url, service="ecs")
    services = [
        s["serviceArn"]
        for s in ecs.describe_services(cluster=CLUSTER, services=[names.service])["services"]
        if s["status"] != "INACTIVE"
    ]
    revisions = [
        arn
        for status in ("ACTIVE", "INACTIVE")
        for arn in ecs.list_task_definitions(familyPrefix=names.family, status=status)[
            "taskDefinitionArns"
        ]
    ]
    secrets = [
        s["ARN"]
        for s in plain_client(url, service="secretsmanager").list_secrets()["SecretList"]
        if s["Name"] == names.secret
    ]
    roles = [
        r["Arn"]
        for r in plain_client(url, service="iam").list_roles()["Roles"]
        if r["RoleName"] == names.role
    ]
    return {"services": services, "task_definitions": revisions, "secrets": secrets, "roles": roles}


NOTHING = {"services": [], "task_definitions": [], "secrets": [], "roles": []}


def build(record: HostRecord) -> Any:
    argv = client_argv(record)
    return lambda secret, role: deploy.task_definition(record, argv, ARTIFACT, secret, role)


def test_register_makes_a_daemon_service_on_external_instances_and_delete_removes_it(
    aws: tuple[str, FaultPlan], tmp_path: Path
) -> None:
    url, _ = aws
    store = Store(tmp_path)
    record = host(store)
    made = deploy.register(store, opened(url), record, CLUSTER, build(record))

    ecs = plain_client(url, service="ecs")
    [service] = ecs.describe_services(cluster=CLUSTER, services=[made.service_arn])["services"]
    assert (service["launchType"], service["schedulingStrategy"]) == ("EXTERNAL", "DAEMON")
    assert service["taskDefinition"] == made.task_definition_arn
    task = ecs.describe_task_definition(taskDefinition=made.task_definition_arn, include=["TAGS"])
    definition = task["taskDefinition"]
    assert definition["requiresCompatibilities"] == ["EXTERNAL"]
    assert definition["networkMode"] == "host"
    assert definition["executionRoleArn"] == made.role_arn
    [container] = definition["containerDefinitions"]
    assert container["secrets"] == [{"name": "INLETS_TOKEN", "valueFrom": made.secret_arn}]
    assert record.token not in json.dumps(definition), "the token travels as a secret only"
    assert {"key": HOST_ID_TAG, "value": record.id} in task["tags"]
    secrets = plain_client(url, service="secretsmanager")
    assert secrets.get_secret_value(SecretId=made.secret_arn)["SecretString"] == record.token
    iam = plain_client(url, service="iam")
    policy = iam.get_role_policy(RoleName=Names(record.id).role, PolicyName="read-tunnel-token")
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue",
        "Resource": made.secret_arn,
    }, "the execution role reads this one secret and nothing else"
    trust = iam.get_role(RoleName=Names(record.id).role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    extra = store.get(record.id).additional
    assert extra[deploy.ECS_CLUSTER] == CLUSTER and extra["ecs_service"] == made.service_arn

    with pytest.raises(UsageError, match="registered on ECS cluster edge already"):
        deploy.register(store, opened(url), store.get(record.id), CLUSTER, build(record))

    removed = deploy.unregister(store, opened(url), store.get(record.id))
    assert set(removed) == {made.service_arn, made.task_definition_arn, made.secret_arn,
                            made.role_arn}  # fmt: skip
    assert registered(url, record.id) == NOTHING
    assert deploy.ECS_CLUSTER not in store.get(record.id).additional


def test_a_missing_cluster_is_refused_before_anything_is_made(
    aws: tuple[str, FaultPlan], tmp_path: Path
) -> None:
    url, _ = aws
    store = Store(tmp_path)
    record = host(store)
    with pytest.raises(UsageError, match="no active ECS cluster 'nope'") as caught:
        deploy.register(store, opened(url), record, "nope", build(record))
    assert "--cluster" in caught.value.hint
    assert registered(url, record.id) == NOTHING
    assert store.get(record.id).additional == {}


def test_purge_leaves_what_is_not_ours(aws: tuple[str, FaultPlan], tmp_path: Path) -> None:
    """A secret of our name made by hand (no tag) is refused, not deleted."""
    url, _ = aws
    names = Names("0123456789ab")
    secrets = plain_client(url, service="secretsmanager")
    secrets.create_secret(Name=names.secret, SecretString="someone else's")
    with pytest.raises(Exception, match="not made by inletsctl"):
        opened(url).purge("0123456789ab", CLUSTER)
    assert secrets.describe_secret(SecretId=names.secret)["Name"] == names.secret


@pytest.mark.parametrize("fault", IN_PROCESS, ids=[f.value for f in IN_PROCESS])
@pytest.mark.parametrize("step", list(STEPS))
def test_a_fault_at_any_step_leaves_all_or_nothing(
    aws: tuple[str, FaultPlan], tmp_path: Path, step: str, fault: Fault
) -> None:
    """boto3 retries a 5xx and a dropped connection: a retried create then finds its
    own work done (the secret or role exists) and the registration is undone; a retried
    put or register succeeds. Either way, nothing is left half made."""
    url, plan = aws
    store = Store(tmp_path)
    record = host(store)
    plan.arm(step, fault)
    try:
        made = deploy.register(store, opened(url), record, CLUSTER, build(record))
    except (ProviderFailure, KeyboardInterrupt, Terminated):
        assert registered(url, record.id) == NOTHING
        assert store.get(record.id).additional == {}, "an undone registration is forgotten"
    else:
        assert fault in (Fault.ERROR, Fault.LOST, Fault.DROPPED), "a signal always undoes"
        left = registered(url, record.id)
        assert left["services"] == [made.service_arn] and left["secrets"] == [made.secret_arn]
        deploy.unregister(store, opened(url), store.get(record.id))
        assert registered(url, record.id) == NOTHING
    assert [s.step for s in plan.struck] == [step], "the fault was reached"


def cli(state: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "INLETSCTL_STATE_DIR": str(state),
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": url,
        "NO_COLOR": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "inletsctl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def register_args(host_id: str) -> list[str]:
    return ["connect", host_id, "--generate", "ecs-anywhere", "--register", "--cluster", CLUSTER,
            "--release-url", "https://releases.example/t"]  # fmt: skip


def test_register_then_delete_by_id_through_the_cli(
    aws: tuple[str, FaultPlan], tmp_path: Path
) -> None:
    url, _ = aws
    record = host(Store(tmp_path))
    proc = cli(tmp_path, url, *register_args(record.id), "-o", "json")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["cluster"] == CLUSTER and doc["region"] == REGION
    assert doc["task_definition"]["requiresCompatibilities"] == ["EXTERNAL"]
    assert record.token not in out + err, "the token is never printed"
    assert registered(url, record.id)["services"] == [doc["service_arn"]]

    proc = cli(tmp_path, url, "delete", "--id", record.id)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert registered(url, record.id) == NOTHING
    assert Store(tmp_path).get(record.id).status == "deleted"


@pytest.mark.parametrize("step", list(STEPS))
def test_kill_9_at_any_step_then_one_delete_by_id_leaves_nothing(
    aws: tuple[str, FaultPlan], tmp_path: Path, step: str
) -> None:
    url, plan = aws
    record = host(Store(tmp_path))
    proc = cli(tmp_path, url, *register_args(record.id))
    plan.arm(step, Fault.KILL, victim=lambda: proc.pid)
    proc.communicate(timeout=120)
    assert proc.returncode == -9 and [s.step for s in plan.struck] == [step]
    assert Store(tmp_path).get(record.id).additional[deploy.ECS_CLUSTER] == CLUSTER

    proc = cli(tmp_path, url, "delete", "--id", record.id)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert registered(url, record.id) == NOTHING
    row = Store(tmp_path).get(record.id)
    assert row.status == "deleted" and deploy.ECS_CLUSTER not in row.additional


def test_tags_are_ours_on_everything(aws: tuple[str, FaultPlan], tmp_path: Path) -> None:
    url, _ = aws
    store = Store(tmp_path)
    record = host(store)
    made = deploy.register(store, opened(url), record, CLUSTER, build(record))
    ours = {"Key": TAG_KEY, "Value": TAG_VALUE}
    secret = plain_client(url, service="secretsmanager").describe_secret(SecretId=made.secret_arn)
    assert ours in secret["Tags"]
    role = plain_client(url, service="iam").get_role(RoleName=Names(record.id).role)["Role"]
    assert ours in role["Tags"]
    [service] = plain_client(url, service="ecs").describe_services(
        cluster=CLUSTER, services=[made.service_arn], include=["TAGS"]
    )["services"]
    assert {"key": TAG_KEY, "value": TAG_VALUE} in service["tags"]
