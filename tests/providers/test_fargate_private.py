"""Fargate tasks without public IPs, in private subnets, fed from S3, through moto.

The VPC is built here (``tests.fakes.aws.fargate.private_vpc``): public subnets whose
0.0.0.0/0 goes to an internet gateway (one by its own route table, one by the main
table), private ones without (or with a NAT gateway's). What is checked is what AWS is
asked for, and that one purge removes all of it and nothing else: a VPC endpoint that
was there before stays. moto makes no private DNS for an interface endpoint, routes no
packet through a gateway endpoint and pulls no image: those are not shown here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from inletsctl import release
from providers import ec2_lb, fargate, fargate_network, kit
from providers.errors import InvalidSpec
from providers.fargate import FargateProvider
from providers.models import HOST_ID_TAG, TAG_KEY, HostSpec
from providers.testing.conformance import ProviderConformance, wait_active
from tests.fakes.aws.fargate import PRIVATE_STEPS, FargateKit, PrivateVpc, private_vpc
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    REGION,
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
)
from tests.providers.test_fargate import fargate_spec, make_provider

ACCOUNT = "123456789012"  # moto's
ECR_IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/python:3.12-slim"
BUCKET, KEY = "engines", "v1/tunnel-core.pyz"
ENGINE_URL = f"s3://{BUCKET}/{KEY}"
#: what the provider-level tests upload: only its hash is compared
ENGINE = b"tunnel-core.pyz, as far as create can tell"


@pytest.fixture
def cloud(moto: str) -> Iterator[FargateKit]:
    handle = FargateKit(moto)
    yield handle
    handle.proxy.stop()


@pytest.fixture
def provider(cloud: FargateKit) -> FargateProvider:
    return make_provider(cloud.endpoint, [])


@pytest.fixture
def vpc(cloud: FargateKit) -> PrivateVpc:
    return private_vpc(cloud.ec2)


def upload(cloud: FargateKit, body: bytes = ENGINE) -> str:
    """The engine object in moto's S3; its SHA-256."""
    buckets = {b["Name"] for b in cloud.s3.list_buckets()["Buckets"]}
    if BUCKET not in buckets:
        cloud.s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
    cloud.s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    return hashlib.sha256(body).hexdigest()


def private_extra(vpc: PrivateVpc, **more: str) -> dict[str, str]:
    return {
        "count": "1",
        "load_balancer": "nlb",
        "private_subnets": vpc.private_subnets,
        "no_public_ip": "1",
        "create_endpoints": "1",
        **more,
    }


def private_spec(
    provider: FargateProvider,
    vpc: PrivateVpc,
    sha: str,
    extra: dict[str, str] | None = None,
    image: str = ECR_IMAGE,
) -> HostSpec:
    spec = fargate_spec(provider, extra if extra is not None else private_extra(vpc))
    server = replace(spec.server, release_url=ENGINE_URL, artifact_sha256=sha)
    return replace(spec, image=image, server=server)


def _doc(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _policy(cloud: FargateKit, role: str) -> dict[str, Any]:
    (name,) = cloud.iam.list_role_policies(RoleName=role)["PolicyNames"]
    return dict(_doc(cloud.iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]))


def _sources(cloud: FargateKit, group: str) -> dict[tuple[int, int], list[str]]:
    (found,) = cloud.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    return {
        (p["FromPort"], p["ToPort"]): sorted(
            [r["CidrIp"] for r in p.get("IpRanges", [])]
            + [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
        )
        for p in found["IpPermissions"]
    }


def _endpoints(cloud: FargateKit) -> list[dict[str, Any]]:
    return [
        e
        for e in cloud.ec2.describe_vpc_endpoints()["VpcEndpoints"]
        if e["State"].lower() != "deleted"
    ]


def _service(cloud: FargateKit) -> dict[str, Any]:
    (cluster,) = cloud.ecs.list_clusters()["clusterArns"]
    (service,) = cloud.ecs.describe_services(
        cluster=cluster, services=cloud.ecs.list_services(cluster=cluster)["serviceArns"]
    )["services"]
    return dict(service)


# -- what create asks for -------------------------------------------------------------------


def test_private_tasks_behind_an_internet_facing_nlb_with_endpoints_and_a_task_role(
    provider: FargateProvider, cloud: FargateKit, vpc: PrivateVpc
) -> None:
    sha = upload(cloud)
    before = cloud.resources()
    spec = private_spec(provider, vpc, sha)
    host = wait_active(provider, kit.create_host(provider, spec))

    service = _service(cloud)
    network = service["networkConfiguration"]["awsvpcConfiguration"]
    assert network["assignPublicIp"] == "DISABLED"
    assert sorted(network["subnets"]) == sorted(vpc.private.values())
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    assert lb["Scheme"] == "internet-facing"
    lb_subnets = {z["SubnetId"] for z in lb["AvailabilityZones"]}
    assert lb_subnets == set(vpc.public.values()), "one public subnet per zone, main table too"
    listeners = cloud.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert sorted(li["Port"] for li in listeners) == [8080, 8123]
    groups = {g["Port"]: g for g in cloud.elb.describe_target_groups()["TargetGroups"]}
    assert groups[8123]["HealthCheckPath"] == ec2_lb.LIVE_PATH == "/healthz"
    assert groups[8123]["HealthCheckProtocol"] == "HTTPS"
    assert groups[8080]["HealthCheckPath"] == ec2_lb.HEALTH_PATH
    assert {g["TargetType"] for g in groups.values()} == {"ip"}
    assert sorted(b["containerPort"] for b in service["loadBalancers"]) == [8080, 8123]

    (task_group,) = network["securityGroups"]
    (lb_group,) = lb["SecurityGroups"]
    assert _sources(cloud, task_group) == {(8080, 8080): [lb_group], (8123, 8123): [lb_group]}
    assert _sources(cloud, lb_group)[(8123, 8123)] == ["0.0.0.0/0"]

    definition = cloud.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])[
        "taskDefinition"
    ]
    (container,) = definition["containerDefinitions"]
    assert container["image"] == ECR_IMAGE
    assert container["command"][-2:] == [ENGINE_URL, sha]
    assert {e["name"]: e["value"] for e in container["environment"]}["AWS_REGION"] == REGION
    task_role = definition["taskRoleArn"].rsplit("/", 1)[-1]
    assert task_role == fargate.Names(spec.host_id).task_role
    tags = {t["Key"]: t["Value"] for t in cloud.iam.get_role(RoleName=task_role)["Role"]["Tags"]}
    assert tags[HOST_ID_TAG] == spec.host_id
    assert _policy(cloud, task_role) == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/{KEY}",
            }
        ],
    }
    execution = _policy(cloud, definition["executionRoleArn"].rsplit("/", 1)[-1])
    pulls = [s for s in execution["Statement"] if '"ecr:' in json.dumps(s["Action"])]
    assert pulls == [
        {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/python",
        },
    ]

    endpoints = {
        e["ServiceName"].removeprefix(f"com.amazonaws.{REGION}."): e for e in _endpoints(cloud)
    }
    assert sorted(endpoints) == ["ecr.api", "ecr.dkr", "logs", "s3", "secretsmanager"]
    for endpoint in endpoints.values():
        tags = {t["Key"]: t["Value"] for t in endpoint["Tags"]}
        assert (tags[HOST_ID_TAG], TAG_KEY in tags) == (spec.host_id, True)
        assert endpoint["VpcId"] == vpc.vpc_id
    assert endpoints["s3"]["VpcEndpointType"] == "Gateway"
    assert endpoints["s3"]["RouteTableIds"] == [vpc.private_table]
    interface = [endpoints[s] for s in fargate_network.INTERFACE_SERVICES]
    assert {e["VpcEndpointType"] for e in interface} == {"Interface"}
    assert all(e["PrivateDnsEnabled"] for e in interface)
    assert all(sorted(e["SubnetIds"]) == sorted(vpc.private.values()) for e in interface)
    ((endpoint_group,),) = {tuple(g["GroupId"] for g in e["Groups"]) for e in interface}
    assert _sources(cloud, endpoint_group) == {(443, 443): [task_group]}

    assert host.ip == lb["DNSName"], "clients reach the control port through the NLB"
    assert host.additional["control"] == "load_balancer"
    assert provider.list()[0].ip == lb["DNSName"]
    removed = kit.delete_host(provider, spec.host_id)
    assert sum(r.startswith("VPC endpoint") for r in removed) == 5
    assert sum(r.startswith("role ") for r in removed) == 2
    assert cloud.resources() == before


def test_an_endpoint_the_vpc_has_is_skipped_and_never_touched(
    provider: FargateProvider, cloud: FargateKit, vpc: PrivateVpc
) -> None:
    sha = upload(cloud)
    theirs = cloud.ec2.create_vpc_endpoint(
        VpcId=vpc.vpc_id,
        ServiceName=f"com.amazonaws.{REGION}.secretsmanager",
        VpcEndpointType="Interface",
        SubnetIds=list(vpc.private.values()),
        PrivateDnsEnabled=True,
    )["VpcEndpoint"]["VpcEndpointId"]
    gateway = cloud.ec2.create_vpc_endpoint(
        VpcId=vpc.vpc_id,
        ServiceName=f"com.amazonaws.{REGION}.s3",
        VpcEndpointType="Gateway",
        RouteTableIds=[vpc.private_table],
    )["VpcEndpoint"]["VpcEndpointId"]
    before = cloud.resources()
    spec = private_spec(provider, vpc, sha)
    kit.create_host(provider, spec)
    ours = [e for e in _endpoints(cloud) if e["VpcEndpointId"] not in (theirs, gateway)]
    assert sorted(e["ServiceName"].rsplit(".", 2)[-2:][-1] for e in ours) == ["api", "dkr", "logs"]
    kit.delete_host(provider, spec.host_id)
    assert cloud.resources() == before
    assert {e["VpcEndpointId"] for e in _endpoints(cloud)} == {theirs, gateway}


def test_a_nat_route_lets_the_tasks_pull_the_public_image(
    provider: FargateProvider, cloud: FargateKit
) -> None:
    vpc = private_vpc(cloud.ec2, nat=True)
    spec = private_spec(
        provider, vpc, upload(cloud), private_extra(vpc, create_endpoints=""), image=""
    )
    spec = replace(spec, image="")
    kit.create_host(provider, spec)
    (definition,) = cloud.ecs.list_task_definitions()["taskDefinitionArns"]
    found = cloud.ecs.describe_task_definition(taskDefinition=definition)["taskDefinition"]
    assert found["containerDefinitions"][0]["image"] == fargate.IMAGE
    execution = _policy(cloud, found["executionRoleArn"].rsplit("/", 1)[-1])
    assert '"ecr:' not in json.dumps(execution), "no ECR permissions for a public image"
    assert _endpoints(cloud) == [], "no --create-endpoints"
    kit.delete_host(provider, spec.host_id)


# -- refused before anything is made ---------------------------------------------------------


def _refused(provider: FargateProvider, cloud: FargateKit, spec: HostSpec) -> InvalidSpec:
    before = cloud.resources()
    with pytest.raises(InvalidSpec) as refused:
        kit.create_host(provider, spec)
    assert cloud.resources() == before
    assert cloud.iam.list_roles()["Roles"] == []
    return refused.value


def test_a_zone_without_a_public_subnet_is_refused(
    provider: FargateProvider, cloud: FargateKit, vpc: PrivateVpc
) -> None:
    lonely = cloud.ec2.create_subnet(
        VpcId=vpc.vpc_id, CidrBlock="10.20.200.0/24", AvailabilityZone=f"{REGION}c"
    )["Subnet"]["SubnetId"]
    cloud.ec2.associate_route_table(RouteTableId=vpc.private_table, SubnetId=lonely)
    extra = private_extra(vpc, private_subnets=f"{vpc.private_subnets},{lonely}")
    error = _refused(provider, cloud, private_spec(provider, vpc, upload(cloud), extra))
    assert f"{REGION}c" in error.message and "public subnet" in error.message


def test_private_subnets_of_two_vpcs_are_refused(
    provider: FargateProvider, cloud: FargateKit, vpc: PrivateVpc
) -> None:
    other = cloud.ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])[
        "Subnets"
    ][0]["SubnetId"]
    extra = private_extra(vpc, private_subnets=f"{vpc.private_subnets},{other}")
    error = _refused(provider, cloud, private_spec(provider, vpc, upload(cloud), extra))
    assert "2 VPCs" in error.message


def test_an_engine_object_with_another_hash_is_refused(
    provider: FargateProvider, cloud: FargateKit, vpc: PrivateVpc
) -> None:
    upload(cloud, b"something else")
    error = _refused(
        provider, cloud, private_spec(provider, vpc, hashlib.sha256(ENGINE).hexdigest())
    )
    assert "is not this inletsctl's tunnel-core.pyz" in error.message
    assert f"aws s3 cp tunnel-core.pyz {ENGINE_URL}" in error.hint


def test_a_missing_engine_object_is_refused(
    provider: FargateProvider, cloud: FargateKit, vpc: PrivateVpc
) -> None:
    error = _refused(provider, cloud, private_spec(provider, vpc, "0" * 64))
    assert ENGINE_URL in error.message and "aws s3 cp" in error.hint


def _local_pyz() -> bytes:
    """This checkout's pyz, built now: what an ``inletsctl`` started next pins (the
    engine's sources may change while the tests run, so it is never cached)."""
    return release.local_pyz().read_bytes()


# -- the kit's whole fault matrix for what the private variant adds --------------------------


@pytest.mark.kit  # `make test-kit`
class TestPrivateFargateConformance(ProviderConformance):
    """The kit's suite on a private host (NLB control listener, endpoints, task role):
    each step the private variant adds is a fault point; the shared steps are
    ``TestFargateConformance``'s."""

    #: every step the variant adds, but of the four interface endpoints (one loop) only
    #: the first and the last: the kit's time is bounded (each step is 6 cases)
    failure_points = tuple(
        s for s in PRIVATE_STEPS if s not in ("CreateVpcEndpoint.ecr.dkr", "CreateVpcEndpoint.logs")
    )
    vpc: ClassVar[PrivateVpc]
    sha: ClassVar[str]

    @pytest.fixture(autouse=True)
    def network(self, cloud: FargateKit) -> None:
        """The VPC, and an engine object whose hash the provider's specs pin."""
        self.vpc = private_vpc(cloud.ec2)  # type: ignore[misc]
        self.sha = upload(cloud)  # type: ignore[misc]

    @pytest.fixture
    def provider(self, cloud: FargateKit, monkeypatch: pytest.MonkeyPatch) -> FargateProvider:
        """No SDK retries: a 5xx at a step fails the create, whose undo is then checked
        (that a retried step goes through is ``TestFargateConformance``'s case), and
        no retry's backoff is waited for."""
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        return make_provider(cloud.endpoint, [])

    def make_spec(self, provider: Any) -> HostSpec:
        return private_spec(provider, self.vpc, self.sha)

    @property  # type: ignore[override]
    def cli_create_args(self) -> tuple[str, ...]:
        return (
            "--tcp", "--ports", "8080", "--count", "1", "--load-balancer", "nlb",
            "--no-public-ip", "--private-subnets", self.vpc.private_subnets,
            "--create-endpoints", "--image", ECR_IMAGE, "--release-url", ENGINE_URL,
            "--wait", "none",
        )  # fmt: skip

    @pytest.fixture
    def fake(self, cloud: FargateKit) -> FargateKit:
        return cloud

    @pytest.fixture
    def cli_env(self, cloud: FargateKit) -> dict[str, str]:
        """The CLI pins this checkout's pyz: that is the object then."""
        upload(cloud, _local_pyz())
        return {
            "AWS_ENDPOINT_URL": cloud.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
        }


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        (ECR_IMAGE, f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/python"),
        (f"{ACCOUNT}.dkr.ecr.us-east-2.amazonaws.com/team/py", "repository/team/py"),
        (f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/py@sha256:{'a' * 64}", "repository/py"),
        ("public.ecr.aws/docker/library/python:3.12-slim", None),
        (f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com.evil.example/python", None),
    ],
)
def test_the_ecr_repository_of_an_image(image: str, repository: str | None) -> None:
    found = fargate_network.repository(image)
    if repository is None:
        assert found is None
    else:
        assert found is not None and found.arn.endswith(repository)


def test_ecs_takes_at_most_five_target_groups_a_service() -> None:
    routes = [ec2_lb.Route(p, p, "TCP") for p in range(8000, 8005)]
    fargate_network.check_target_groups(routes)
    with pytest.raises(InvalidSpec) as refused:
        fargate_network.check_target_groups([*routes, ec2_lb.Route(9000, 9000, "TCP")])
    assert "at most 5" in refused.value.message
