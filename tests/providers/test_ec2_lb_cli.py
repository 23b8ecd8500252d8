"""A load-balanced group through the whole CLI against moto, as a shell script runs it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    aws_env_fixture,
    live_resources,
    moto_fixture,
    moto_url_fixture,
    plain_client,
)
from tests.providers.test_ec2_cli import NO_PROBE, credentials, inletsctl


def test_create_get_list_and_delete_a_group(moto: str, tmp_path: Path) -> None:
    created = inletsctl(
        tmp_path, "create", "--provider", "aws", "--tcp", "--ports", "8080,2222",
        "--count", "3", "--load-balancer", "nlb", "--poll", "0s", *NO_PROBE, "-o", "json",
        *credentials(moto),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert doc["status"] == "active"
    assert doc["provider_id"].startswith("arn:aws:elasticloadbalancing:eu-west-1:")
    (lb,) = plain_client(moto, service="elbv2").describe_load_balancers()["LoadBalancers"]
    assert doc["load_balancer"] == {"type": "nlb", "dns_name": lb["DNSName"]}
    ips = [m["ip"] for m in doc["members"]]
    assert len(ips) == 3 and len({m["zone"] for m in doc["members"]}) >= 2

    argv = shlex.split(doc["client_command"])
    urls = [argv[n + 1] for n, arg in enumerate(argv) if arg == "--url"]
    assert urls == [f"wss://{ip}:8123" for ip in ips], "one --url per exit server"
    assert argv.count("--tls-fingerprint") == 1, "one certificate for all"

    listed = inletsctl(tmp_path, "list", "-o", "json")
    assert [h["id"] for h in json.loads(listed.stdout)] == [doc["id"]], "one host"
    remote = inletsctl(tmp_path, "list", "--remote", "-p", "aws", "-o", "json", *credentials(moto))
    assert remote.returncode == 0, remote.stderr
    assert [h["id"] for h in json.loads(remote.stdout)] == [doc["provider_id"]]

    shown = inletsctl(tmp_path, "get", doc["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"Load balancer: nlb {lb['DNSName']}" in shown.stdout
    assert all(ip in shown.stdout for ip in ips)
    assert f"Public TCP ports: {lb['DNSName']}:8080, {lb['DNSName']}:2222" in shown.stdout

    deleted = inletsctl(tmp_path, "delete", "--id", doc["id"], "-o", "json", *credentials(moto))
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["status"] == "deleted"
    assert live_resources(plain_client(moto)) == set()


def test_alb_public_url_is_the_load_balancers_port_80(moto: str, tmp_path: Path) -> None:
    created = inletsctl(
        tmp_path, "create", "-p", "aws", "--http", "--load-balancer", "alb", "--poll", "0s",
        *NO_PROBE, "-o", "json", *credentials(moto),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert len(doc["members"]) == 2, "two by default"
    assert doc["public_url"] == f"http://{doc['load_balancer']['dns_name']}"
    deleted = inletsctl(tmp_path, "delete", "--id", doc["id"], *credentials(moto))
    assert deleted.returncode == 0, deleted.stderr
    assert live_resources(plain_client(moto)) == set()


def test_group_options_are_refused_before_anything_is_made(moto: str, tmp_path: Path) -> None:
    local = inletsctl(tmp_path, "create", "--tcp", "--ports", "8080", "--count", "2")
    assert local.returncode == 2
    assert "only for --provider aws" in local.stderr
    bare = inletsctl(tmp_path, "create", "-p", "aws", "--tcp", "--count", "2", *credentials(moto))
    assert bare.returncode == 2
    assert "--load-balancer" in bare.stderr
    alb_tcp = inletsctl(
        tmp_path, "create", "-p", "aws", "--tcp", "--ports", "8080", "--load-balancer", "alb",
        *NO_PROBE, *credentials(moto),
    )  # fmt: skip
    assert alb_tcp.returncode == 2, alb_tcp.stderr
    assert "ALB forwards HTTP only" in alb_tcp.stderr and "nlb" in alb_tcp.stderr
    assert "Traceback" not in alb_tcp.stderr
    assert live_resources(plain_client(moto)) == set()
