"""The whole CLI path against moto, as a shell script runs it: create -o json, delete --id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from providers.models import TAG_KEY, TAG_VALUE
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
    plain_client,
)

#: moto hands out public-looking IPs: a readiness probe must never aim at one.
NO_PROBE = ("--wait", "running")


def inletsctl(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "INLETSCTL_STATE_DIR": str(state), "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def credentials(url: str) -> list[str]:
    return [
        "--endpoint-url",
        url,
        "--access-token",
        CREDENTIALS["aws_access_key_id"],
        "--secret-key",
        CREDENTIALS["aws_secret_access_key"],
    ]


def ours(url: str) -> tuple[list[Any], list[Any]]:
    ec2 = plain_client(url)
    tagged = [{"Name": f"tag:{TAG_KEY}", "Values": [TAG_VALUE]}]
    instances = [
        i
        for r in ec2.describe_instances(Filters=tagged)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    return instances, ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]


def test_create_then_delete_by_id_leaves_nothing(moto: str, tmp_path: Path) -> None:
    created = inletsctl(
        tmp_path,
        "create",
        "--provider",
        "aws",
        "--tcp",
        "--ports",
        "8080",
        "--poll",
        "0s",
        *NO_PROBE,
        "-o",
        "json",
        *credentials(moto),
    )
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    assert (doc["provider"], doc["status"], doc["region"]) == ("aws", "active", "eu-west-1")
    assert doc["ready"] is False and "tunnel:" not in created.stderr, "never probed"
    instances, groups = ours(moto)
    assert [i["InstanceId"] for i in instances] == [doc["provider_id"]]
    assert instances[0]["PublicIpAddress"] == doc["ip"]
    assert len(groups) == 1
    assert CREDENTIALS["aws_secret_access_key"] not in created.stderr

    logs = inletsctl(tmp_path, "logs", doc["id"], "-o", "json", *credentials(moto))
    assert logs.returncode == 0, logs.stderr
    assert json.loads(logs.stdout)["id"] == doc["id"], "GetConsoleOutput, through the CLI"

    deleted = inletsctl(tmp_path, "delete", "--id", doc["id"], "-o", "json", *credentials(moto))
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["status"] == "deleted"
    assert ours(moto) == ([], [])


def test_list_remote_and_delete_by_ip_of_a_host_the_state_never_saw(
    moto: str, tmp_path: Path
) -> None:
    created = inletsctl(
        tmp_path / "a", "create", "-p", "aws", "--http", "--poll", "0s", *NO_PROBE, "-o", "json",
        *credentials(moto),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    ip = json.loads(created.stdout)["ip"]
    listed = inletsctl(
        tmp_path / "b", "list", "--remote", "-p", "aws", "-o", "json", *credentials(moto)
    )
    assert listed.returncode == 0, listed.stderr
    assert [h["ip"] for h in json.loads(listed.stdout)] == [ip]
    deleted = inletsctl(
        tmp_path / "b", "delete", "--ip", ip, "--provider", "aws", *credentials(moto)
    )
    assert deleted.returncode == 0, deleted.stderr
    assert ours(moto) == ([], [])


def test_refused_plan_is_one_line_with_a_hint_and_leaves_nothing(moto: str, tmp_path: Path) -> None:
    failed = inletsctl(
        tmp_path, "create", "-p", "aws", "--tcp", "--ports", "8080", "--plan", "t9.huge",
        "--poll", "0s", *NO_PROBE, *credentials(moto),
    )  # fmt: skip
    assert failed.returncode == 1
    assert "InvalidInstanceType" in failed.stderr
    assert "--plan" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert ours(moto) == ([], [])
    listed = inletsctl(tmp_path, "list", "--all", "-o", "json")
    assert [h["status"] for h in json.loads(listed.stdout)] == ["deleted"]


def test_placement_flags_reach_the_instance(moto: str, tmp_path: Path) -> None:
    created = inletsctl(
        tmp_path,
        "create",
        "--provider",
        "aws",
        "--tcp",
        "--ports",
        "8080",
        "--zone",
        "eu-west-1b",
        "--aws-key-name",
        "my-key",
        "--poll",
        "0s",
        *NO_PROBE,
        "-o",
        "json",
        *credentials(moto),
    )
    assert created.returncode == 0, created.stderr
    doc = json.loads(created.stdout)
    instances, _ = ours(moto)
    assert [i["InstanceId"] for i in instances] == [doc["provider_id"]]
    assert instances[0]["Placement"]["AvailabilityZone"] == "eu-west-1b"
    assert instances[0]["KeyName"] == "my-key"
