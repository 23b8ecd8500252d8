"""``--provider ecs-fargate`` through the whole CLI against moto, as a shell script runs it."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.aws.fargate import FargateKit
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
)
from tests.providers.test_ec2_cli import NO_PROBE, credentials, inletsctl


@pytest.fixture
def cloud(moto: str) -> Iterator[FargateKit]:
    handle = FargateKit(moto)
    yield handle
    handle.proxy.stop()


def test_create_in_an_existing_cluster_get_list_and_delete(
    cloud: FargateKit, tmp_path: Path
) -> None:
    shared = cloud.ecs.create_cluster(clusterName="shared")["cluster"]["clusterArn"]
    before = cloud.resources()
    created = inletsctl(
        tmp_path, "create", "--provider", "ecs-fargate", "--tcp", "--ports", "8080",
        "--count", "3", "--load-balancer", "nlb", "--cluster", "shared", "--poll", "0s",
        *NO_PROBE, "-o", "json", *credentials(cloud.endpoint),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert doc["status"] == "active"
    assert doc["provider_id"].startswith("arn:aws:ecs:eu-west-1:")
    (service,) = cloud.ecs.describe_services(
        cluster=shared, services=cloud.ecs.list_services(cluster=shared)["serviceArns"]
    )["services"]
    assert doc["provider_id"] == service["serviceArn"], "the tasks run in --cluster"
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    assert doc["load_balancer"] == {"type": "nlb", "dns_name": lb["DNSName"]}
    ips = [m["ip"] for m in doc["members"]]
    assert len(ips) == 3 and all(ips)
    argv = shlex.split(doc["client_command"])
    urls = [argv[n + 1] for n, arg in enumerate(argv) if arg == "--url"]
    assert urls == [f"wss://{ip}:8123" for ip in ips], "one --url per task"

    listed = inletsctl(tmp_path, "list", "-o", "json")
    assert [h["id"] for h in json.loads(listed.stdout)] == [doc["id"]], "one host"
    shown = inletsctl(tmp_path, "get", doc["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"Load balancer: nlb {lb['DNSName']}" in shown.stdout

    deleted = inletsctl(
        tmp_path, "delete", "--id", doc["id"], "-o", "json", *credentials(cloud.endpoint)
    )
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["status"] == "deleted"
    assert cloud.resources() == before, "everything but the user's cluster is gone"
    assert shared in before


def test_fargate_needs_a_load_balancer_and_its_one_size(cloud: FargateKit, tmp_path: Path) -> None:
    before = cloud.resources()
    bare = inletsctl(
        tmp_path, "create", "-p", "ecs-fargate", "--tcp", "--ports", "8080", *NO_PROBE,
        *credentials(cloud.endpoint),
    )  # fmt: skip
    assert bare.returncode != 0
    assert "--load-balancer" in bare.stderr and "Traceback" not in bare.stderr
    big = inletsctl(
        tmp_path, "create", "-p", "ecs-fargate", "--tcp", "--ports", "8080", "--plan", "1024/2048",
        "--load-balancer", "nlb", *NO_PROBE, *credentials(cloud.endpoint),
    )  # fmt: skip
    assert big.returncode == 2
    assert "256/512" in big.stderr
    assert cloud.resources() == before
