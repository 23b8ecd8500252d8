"""`create --region a,b,c` as a script runs it, against the DigitalOcean and Hetzner fakes
and moto behind a fault proxy.

Only a capacity or quota answer moves on to the next region, and only once the refused
attempt left nothing: each case ends by asking the fake (or moto) what exists, and in
which region.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inletsctl.store import Store
from providers.testing.faults import Fault, FaultPlan, FaultProxy
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    STEPS,
    aws_env_fixture,
    live_resources,
    moto_fixture,
    moto_url_fixture,
    plain_client,
)
from tests.fakes.digitalocean import FakeDigitalOcean
from tests.fakes.hetzner import FakeHetzner

#: The fakes and moto hand out public-looking IPs: a readiness probe must never aim at one.
NO_PROBE = ("--wait", "running", "--poll", "0s")

#: provider -> (fake, token and endpoint variables, two regions, a capacity answer there)
CLOUDS = {
    "digitalocean": (
        FakeDigitalOcean,
        "DIGITALOCEAN_ACCESS_TOKEN",
        "DIGITALOCEAN_END_POINT",
        ("lon1", "fra1"),
        (422, "unprocessable_entity", "Region is not available"),
    ),
    "hetzner": (
        FakeHetzner,
        "HCLOUD_TOKEN",
        "HCLOUD_ENDPOINT",
        ("hel1", "fsn1"),
        (412, "resource_unavailable", "error during placement"),
    ),
}


def inletsctl(state: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "INLETS_ACCESS_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "inletsctl", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        env={**full, "INLETSCTL_STATE_DIR": str(state), "NO_COLOR": "1", **env},
    )


class Cloud:
    def __init__(self, name: str) -> None:
        fake_class, token_env, endpoint_env, self.regions, self.full = CLOUDS[name]
        self.name = name
        self.fake: FakeDigitalOcean | FakeHetzner = fake_class()
        self.fake.start()
        if isinstance(self.fake, FakeHetzner):
            self.fake.running_reads = 0  # the CLI's SDK client waits 1 s between action polls
        self.env = {token_env: self.fake.token, endpoint_env: self.fake.base_url}
        self.field = "region" if name == "digitalocean" else "location"
        self.vms = "/v2/droplets/?" if name == "digitalocean" else "/v1/servers"

    def creates(self) -> list[str]:
        """The region of every create call the provider sent, in order."""
        return [r.body[self.field] for r in self.fake.calls("POST", self.vms)]

    def vm_regions(self) -> list[str]:
        if isinstance(self.fake, FakeDigitalOcean):
            return [d["region"]["slug"] for d in self.fake.droplets.values()]
        assert isinstance(self.fake, FakeHetzner)
        return [s["location"]["name"] for s in self.fake.servers.values()]


@pytest.fixture(params=sorted(CLOUDS))
def cloud(request: pytest.FixtureRequest) -> Iterator[Cloud]:
    made = Cloud(request.param)
    try:
        yield made
    finally:
        made.fake.stop()


def create(
    cloud: Cloud, state: Path, regions: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return inletsctl(
        state, cloud.env, "create", "-p", cloud.name, "--tcp", "--ports", "8080",
        "--region", regions, *NO_PROBE, *extra,
    )  # fmt: skip


def test_a_full_region_is_cleaned_up_and_the_next_one_wins(cloud: Cloud, tmp_path: Path) -> None:
    full, free = cloud.regions
    cloud.fake.refusals_in[full] = cloud.full
    made = create(cloud, tmp_path, f"{full},{free}", "-o", "json")
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["region"] == free and doc["status"] == "active"
    [skipped] = doc["skipped_regions"]
    assert skipped["region"] == full and cloud.full[2] in skipped["reason"]
    assert f"Warning: {full}: " in made.stderr and f"trying {free}" in made.stderr

    assert cloud.creates() == [full, free]
    assert cloud.vm_regions() == [free]
    assert len(cloud.fake.resources()) == 2, "the winner's VM and firewall, nothing of the first"
    rows = Store(tmp_path).all(include_deleted=True)
    assert [(r.region, r.status) for r in rows] == [(full, "deleted"), (free, "active")]
    assert rows[1].id == doc["id"]


def test_the_text_summary_says_which_region_won_and_why_not_the_first(tmp_path: Path) -> None:
    cloud = Cloud("digitalocean")
    try:
        message = "creating this/these droplet(s) will exceed your droplet limit"
        cloud.fake.refusals_in["lon1"] = (422, "unprocessable_entity", message)
        made = create(cloud, tmp_path, "lon1,fra1,ams3")
        assert made.returncode == 0, made.stderr
        assert f"Region: fra1\n  not lon1: digitalocean: {message}\n" in made.stdout
        assert cloud.creates() == ["lon1", "fra1"], "ams3 is never needed"
    finally:
        cloud.fake.stop()


def test_when_every_region_is_full_nothing_is_left(cloud: Cloud, tmp_path: Path) -> None:
    for region in cloud.regions:
        cloud.fake.refusals_in[region] = cloud.full
    failed = create(cloud, tmp_path, ",".join(cloud.regions))
    assert failed.returncode == 1
    assert "no region of 2 took the host" in failed.stderr
    assert all(r in failed.stderr for r in cloud.regions) and "Traceback" not in failed.stderr
    assert cloud.creates() == list(cloud.regions)
    assert cloud.fake.resources() == set()
    assert {r.status for r in Store(tmp_path).all(include_deleted=True)} == {"deleted"}


#: answers after which another region would not help, and the words the user then sees
NOT_CAPACITY = {
    "auth": {
        "digitalocean": ((401, "unauthorized", "Unable to authenticate you"), "rejected the token"),
        "hetzner": ((401, "unauthorized", "unable to authenticate"), "rejected the token"),
    },
    "validation": {
        "digitalocean": (
            (422, "unprocessable_entity", "You specified an invalid size for Droplet creation."),
            "invalid size",
        ),
        "hetzner": (
            (422, "invalid_input", "invalid input in field 'server_type'"),
            "invalid_input",
        ),
    },
}


@pytest.mark.parametrize("kind", sorted(NOT_CAPACITY))
def test_an_auth_or_validation_error_in_the_first_region_does_not_try_the_next(
    cloud: Cloud, tmp_path: Path, kind: str
) -> None:
    first, second = cloud.regions
    answer, words = NOT_CAPACITY[kind][cloud.name]
    cloud.fake.refusals_in[first] = answer
    failed = create(cloud, tmp_path, f"{first},{second}")
    assert failed.returncode == 1
    assert words in failed.stderr and "Traceback" not in failed.stderr
    assert cloud.creates() == [first], f"{second} must never be tried"
    assert cloud.fake.resources() == set()
    assert [r.region for r in Store(tmp_path).all(include_deleted=True)] == [first]


@pytest.mark.parametrize("where", ["first", "last"])
def test_an_unknown_region_anywhere_is_a_usage_error_before_any_create(
    cloud: Cloud, tmp_path: Path, where: str
) -> None:
    regions = [*cloud.regions, "mars1"] if where == "last" else ["mars1", *cloud.regions]
    refused = create(cloud, tmp_path, ",".join(regions))
    assert refused.returncode == 2, refused.stderr
    assert "unknown region 'mars1'" in refused.stderr
    assert cloud.regions[0] in refused.stderr, "the hint lists the known ones"
    assert [r for r in cloud.fake.requests if r.method != "GET"] == [], "nothing paid for"
    assert Store(tmp_path).all(include_deleted=True) == []


@pytest.mark.parametrize(
    ("regions", "message"),
    [("local,mars", "unknown region 'mars'"), ("local,local", "'local' is given twice")],
)
def test_region_lists_are_checked_for_local_too(tmp_path: Path, regions: str, message: str) -> None:
    refused = inletsctl(tmp_path, {}, "create", "--tcp", "--ports", "8080", "--region", regions)
    assert refused.returncode == 2 and message in refused.stderr
    assert Store(tmp_path).all(include_deleted=True) == []


# -- EC2: moto behind a fault proxy --------------------------------------------------------

FIRST, SECOND = "eu-west-1", "eu-west-2"


def ec2_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>5b3c9a1e-0000-4000-8000-000000000000</RequestID></Response>"
    ).encode()


def ec2_create(proxy_url: str, state: Path) -> subprocess.CompletedProcess[str]:
    # one attempt per call: botocore would retry a 5xx capacity answer, and win in FIRST
    return inletsctl(
        state, {"AWS_MAX_ATTEMPTS": "1"}, "create", "-p", "aws", "--tcp", "--ports", "8080",
        "--region", f"{FIRST},{SECOND}", *NO_PROBE, "-o", "json",
        "--endpoint-url", proxy_url,
        "--access-token", CREDENTIALS["aws_access_key_id"],
        "--secret-key", CREDENTIALS["aws_secret_access_key"],
    )  # fmt: skip


def test_ec2_insufficient_capacity_moves_to_the_next_region_and_leaves_no_group(
    moto: str, tmp_path: Path
) -> None:
    plan = FaultPlan(STEPS)
    capacity = ec2_error(
        "InsufficientInstanceCapacity",
        "We currently do not have sufficient t3.nano capacity in the Availability Zone you "
        "requested (eu-west-1a).",
    )
    proxy = FaultProxy(moto, plan, lambda: (500, {"Content-Type": "text/xml"}, capacity))
    try:
        plan.arm("RunInstances", Fault.ERROR)
        made = ec2_create(proxy.url, tmp_path)
    finally:
        proxy.stop()
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    assert doc["region"] == SECOND
    assert doc["skipped_regions"][0]["region"] == FIRST
    assert "InsufficientInstanceCapacity" in doc["skipped_regions"][0]["reason"]
    assert live_resources(plain_client(moto, FIRST)) == set(), "its security group went too"
    second = live_resources(plain_client(moto, SECOND))
    assert doc["provider_id"] in second


def test_ec2_a_permission_error_in_the_first_region_stops_there(moto: str, tmp_path: Path) -> None:
    plan = FaultPlan(STEPS)
    denied = ec2_error("UnauthorizedOperation", "You are not authorized to perform this operation.")
    proxy = FaultProxy(moto, plan, lambda: (403, {"Content-Type": "text/xml"}, denied))
    try:
        plan.arm("RunInstances", Fault.ERROR)
        failed = ec2_create(proxy.url, tmp_path)
    finally:
        proxy.stop()
    assert failed.returncode == 1
    assert "UnauthorizedOperation" in failed.stderr and "ec2:RunInstances" in failed.stderr
    assert live_resources(plain_client(moto, FIRST)) == set()
    assert live_resources(plain_client(moto, SECOND)) == set(), f"{SECOND} was never tried"
