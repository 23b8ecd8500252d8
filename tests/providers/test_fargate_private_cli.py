"""``create --provider ecs-fargate --no-public-ip --private-subnets ...`` through the CLI.

The printed client command must reach the control port through the NLB (the tasks
have no public IP), and every refusal is a usage error (exit 2) before anything is made.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.aws.fargate import FargateKit, PrivateVpc, private_vpc
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
)
from tests.providers.test_ec2_cli import NO_PROBE, credentials, inletsctl
from tests.providers.test_fargate_private import ECR_IMAGE, ENGINE_URL, _local_pyz, upload

TCP = ("--tcp", "--ports", "8080", "--poll", "0s", *NO_PROBE)


@pytest.fixture
def cloud(moto: str) -> Iterator[FargateKit]:
    handle = FargateKit(moto)
    yield handle
    handle.proxy.stop()


@pytest.fixture
def vpc(cloud: FargateKit) -> PrivateVpc:
    return private_vpc(cloud.ec2)


def private_args(vpc: PrivateVpc) -> tuple[str, ...]:
    return (
        "create", "-p", "ecs-fargate", *TCP, "--count", "1", "--load-balancer", "nlb",
        "--no-public-ip", "--private-subnets", vpc.private_subnets, "--create-endpoints",
        "--image", ECR_IMAGE, "--release-url", ENGINE_URL,
    )  # fmt: skip


def test_the_client_command_connects_through_the_nlb_and_delete_removes_everything(
    cloud: FargateKit, vpc: PrivateVpc, tmp_path: Path
) -> None:
    upload(cloud, _local_pyz())  # what this checkout's inletsctl pins
    before = cloud.resources()
    created = inletsctl(tmp_path, *private_args(vpc), "-o", "json", *credentials(cloud.endpoint))
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    assert doc["ip"] == lb["DNSName"]
    argv = shlex.split(doc["client_command"])
    urls = [argv[n + 1] for n, arg in enumerate(argv) if arg == "--url"]
    assert urls == [f"wss://{lb['DNSName']}:8123"], "one --url: the NLB's control listener"
    assert doc["url"] == urls[0]
    (member,) = doc["members"]
    # moto gives an ECS task's interface a random 10.x address, not one of its subnet's
    assert member["ip"].startswith("10."), "the task's private address, for `get`"
    deleted = inletsctl(tmp_path, "delete", "--id", doc["id"], *credentials(cloud.endpoint))
    assert deleted.returncode == 0, deleted.stderr
    assert cloud.resources() == before


def test_each_refusal_is_a_usage_error_before_anything_is_made(
    cloud: FargateKit, vpc: PrivateVpc, tmp_path: Path
) -> None:
    upload(cloud, b"not the engine this inletsctl pins")
    lonely = cloud.ec2.create_subnet(
        VpcId=vpc.vpc_id, CidrBlock="10.20.200.0/24", AvailabilityZone="eu-west-1c"
    )["Subnet"]["SubnetId"]
    cloud.ec2.associate_route_table(RouteTableId=vpc.private_table, SubnetId=lonely)
    before = cloud.resources()
    private = private_args(vpc)
    subnets = private.index("--private-subnets") + 1
    fargate = ("create", "-p", "ecs-fargate", *TCP)
    cases: list[tuple[tuple[str, ...], str]] = [
        (("create", "-p", "aws", *TCP, "--private-subnets", "subnet-1"), "only for --provider"),
        (("create", "-p", "aws", *TCP, "--no-public-ip"), "only for --provider ecs-fargate"),
        (("create", "-p", "aws", *TCP, "--release-url", ENGINE_URL), "--provider ecs-fargate"),
        (
            (*fargate, "--load-balancer", "nlb", "--count", "1", "--private-subnets",
             vpc.private_subnets),
            "Add --no-public-ip",
        ),
        (
            (*fargate, "--load-balancer", "nlb", "--count", "1", "--create-endpoints"),
            "Add --no-public-ip",
        ),
        (
            ("create", "-p", "ecs-fargate", "--http", "--poll", "0s", *NO_PROBE,
             "--load-balancer", "alb", "--count", "1", "--no-public-ip"),
            "--load-balancer nlb",
        ),
        ((*fargate, "--load-balancer", "nlb", "--count", "2", "--no-public-ip"), "--count 1"),
        (
            tuple(a for a in private if a not in ("--image", ECR_IMAGE)),
            "python:3.12-slim",
        ),
        (
            (*private[:subnets], f"{vpc.private_subnets},{lonely}", *private[subnets + 1 :]),
            "eu-west-1c",
        ),
        (private, f"aws s3 cp tunnel-core.pyz {ENGINE_URL}"),
    ]  # fmt: skip
    for args, said in cases:
        refused = inletsctl(tmp_path, *args, *credentials(cloud.endpoint))
        assert refused.returncode == 2, (args, refused.stderr)
        assert said in " ".join(refused.stderr.split()), (args, refused.stderr)
        assert "Traceback" not in refused.stderr
    assert cloud.resources() == before
    assert cloud.iam.list_roles()["Roles"] == []
