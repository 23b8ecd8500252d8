"""Exit servers as ECS Fargate tasks, through boto3's real traffic to moto.

moto keeps the state of ECS, Secrets Manager, Logs, IAM, ELBv2 and EC2 but runs no
container and no health check; ``tests/fakes/aws/fargate.py`` starts and stops a service's
tasks as ECS's scheduler would. What is checked here is what AWS is asked for and that
nothing is left; the container's own command is run on this machine against a local
release server, and a tunnel client connects through the server it starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

import cloud_init
from inletsctl import release
from providers import ec2_lb, fargate, kit
from providers.errors import InvalidSpec
from providers.fargate import FargateProvider
from providers.models import HOST_ID_TAG, HostSpec, HostStatus, ProviderConfig, TunnelMode
from providers.testing.conformance import ProviderConformance, make_server_spec, wait_active
from tests.conftest import free_port, wait_for
from tests.fakes.aws.fargate import FargateKit
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    REGION,
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
)
from tests.fakes.release_server import release_server

NLB = {"count": "2", "load_balancer": "nlb"}
SHA = "0" * 64
DEADLINE_S = 30.0


def make_provider(url: str, sleeps: list[float]) -> FargateProvider:
    return FargateProvider(
        ProviderConfig(
            region=REGION,
            access_token=CREDENTIALS["aws_access_key_id"],
            secret_key=CREDENTIALS["aws_secret_access_key"],
            endpoint_url=url,
        ),
        backoff=lambda n: 0.0,
        max_polls=5,
        sleep=sleeps.append,
    )


def fargate_spec(provider: Any, extra: dict[str, str] = NLB, **server: Any) -> HostSpec:
    spec = ProviderConformance().make_spec(provider)
    release_url = "https://releases.example/tunnel-core.pyz"
    made = replace(spec.server, release_url=release_url, artifact_sha256=SHA, **server)
    return replace(spec, extra=extra, server=made)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def cloud(moto: str) -> Iterator[FargateKit]:
    handle = FargateKit(moto)
    yield handle
    handle.proxy.stop()


@pytest.fixture
def provider(cloud: FargateKit, sleeps: list[float]) -> FargateProvider:
    return make_provider(cloud.endpoint, sleeps)


@pytest.mark.kit  # the whole fault matrix: `make test-kit`
class TestFargateConformance(ProviderConformance):
    """The kit's whole suite, each create step a fault point."""

    failure_points = FargateKit.failure_points
    cli_create_args: ClassVar[tuple[str, ...]] = (
        "--tcp", "--ports", "8080", "--count", "2", "--load-balancer", "nlb", "--wait", "none",
    )  # fmt: skip

    def make_spec(self, provider: Any) -> HostSpec:
        return fargate_spec(provider)

    @pytest.fixture
    def fake(self, cloud: FargateKit) -> FargateKit:
        return cloud

    @pytest.fixture
    def cli_env(self, cloud: FargateKit) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": cloud.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
        }


def _tags(items: list[dict[str, Any]]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items}


def registered_definition(cloud: FargateKit) -> dict[str, Any]:
    (arn,) = cloud.ecs.list_task_definitions(status="ACTIVE")["taskDefinitionArns"]
    answer = cloud.ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
    return {**answer["taskDefinition"], "tags": answer.get("tags", [])}


# -- what create makes ---------------------------------------------------------------------


def test_the_task_definition_references_the_secrets_and_never_holds_them(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    spec = fargate_spec(provider)
    kit.create_host(provider, spec)
    definition = registered_definition(cloud)
    text = json.dumps(definition)
    assert spec.server.token not in text
    assert spec.server.tls_key_pem.strip().splitlines()[1] not in text  # a line of the key
    assert (definition["cpu"], definition["memory"]) == ("256", "512")
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    assert definition["networkMode"] == "awsvpc"
    (container,) = definition["containerDefinitions"]
    assert container["image"] == fargate.IMAGE
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    assert set(secrets) == {fargate.TOKEN_ENV, fargate.KEY_ENV}
    stored = {
        s["ARN"]: cloud.secrets.get_secret_value(SecretId=s["ARN"])["SecretString"]
        for s in cloud.secrets.list_secrets()["SecretList"]
    }
    assert stored[secrets[fargate.TOKEN_ENV]] == spec.server.token
    assert stored[secrets[fargate.KEY_ENV]] == spec.server.tls_key_pem
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env[fargate.CERT_ENV] == spec.server.tls_cert_pem  # public: it is pinned
    assert container["command"][-2:] == [spec.server.release_url, SHA]
    log = container["logConfiguration"]["options"]["awslogs-group"]
    assert [g["logGroupName"] for g in cloud.logs.describe_log_groups()["logGroups"]] == [log]
    assert {t["key"]: t["value"] for t in definition["tags"]}[HOST_ID_TAG] == spec.host_id


def test_the_execution_role_reads_exactly_the_two_secrets(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    spec = fargate_spec(provider)
    kit.create_host(provider, spec)
    definition = registered_definition(cloud)
    role_name = definition["executionRoleArn"].rsplit("/", 1)[-1]
    role = cloud.iam.get_role(RoleName=role_name)["Role"]
    assert _tags(role["Tags"])[HOST_ID_TAG] == spec.host_id
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    (name,) = cloud.iam.list_role_policies(RoleName=role_name)["PolicyNames"]
    policy = cloud.iam.get_role_policy(RoleName=role_name, PolicyName=name)["PolicyDocument"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    reads = [s for s in policy["Statement"] if s["Action"] == "secretsmanager:GetSecretValue"]
    (secrets,) = (s["Resource"] for s in reads)
    assert sorted(secrets) == sorted(s["ARN"] for s in cloud.secrets.list_secrets()["SecretList"])
    assert len(secrets) == 2
    allowed = {
        action
        for s in policy["Statement"]
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert allowed == {
        "secretsmanager:GetSecretValue",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }


def test_the_service_runs_n_tasks_behind_ip_target_groups_that_only_the_lb_reaches(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    spec = fargate_spec(provider, {"count": "3", "load_balancer": "nlb"}, ports=(8080, 2222))
    host = wait_active(provider, kit.create_host(provider, spec))
    (cluster,) = cloud.ecs.list_clusters()["clusterArns"]
    (service,) = cloud.ecs.describe_services(
        cluster=cluster, services=cloud.ecs.list_services(cluster=cluster)["serviceArns"]
    )["services"]
    assert (service["desiredCount"], service["launchType"]) == (3, "FARGATE")
    assert host.id == service["serviceArn"]
    groups = cloud.elb.describe_target_groups()["TargetGroups"]
    assert {g["TargetType"] for g in groups} == {"ip"}
    assert sorted(g["Port"] for g in groups) == [2222, 8080]
    assert sorted(lb["containerPort"] for lb in service["loadBalancers"]) == [2222, 8080]
    assert {lb["targetGroupArn"] for lb in service["loadBalancers"]} == {
        g["TargetGroupArn"] for g in groups
    }
    assert {g["HealthCheckPath"] for g in groups} == {ec2_lb.HEALTH_PATH}
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["assignPublicIp"] == "ENABLED"
    (task_group,) = network["securityGroups"]
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    (lb_group,) = lb["SecurityGroups"]
    (rules,) = cloud.ec2.describe_security_groups(GroupIds=[task_group])["SecurityGroups"]
    sources = {
        (p["FromPort"], p["ToPort"]): sorted(
            [r["CidrIp"] for r in p.get("IpRanges", [])]
            + [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
        )
        for p in rules["IpPermissions"]
    }
    assert sources[(8123, 8123)] == ["0.0.0.0/0"]
    assert sources[(2222, 2222)] == sources[(8080, 8080)] == [lb_group]
    members = host.additional["members"].split(",")
    assert len(members) == 3 and all(host.additional["member_ips"].split(","))
    assert host.ip in host.additional["member_ips"].split(",")
    assert host.additional["dns_name"] == lb["DNSName"]
    listed = provider.list()
    assert [h.id for h in listed] == [host.id], "the group is one host"


def test_an_alb_forwards_port_80_to_the_http_data_port(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    spec = fargate_spec(provider, {"load_balancer": "alb"}, mode=TunnelMode.HTTP, ports=())
    host = wait_active(provider, kit.create_host(provider, spec))
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    assert lb["Type"] == "application"
    listeners = cloud.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert [(li["Port"], li["Protocol"]) for li in listeners] == [(80, "HTTP")]
    (group,) = cloud.elb.describe_target_groups()["TargetGroups"]
    assert (group["Port"], group["TargetType"]) == (8000, "ip")
    assert len(host.additional["members"].split(",")) == 2  # --count defaults to 2
    command = registered_definition(cloud)["containerDefinitions"][0]["command"]
    assert "http server --port 8000 --control-port 8123" in command[2]


def test_an_existing_cluster_is_used_and_never_deleted(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    arn = cloud.ecs.create_cluster(clusterName="shared")["cluster"]["clusterArn"]
    before = cloud.resources()
    spec = fargate_spec(provider, {**NLB, "cluster": "shared"})
    host = kit.create_host(provider, spec)
    assert host.additional["cluster"] == arn
    assert cloud.ecs.list_clusters()["clusterArns"] == [arn]
    kit.delete_host(provider, spec.host_id)
    assert cloud.resources() == before
    (cluster,) = cloud.ecs.describe_clusters(clusters=[arn])["clusters"]
    assert cluster["status"] == "ACTIVE"


def test_a_missing_cluster_is_refused_and_leaves_nothing(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    before = cloud.resources()
    with pytest.raises(InvalidSpec) as refused:
        kit.create_host(provider, fargate_spec(provider, {**NLB, "cluster": "nope"}))
    assert "--cluster" in refused.value.hint
    assert cloud.resources() == before


def test_delete_scales_the_service_to_zero_before_deleting_it(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    events = provider.ecs.meta.events
    events.register(
        "before-parameter-build.ecs",
        lambda model, params, **_: seen.append((model.name, dict(params))),
    )
    before = cloud.resources()
    spec = fargate_spec(provider)
    host = wait_active(provider, kit.create_host(provider, spec))
    seen.clear()
    provider.delete(host_id=host.id)
    names = [name for name, _ in seen]
    assert names.index("UpdateService") < names.index("DeleteService")
    (update,) = [p for name, p in seen if name == "UpdateService"]
    assert update["desiredCount"] == 0
    assert names.index("DeleteService") < names.index("DeleteCluster")
    assert "DeregisterTaskDefinition" in names
    assert cloud.resources() == before
    assert provider.status(host.id).status is HostStatus.DELETED


def test_a_group_needs_a_load_balancer(provider: FargateProvider) -> None:
    with pytest.raises(InvalidSpec) as refused:
        provider.create(fargate_spec(provider, {}))
    assert "--load-balancer" in refused.value.hint


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = "import sys, providers.fargate; sys.exit('boto3' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# -- the container's own command, run here -------------------------------------------------


def _through(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
        return got


def _answers(port: int) -> bool:
    try:
        return _through(port, b"ping") == b"ping"
    except OSError:
        return False


def test_the_container_command_fetches_the_pinned_engine_and_serves_a_client(
    tmp_path: Path,
) -> None:
    """The task definition's command with the secrets as ECS hands them over (env vars):
    it fetches tunnel-core.pyz from a release server, checks its SHA-256, and a tunnel
    client connects through the server it starts (``--bind 127.0.0.1`` added: tests
    listen on loopback only)."""
    import socketserver
    import threading

    pyz = release.local_pyz()
    control, public = free_port(), free_port()

    class Echo(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read())

    # the client dials its upstream on the public port: 127.0.0.2 stands in for the service
    upstream = socketserver.ThreadingTCPServer(("127.0.0.2", public), Echo)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with release_server() as releases:
        releases.publish(release.tag(), {pyz.name: pyz.read_bytes()})
        url = release.asset_url(pyz.name, release_url=releases.url)
        server = replace(
            make_server_spec(ports=(public,)),
            control_port=control,
            allow_ports=str(public),
            release_url=url,
            artifact_sha256=release.sha256_file(pyz),
        )
        command = fargate.container_command(server, str(tmp_path / "engine"))
        command[2] = command[2].replace(" tcp server ", " tcp server --bind 127.0.0.1 ")
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            fargate.TOKEN_ENV: server.token,
            fargate.KEY_ENV: server.tls_key_pem,
            fargate.CERT_ENV: server.tls_cert_pem,
            fargate.FETCH_ENV: cloud_init.fetch_script(),
        }
        client_argv = [
            sys.executable, "-m", "tunnel_core", "tcp", "client",
            "--url", f"wss://127.0.0.1:{control}", "--token-env", fargate.TOKEN_ENV,
            "--tls-fingerprint", server.tls_fingerprint,
            "--upstream", "127.0.0.2", "--ports", str(public),
        ]  # fmt: skip
        with open(tmp_path / "server.log", "wb") as log:
            exit_server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _listening(control), DEADLINE_S, "the exit server to listen")
            assert releases.hits(pyz.name), "it fetched the engine from the release URL"
            assert (tmp_path / "engine" / "tls.key").stat().st_mode & 0o077 == 0
            with open(tmp_path / "client.log", "wb") as log:
                client = subprocess.Popen(
                    client_argv, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            try:
                wait_for(lambda: _answers(public), DEADLINE_S, "the tunnel to carry a connection")
                assert _through(public, b"through the task") == b"through the task"
            finally:
                client.terminate()
                client.wait(timeout=DEADLINE_S)
        finally:
            exit_server.terminate()
            exit_server.wait(timeout=DEADLINE_S)
            upstream.shutdown()
            upstream.server_close()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_the_container_command_refuses_an_engine_with_another_hash(tmp_path: Path) -> None:
    pyz = release.local_pyz()
    with release_server() as releases:
        releases.publish(release.tag(), {pyz.name: pyz.read_bytes()})
        server = replace(
            make_server_spec(),
            release_url=release.asset_url(pyz.name, release_url=releases.url),
            artifact_sha256="f" * 64,
        )
        command = fargate.container_command(server, str(tmp_path / "engine"))
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            fargate.FETCH_ENV: cloud_init.fetch_script(),
        }
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "is not the pinned" in done.stderr
    assert not (tmp_path / "engine" / "tunnel-core.pyz").exists()


def test_logs_come_from_the_tasks_log_group(provider: FargateProvider, cloud: FargateKit) -> None:
    spec = fargate_spec(provider)
    host = kit.create_host(provider, spec)
    group = fargate.Names(spec.host_id).log_group
    cloud.logs.create_log_stream(logGroupName=group, logStreamName="inletsctl/tunnel-core/1")
    cloud.logs.put_log_events(
        logGroupName=group,
        logStreamName="inletsctl/tunnel-core/1",
        # now: AWS (and moto) refuse events older than 14 days
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "control port 8123 ready"}],
    )
    assert "control port 8123 ready" in provider.console_output(host.id)
