"""EC2 through boto3's real HTTP traffic against a moto server on loopback."""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from providers import kit
from providers.ec2 import EC2Provider
from providers.errors import (
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    NotOurs,
    ProviderAPIError,
    UndoFailed,
    UserDataTooLarge,
)
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE, HostStatus, ProviderConfig, TunnelMode
from providers.testing.conformance import ProviderConformance, wait_active
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    REGION,
    MotoEC2,
    MotoKit,
    aws_env_fixture,
    client_error,
    moto_fixture,
    moto_url_fixture,
    plain_client,
)

MAX_POLLS = 4


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_provider(url: str, sleeps: list[float], **config: Any) -> EC2Provider:
    settings: dict[str, Any] = {
        "region": REGION,
        "access_token": CREDENTIALS["aws_access_key_id"],
        "secret_key": CREDENTIALS["aws_secret_access_key"],
        "endpoint_url": url,
        **config,
    }
    return EC2Provider(
        ProviderConfig(**settings),
        backoff=lambda n: 0.0,
        max_polls=MAX_POLLS,
        sleep=sleeps.append,
    )


@pytest.fixture
def ec2(moto: str, sleeps: list[float]) -> EC2Provider:
    return make_provider(moto, sleeps)


@pytest.fixture
def cloud(moto: str, ec2: EC2Provider) -> MotoEC2:
    return MotoEC2(moto, ec2.client)


class TestEC2Conformance(ProviderConformance):
    failure_points = MotoKit.failure_points

    @pytest.fixture
    def fake(self, moto: str) -> Iterator[MotoKit]:
        kit = MotoKit(moto)
        yield kit
        kit.proxy.stop()

    @pytest.fixture
    def provider(self, fake: MotoKit, sleeps: list[float]) -> EC2Provider:
        return make_provider(fake.endpoint, sleeps)

    @pytest.fixture
    def cli_env(self, fake: MotoKit) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": fake.endpoint,
            "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": REGION,
        }


def spec_for(provider: EC2Provider, **changes: Any):
    server = changes.pop("server", {})
    spec = ProviderConformance().make_spec(provider)
    return replace(spec, server=replace(spec.server, **server), **changes)


def ours(cloud: MotoEC2) -> tuple[list[str], list[str]]:
    """Live instances and security groups carrying our tag, straight from moto."""
    tagged = [{"Name": f"tag:{TAG_KEY}", "Values": [TAG_VALUE]}]
    instances = [
        i["InstanceId"]
        for r in cloud.ec2.describe_instances(Filters=tagged)["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    groups = [
        g["GroupId"] for g in cloud.ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]
    ]
    return instances, groups


# -- what create makes ---------------------------------------------------------------------


def test_user_data_reaches_the_instance_unchanged(ec2: EC2Provider, cloud: MotoEC2) -> None:
    spec = spec_for(ec2, user_data="#cloud-config\nwrite_files: [{path: /x, content: 'é \"q\"'}]\n")
    host = ec2.create(spec)
    attr = cloud.ec2.describe_instance_attribute(InstanceId=host.id, Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]).decode() == spec.user_data


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ({"ports": (8080, 2222)}, [(2222, 2222), (8080, 8080), (8123, 8123)]),
        ({"ports": ()}, [(1024, 65535)]),  # the control port lies inside the allow-list
        ({"mode": TunnelMode.HTTP, "ports": ()}, [(8000, 8000), (8123, 8123)]),
        (
            {"mode": TunnelMode.HTTP, "letsencrypt_domains": ("a.example.com",)},
            [(80, 80), (443, 443), (8123, 8123)],
        ),
    ],
)
def test_security_group_opens_exactly_the_tunnel_ports(
    ec2: EC2Provider, cloud: MotoEC2, server: dict[str, Any], expected: list[tuple[int, int]]
) -> None:
    host = ec2.create(spec_for(ec2, server=server))
    (group,) = cloud.ec2.describe_security_groups(GroupIds=[host.additional["security_group_id"]])[
        "SecurityGroups"
    ]
    rules = sorted((p["FromPort"], p["ToPort"]) for p in group["IpPermissions"])
    assert rules == expected
    for permission in group["IpPermissions"]:
        assert permission["IpProtocol"] == "tcp"
        assert [r["CidrIp"] for r in permission["IpRanges"]] == ["0.0.0.0/0"]
        assert [r["CidrIpv6"] for r in permission["Ipv6Ranges"]] == ["::/0"]


def test_allow_ips_restrict_the_data_ports_but_not_the_control_port(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    allowed = ("203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32")
    host = ec2.create(spec_for(ec2, server={"ports": (8080, 2222), "allow_ips": allowed}))
    (group,) = cloud.ec2.describe_security_groups(GroupIds=[host.additional["security_group_id"]])[
        "SecurityGroups"
    ]
    rules = {
        (p["FromPort"], p["ToPort"]): (
            sorted(r["CidrIp"] for r in p.get("IpRanges", [])),
            [r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])],
        )
        for p in group["IpPermissions"]
    }
    data = (["198.51.100.7/32", "203.0.113.0/24"], ["2001:db8::/32"])
    assert rules == {
        (8123, 8123): (["0.0.0.0/0"], ["::/0"]),
        (2222, 2222): data,
        (8080, 8080): data,
    }


def test_every_resource_is_tagged(ec2: EC2Provider, cloud: MotoEC2) -> None:
    spec = spec_for(ec2)
    host = wait_active(ec2, ec2.create(spec))
    want = {"Name": spec.name, TAG_KEY: TAG_VALUE, HOST_ID_TAG: spec.host_id}

    def tags(items: list[dict[str, Any]], key: str = "Tags") -> list[dict[str, str]]:
        return [{t["Key"]: t["Value"] for t in item.get(key, [])} for item in items]

    (instance,) = [
        i for r in cloud.ec2.describe_instances()["Reservations"] for i in r["Instances"]
    ]
    groups = [
        g
        for g in cloud.ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"] != "default"
    ]
    assert tags([instance]) == [want]
    assert tags(groups) == [want]
    assert tags(cloud.ec2.describe_volumes()["Volumes"]) == [want]
    # moto drops the interface's tags; AWS applies them, so check that we asked.
    (launch,) = cloud.sent("RunInstances")
    tagged = {t["ResourceType"]: t["Tags"] for t in launch["TagSpecifications"]}
    assert tagged.keys() == {"instance", "volume", "network-interface"}
    assert all({t["Key"]: t["Value"] for t in v} == want for v in tagged.values())
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert host.additional["host_id"] == spec.host_id
    assert host.additional["security_group_id"] == groups[0]["GroupId"]


@pytest.mark.parametrize(
    ("plan", "image", "ami", "arch"),
    [
        ("t3.nano", "ubuntu-22.04", "ami-0a2204a0000000002", "x86_64"),  # newest, not look-alike
        ("t4g.nano", "ubuntu-22.04", "ami-0a2204b0000000001", "arm64"),  # Graviton
        ("t3.nano", "ubuntu-24.04", "ami-0a2404a0000000001", "x86_64"),
        ("t4g.nano", "ubuntu-24.04", "ami-0a2404b0000000001", "arm64"),
        ("t3.nano", "ami-0a2204a0000000001", "ami-0a2204a0000000001", "x86_64"),  # override
    ],
)
def test_image_is_canonicals_newest_for_the_architecture(
    ec2: EC2Provider, plan: str, image: str, ami: str, arch: str
) -> None:
    host = ec2.create(spec_for(ec2, plan=plan, image=image))
    assert host.additional["image_id"] == ami
    assert host.additional["instance_type"] == plan


def test_zone_subnet_and_key_name_are_honoured(ec2: EC2Provider, cloud: MotoEC2) -> None:
    cloud.ec2.create_key_pair(KeyName="me")
    subnets = cloud.ec2.describe_subnets()["Subnets"]
    in_b = next(s for s in subnets if s["AvailabilityZone"] == "eu-west-1b")
    in_c = next(s for s in subnets if s["AvailabilityZone"] == "eu-west-1c")

    by_zone = ec2.create(spec_for(ec2, zone="eu-west-1b", extra={"aws_key_name": "me"}))
    by_subnet = ec2.create(spec_for(ec2, extra={"subnet_id": in_c["SubnetId"]}))

    assert (by_zone.additional["zone"], by_zone.additional["subnet_id"]) == (
        "eu-west-1b",
        in_b["SubnetId"],
    )
    assert (by_subnet.additional["zone"], by_subnet.additional["vpc_id"]) == (
        "eu-west-1c",
        in_c["VpcId"],
    )
    described = cloud.ec2.describe_instances(InstanceIds=[by_zone.id])["Reservations"][0]
    assert described["Instances"][0]["KeyName"] == "me"


def test_status_follows_the_instance_state(ec2: EC2Provider) -> None:
    host = ec2.create(spec_for(ec2))
    assert host.status is HostStatus.CREATING  # moto reports "pending" at launch
    active = wait_active(ec2, host)
    assert (active.status, active.region, active.provider) == (HostStatus.ACTIVE, REGION, "ec2")
    ec2.delete(host_id=host.id)
    assert ec2.status(host.id).status is HostStatus.DELETED


# -- delete ---------------------------------------------------------------------------------


def test_group_is_deleted_only_after_the_instance_is_terminated(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    """moto would delete a group still in use; AWS refuses. So check the order we ask in."""
    host = wait_active(ec2, ec2.create(spec_for(ec2)))
    cloud.calls.clear()
    ec2.delete(host_id=host.id)
    ops = cloud.operations()
    terminated_seen = next(
        n
        for n, (name, parsed) in enumerate(cloud.calls)
        if name == "DescribeInstances"
        and n > ops.index("TerminateInstances")
        and all(
            i["State"]["Name"] == "terminated"
            for r in parsed["Reservations"]
            for i in r["Instances"]
        )
    )
    assert ops.index("DeleteSecurityGroup") > terminated_seen
    assert ops.count("DeleteSecurityGroup") == 1
    assert ours(cloud) == ([], [])


def test_group_still_in_use_is_retried_with_backoff(
    ec2: EC2Provider, cloud: MotoEC2, sleeps: list[float]
) -> None:
    host = wait_active(ec2, ec2.create(spec_for(ec2)))
    cloud.fail_at("DeleteSecurityGroup", times=2)
    ec2.delete(host_id=host.id)
    assert sleeps == [0.0, 0.0]
    assert ours(cloud) == ([], [])


def test_waiting_for_termination_is_bounded(
    ec2: EC2Provider, cloud: MotoEC2, sleeps: list[float]
) -> None:
    host = wait_active(ec2, ec2.create(spec_for(ec2)))

    def still_shutting_down(parsed: dict[str, Any], **_: Any) -> None:
        for reservation in parsed["Reservations"]:
            for instance in reservation["Instances"]:
                instance["State"] = {"Code": 32, "Name": "shutting-down"}

    cloud.events.register("after-call.ec2.DescribeInstances", still_shutting_down)
    with pytest.raises(ProviderAPIError, match="not terminated"):
        ec2.delete(host_id=host.id)
    assert len(sleeps) == MAX_POLLS
    assert "DeleteSecurityGroup" not in cloud.operations()
    cloud.events.unregister("after-call.ec2.DescribeInstances", still_shutting_down)
    ec2.delete(host_id=host.id)  # the same command again finishes the job
    assert ours(cloud) == ([], [])


def test_failed_terminate_is_finished_by_a_second_delete(ec2: EC2Provider, cloud: MotoEC2) -> None:
    host = wait_active(ec2, ec2.create(spec_for(ec2)))
    cloud.fail_at("TerminateInstances")
    with pytest.raises(ProviderAPIError) as caught:
        ec2.delete(ip=host.ip)
    assert caught.value.code == "RequestLimitExceeded"
    assert ours(cloud) == ([host.id], [host.additional["security_group_id"]])
    ec2.delete(ip=host.ip)
    assert ours(cloud) == ([], [])


def test_someone_elses_instance_is_never_touched(ec2: EC2Provider, cloud: MotoEC2) -> None:
    other = cloud.ec2.run_instances(
        ImageId="ami-0a2204a0000000002", InstanceType="t3.nano", MinCount=1, MaxCount=1
    )["Instances"][0]
    mine = wait_active(ec2, ec2.create(spec_for(ec2)))
    assert {h.id for h in ec2.list()} == {mine.id}
    with pytest.raises(NotOurs):
        ec2.delete(host_id=other["InstanceId"])
    with pytest.raises(HostNotFound):
        ec2.delete(ip="203.0.113.9")
    state = cloud.ec2.describe_instances(InstanceIds=[other["InstanceId"]])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"


# -- rollback -------------------------------------------------------------------------------


def test_issue_fault_sequence_leaves_nothing_of_ours(ec2: EC2Provider, cloud: MotoEC2) -> None:
    """RunInstances fails, then AuthorizeSecurityGroupIngress, then TerminateInstances once."""
    for step in ("RunInstances", "AuthorizeSecurityGroupIngress"):
        cloud.fail_at(step)
        with pytest.raises(ProviderAPIError):
            kit.create_host(ec2, spec_for(ec2))
        assert ours(cloud) == ([], [])
    host = wait_active(ec2, ec2.create(spec_for(ec2)))
    cloud.fail_at("TerminateInstances")
    with pytest.raises(ProviderAPIError):
        ec2.delete(host_id=host.id)
    ec2.delete(host_id=host.id)
    assert ours(cloud) == ([], [])
    assert cloud.resources() == set()


def test_launch_whose_response_was_lost_is_found_by_tag_and_removed(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    cloud.fail_at("RunInstances", after=True)  # moto started the VM; we saw an error
    with pytest.raises(ProviderAPIError):
        kit.create_host(ec2, spec_for(ec2))
    assert "TerminateInstances" in cloud.operations()
    assert cloud.resources() == set()


def test_failed_cleanup_names_the_command_that_finishes_it(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    spec = spec_for(ec2)
    cloud.fail_at("RunInstances")
    cloud.fail_at("DeleteSecurityGroup", times=MAX_POLLS)
    with pytest.raises(UndoFailed) as caught:
        kit.create_host(ec2, spec)
    assert "InsufficientInstanceCapacity" in caught.value.message
    assert f"inletsctl delete --id {spec.host_id}" in caught.value.hint
    assert ours(cloud)[1], "the group is left for delete to finish"
    ec2.delete(host_id=spec.host_id)
    assert cloud.resources() == set()


# -- checks before any call, and errors -----------------------------------------------------


def test_user_data_over_the_limit_is_refused_before_any_call(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    before = cloud.operations()
    fits = "#" * (EC2Provider.facts.user_data_limit // 4 * 3)
    with pytest.raises(UserDataTooLarge):
        ec2.create(spec_for(ec2, user_data=fits + "#"))
    assert cloud.operations() == before == []
    ec2.create(spec_for(ec2, user_data=fits))  # exactly at the limit is fine


def test_unknown_image_and_plan_fail_with_nothing_made(ec2: EC2Provider, cloud: MotoEC2) -> None:
    with pytest.raises(InvalidSpec, match="ubuntu-8.04") as unknown:
        ec2.create(spec_for(ec2, image="ubuntu-8.04"))
    assert "ubuntu-22.04" in unknown.value.hint
    with pytest.raises(ProviderAPIError) as caught:
        ec2.create(spec_for(ec2, plan="t9.huge"))
    assert caught.value.code == "InvalidInstanceType"
    assert "--plan" in caught.value.hint
    assert cloud.resources() == set()


def test_zone_without_the_plan_is_refused(ec2: EC2Provider, cloud: MotoEC2) -> None:
    with pytest.raises(InvalidSpec, match="not offered in zone eu-west-1z") as caught:
        ec2.create(spec_for(ec2, zone="eu-west-1z"))
    assert "eu-west-1a" in caught.value.hint
    assert cloud.resources() == set()


def test_console_output_of_our_instance_only(ec2: EC2Provider, cloud: MotoEC2) -> None:
    mine = ec2.create(spec_for(ec2))
    assert "Linux version" in ec2.console_output(mine.id)  # moto's sample boot log
    other = cloud.ec2.run_instances(
        ImageId="ami-0a2204a0000000002", InstanceType="t3.nano", MinCount=1, MaxCount=1
    )["Instances"][0]
    with pytest.raises(HostNotFound):
        ec2.console_output(other["InstanceId"])


@pytest.mark.parametrize(
    ("code", "hint_word"),
    [
        ("AuthFailure", "AWS_PROFILE"),
        ("UnauthorizedOperation", "ec2:RunInstances"),
        ("OptInRequired", "region"),
        ("RequestLimitExceeded", "AWS_RETRY_MODE"),
        ("Unsupported", "--zone"),
    ],
)
def test_aws_errors_become_one_line_with_a_hint(
    ec2: EC2Provider, cloud: MotoEC2, code: str, hint_word: str
) -> None:
    def refuse(**_: Any) -> None:
        raise client_error("DescribeInstances", code, "refused by the test")

    cloud.events.register("before-call.ec2.DescribeInstances", refuse)
    with pytest.raises(ProviderAPIError) as caught:
        ec2.list()
    assert caught.value.code == code
    assert "\n" not in caught.value.message and code in caught.value.message
    assert hint_word in caught.value.hint


def test_throttling_is_retried_by_botocore(ec2: EC2Provider, cloud: MotoEC2) -> None:
    assert ec2.client.meta.config.retries["mode"] == "standard"
    sent: list[str] = []

    def throttle_once(request: Any, **_: Any) -> AWSResponse | None:
        sent.append(request.url)
        if len(sent) > 1:
            return None
        body = (
            b"<Response><Errors><Error><Code>RequestLimitExceeded</Code>"
            b"<Message>Request limit exceeded.</Message></Error></Errors>"
            b"<RequestID>r</RequestID></Response>"
        )

        class Raw:
            def stream(self, **_: Any) -> Iterator[bytes]:
                yield body

        return AWSResponse(request.url, 503, {}, Raw())

    cloud.events.register("before-send.ec2.DescribeInstances", throttle_once)
    assert ec2.list() == []
    assert len(sent) == 2


def test_retry_mode_follows_the_aws_setting(
    moto: str, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    assert make_provider(moto, sleeps).client.meta.config.retries["mode"] == "adaptive"
    monkeypatch.setenv("AWS_RETRY_MODE", "legacy")
    assert make_provider(moto, sleeps).client.meta.config.retries["mode"] == "standard"


def test_missing_credentials(moto: str, sleeps: list[float]) -> None:
    with pytest.raises(CredentialsMissing, match="secret key"):
        make_provider(moto, sleeps, secret_key="")
    anonymous = make_provider(moto, sleeps, access_token="", secret_key="")
    with pytest.raises(CredentialsMissing) as caught:
        anonymous.list()
    assert "AWS_PROFILE" in caught.value.hint


def test_unknown_profile(moto: str, sleeps: list[float]) -> None:
    with pytest.raises(CredentialsMissing, match="nobody"):
        make_provider(moto, sleeps, access_token="", secret_key="", profile="nobody")


def test_unknown_region_is_refused_without_a_network_call(sleeps: list[float]) -> None:
    provider = EC2Provider(ProviderConfig(region="eu-wset-1", access_token="a", secret_key="b"))
    with pytest.raises(InvalidSpec, match="eu-wset-1"):
        provider.list()


def test_profile_from_the_aws_config_file(
    moto: str, sleeps: list[float], tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "aws-config").write_text("[profile tunnels]\nregion = eu-west-1\n")
    (tmp_path / "aws-credentials").write_text(
        "[tunnels]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    provider = make_provider(
        moto, sleeps, access_token="", secret_key="", region="", profile="tunnels"
    )
    assert provider.region == "eu-west-1"
    host = provider.create(spec_for(provider))
    assert host.id in {h.id for h in provider.list()}


def test_endpoint_from_aws_endpoint_url(
    moto: str, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What LocalStack users set; boto3 reads it, we pass no endpoint of our own."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    provider = make_provider(
        moto, sleeps, access_token="", secret_key="", region="", endpoint_url=""
    )
    assert provider.region == "us-east-2"
    host = wait_active(provider, provider.create(spec_for(provider, region="")))
    provider.delete(host_id=host.id)
    assert (
        plain_client(moto, "us-east-2").describe_security_groups(
            Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [TAG_VALUE]}]
        )["SecurityGroups"]
        == []
    )


def test_importing_the_provider_does_not_import_boto3() -> None:
    code = (
        "import sys, providers.ec2; sys.exit('boto3' in sys.modules or 'botocore' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_host_created_outside_the_config_region_is_followed_there(
    moto: str, sleeps: list[float]
) -> None:
    """The CLI fills the spec's region from the defaults even when the config has none."""
    provider = make_provider(moto, sleeps, region="us-east-2")
    host = wait_active(provider, provider.create(spec_for(provider, region=REGION)))
    assert host.region == REGION
    provider.delete(host_id=host.id)
    assert provider.status(host.id).status is HostStatus.DELETED
    assert (
        plain_client(moto).describe_security_groups(
            Filters=[{"Name": f"tag:{TAG_KEY}", "Values": [TAG_VALUE]}]
        )["SecurityGroups"]
        == []
    )
