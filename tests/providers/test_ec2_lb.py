"""N EC2 exit servers behind an ALB or NLB, through boto3's real traffic to moto.

moto keeps ELBv2's state (load balancers, listeners, target groups, targets, tags)
but runs no health checks and forwards nothing: what is checked here is what AWS is
asked for, in what order, and that nothing is left. Forwarding and health checks
are checked with real processes in ``tests/providers/test_lb_haproxy.py``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import pytest

from providers import ec2_lb, kit
from providers.ec2 import EC2Provider
from providers.errors import HostNotFound, InvalidSpec, ProviderAPIError
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE, HostSpec, HostStatus, TunnelMode
from providers.testing.conformance import ProviderConformance, wait_active
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    CREDENTIALS,
    GROUP_STEPS,
    REGION,
    MotoEC2,
    MotoKit,
    aws_env_fixture,
    moto_fixture,
    moto_url_fixture,
)
from tests.providers.test_ec2 import make_provider

NLB = {"count": "2", "load_balancer": "nlb"}
ALB = {"count": "3", "load_balancer": "alb"}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def ec2(moto: str, sleeps: list[float]) -> EC2Provider:
    return make_provider(moto, sleeps)


@pytest.fixture
def cloud(moto: str, ec2: EC2Provider) -> MotoEC2:
    return MotoEC2(moto, ec2.client, ec2.elb)


def group_spec(provider: EC2Provider, extra: dict[str, str] = NLB, **server: Any) -> HostSpec:
    spec = ProviderConformance().make_spec(provider)
    if server.get("mode") is TunnelMode.HTTP:
        server.setdefault("ports", ())
    return replace(spec, extra=extra, server=replace(spec.server, **server))


@pytest.mark.kit  # the whole fault matrix: `make test-kit`
class TestEC2GroupConformance(ProviderConformance):
    """The kit's whole suite, each create step of a group a fault point."""

    failure_points = tuple(GROUP_STEPS)
    cli_create_args: ClassVar[tuple[str, ...]] = (
        "--tcp", "--ports", "8080", "--count", "2", "--load-balancer", "nlb", "--wait", "none",
    )  # fmt: skip

    def make_spec(self, provider: Any) -> HostSpec:
        return replace(super().make_spec(provider), extra=NLB)

    @pytest.fixture
    def fake(self, moto: str) -> Iterator[MotoKit]:
        handle = MotoKit(moto, GROUP_STEPS)
        yield handle
        handle.proxy.stop()

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


def _tags(items: list[dict[str, Any]]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in items}


def members(cloud: MotoEC2, host_id: str) -> list[dict[str, Any]]:
    found = cloud.ec2.describe_instances(
        Filters=[{"Name": f"tag:{HOST_ID_TAG}", "Values": [host_id]}]
    )["Reservations"]
    return [i for r in found for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def rules(group: dict[str, Any]) -> dict[tuple[int, int], list[str]]:
    """(from, to) -> its sources: CIDRs and security group ids."""
    return {
        (p["FromPort"], p["ToPort"]): sorted(
            [r["CidrIp"] for r in p.get("IpRanges", [])]
            + [r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])]
            + [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
        )
        for p in group["IpPermissions"]
    }


# -- what create makes ---------------------------------------------------------------------


def test_nlb_group_spreads_members_over_zones_and_forwards_each_port(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    spec = group_spec(ec2, {"count": "3", "load_balancer": "nlb"}, ports=(8080, 2222))
    host = wait_active(ec2, kit.create_host(ec2, spec))

    instances = members(cloud, spec.host_id)
    assert len(instances) == 3
    zones = {i["Placement"]["AvailabilityZone"] for i in instances}
    assert len(zones) >= 2, zones
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    assert (lb["Type"], lb["Scheme"]) == ("network", "internet-facing")
    assert {z["ZoneName"] for z in lb["AvailabilityZones"]} >= zones
    assert host.id == lb["LoadBalancerArn"]
    assert host.additional["dns_name"] == lb["DNSName"]
    assert sorted(host.additional["member_ips"].split(",")) == sorted(
        i["PublicIpAddress"] for i in instances
    )

    listeners = cloud.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    assert sorted((li["Port"], li["Protocol"]) for li in listeners) == [
        (2222, "TCP"),
        (8080, "TCP"),
    ]
    for listener in listeners:
        (action,) = listener["DefaultActions"]
        (group,) = cloud.elb.describe_target_groups(TargetGroupArns=[action["TargetGroupArn"]])[
            "TargetGroups"
        ]
        assert (group["Protocol"], group["Port"], group["TargetType"]) == (
            "TCP",
            listener["Port"],
            "instance",
        )
        health = (group["HealthCheckProtocol"], group["HealthCheckPort"], group["HealthCheckPath"])
        assert health == ("HTTPS", str(spec.server.control_port), "/readyz")
        assert group["Matcher"] == {"HttpCode": "200"}
        targets = cloud.elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
        registered = {t["Target"]["Id"] for t in targets["TargetHealthDescriptions"]}
        assert registered == {i["InstanceId"] for i in instances}


def test_alb_group_in_http_mode_listens_on_80_for_the_data_port(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    spec = group_spec(ec2, ALB, mode=TunnelMode.HTTP)
    host = wait_active(ec2, kit.create_host(ec2, spec))
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    assert lb["Type"] == "application"
    (listener,) = cloud.elb.describe_listeners(LoadBalancerArn=host.id)["Listeners"]
    assert (listener["Port"], listener["Protocol"]) == (80, "HTTP")
    (group,) = cloud.elb.describe_target_groups()["TargetGroups"]
    assert (group["Protocol"], group["Port"]) == ("HTTP", spec.server.data_port)
    assert (group["HealthCheckProtocol"], group["HealthCheckPath"]) == ("HTTPS", "/readyz")
    assert len(members(cloud, spec.host_id)) == 3


def test_data_ports_admit_only_the_load_balancer_and_the_control_port_everyone(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    allowed = ("203.0.113.0/24",)
    spec = group_spec(ec2, ports=(8080, 2222), allow_ips=allowed)
    host = kit.create_host(ec2, spec)
    (lb,) = cloud.elb.describe_load_balancers()["LoadBalancers"]
    (lb_group_id,) = lb["SecurityGroups"]
    groups = {
        g["GroupId"]: g
        for g in cloud.ec2.describe_security_groups(
            Filters=[{"Name": f"tag:{HOST_ID_TAG}", "Values": [spec.host_id]}]
        )["SecurityGroups"]
    }
    assert rules(groups[lb_group_id]) == {(2222, 2222): list(allowed), (8080, 8080): list(allowed)}
    (member_group_id,) = set(groups) - {lb_group_id}
    assert rules(groups[member_group_id]) == {
        (8123, 8123): ["0.0.0.0/0", "::/0"],
        (2222, 2222): [lb_group_id],
        (8080, 8080): [lb_group_id],
    }
    for instance in members(cloud, spec.host_id):  # moto lists them per interface only
        (interface,) = instance["NetworkInterfaces"]
        assert {g["GroupId"] for g in interface["Groups"]} == {member_group_id}
    assert set(host.additional["security_group_id"].split(",")) == {member_group_id}


def test_every_member_boots_the_same_user_data_so_one_token_and_pin_serve_all(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    spec = group_spec(ec2, ports=(8080,))
    kit.create_host(ec2, spec)
    datas = {
        base64.b64decode(
            cloud.ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")[
                "UserData"
            ]["Value"]
        ).decode()
        for i in members(cloud, spec.host_id)
    }
    assert datas == {spec.user_data}


def test_targets_are_registered_only_once_every_member_runs(
    ec2: EC2Provider, cloud: MotoEC2, sleeps: list[float]
) -> None:
    """AWS refuses a pending instance as a target (InvalidTarget); moto would take it."""
    seen: list[int] = []

    def pending_twice(parsed: dict[str, Any], **_: Any) -> None:
        seen.append(len(seen))
        if len(seen) <= 2:
            for reservation in parsed["Reservations"]:
                for instance in reservation["Instances"]:
                    instance["State"] = {"Code": 0, "Name": "pending"}

    cloud.events.register("after-call.ec2.DescribeInstances", pending_twice)
    kit.create_host(ec2, group_spec(ec2, ports=(8080,)))
    ops = cloud.operations()
    running_seen = max(n for n, op in enumerate(ops) if op == "DescribeInstances")
    assert ops.index("RegisterTargets") > running_seen > ops.index("CreateLoadBalancer")
    assert sleeps == [0.0, 0.0], "two polls while pending, bounded by the backoff"


def test_a_member_that_stops_while_starting_undoes_the_group(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    def stopped_once(parsed: dict[str, Any], **_: Any) -> None:
        cloud.events.unregister("after-call.ec2.DescribeInstances", stopped_once)
        for reservation in parsed["Reservations"]:
            reservation["Instances"][0]["State"] = {"Code": 80, "Name": "stopped"}

    cloud.events.register("after-call.ec2.DescribeInstances", stopped_once)
    with pytest.raises(ProviderAPIError, match="stopped while starting"):
        kit.create_host(ec2, group_spec(ec2, ports=(8080,)))
    assert "RegisterTargets" not in cloud.operations()
    assert cloud.resources() == set()


def test_everything_is_tagged_in_the_call_that_creates_it(ec2: EC2Provider, cloud: MotoEC2) -> None:
    spec = group_spec(ec2, ports=(8080,))
    kit.create_host(ec2, spec)
    want = {TAG_KEY: TAG_VALUE, HOST_ID_TAG: spec.host_id, ec2_lb.GROUP_TAG: "nlb"}
    for operation in ("CreateLoadBalancer", "CreateTargetGroup", "CreateListener"):
        for params in cloud.sent(operation):
            assert want.items() <= _tags(params["Tags"]).items(), operation
    for params in cloud.sent("CreateSecurityGroup") + cloud.sent("RunInstances"):
        for tagging in params["TagSpecifications"]:
            assert want.items() <= _tags(tagging["Tags"]).items()
    assert "AddTags" not in cloud.operations() and "CreateTags" not in cloud.operations()
    launches = [p["ClientToken"] for p in cloud.sent("RunInstances")]
    assert len(set(launches)) == 2, "one idempotency token per member"


# -- one host: list, status, delete ---------------------------------------------------------


def test_the_group_is_one_host_in_list_with_its_members(ec2: EC2Provider, cloud: MotoEC2) -> None:
    single = ec2.create(ProviderConformance().make_spec(ec2))
    spec = group_spec(ec2, ports=(8080,))
    group = wait_active(ec2, kit.create_host(ec2, spec))
    listed = {h.id: h for h in ec2.list()}
    assert set(listed) == {single.id, group.id}
    found = listed[group.id]
    assert found.additional["host_id"] == spec.host_id
    assert found.additional["load_balancer"] == "nlb"
    assert len(found.additional["members"].split(",")) == 2
    assert found.status is HostStatus.ACTIVE


def test_delete_by_the_load_balancer_removes_everything_in_order(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    spec = group_spec(ec2, ports=(8080, 2222))
    host = wait_active(ec2, kit.create_host(ec2, spec))
    cloud.calls.clear()
    ec2.delete(host_id=host.id)
    ops = cloud.operations()
    deletes = [op for op in ops if op.startswith(("Delete", "Terminate"))]
    assert deletes == [
        "DeleteListener",
        "DeleteListener",
        "DeleteLoadBalancer",
        "DeleteTargetGroup",
        "DeleteTargetGroup",
        "TerminateInstances",
        "DeleteSecurityGroup",
        "DeleteSecurityGroup",
    ]
    groups = [p["GroupId"] for p in cloud.sent("DeleteSecurityGroup")]
    lb_group = cloud.sent("CreateLoadBalancer")[0]["SecurityGroups"][0]
    assert groups[-1] == lb_group, "the group that the members' rules name goes last"
    assert cloud.resources() == set()
    with pytest.raises(HostNotFound):
        ec2.status(host.id)


def test_delete_by_one_members_ip_removes_the_whole_group(ec2: EC2Provider, cloud: MotoEC2) -> None:
    host = wait_active(ec2, kit.create_host(ec2, group_spec(ec2, ports=(8080,))))
    ec2.delete(ip=host.additional["member_ips"].split(",")[-1])
    assert cloud.resources() == set()


def test_target_group_still_in_use_is_retried(
    ec2: EC2Provider, cloud: MotoEC2, sleeps: list[float]
) -> None:
    spec = group_spec(ec2, ports=(8080,))
    kit.create_host(ec2, spec)
    sleeps.clear()
    cloud.fail_at("DeleteTargetGroup", times=2)
    kit.delete_host(ec2, spec.host_id)
    assert sleeps == [0.0, 0.0]
    assert cloud.resources() == set()


def test_quota_of_load_balancers_is_a_capacity_error_and_leaves_nothing(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    """``create --region a,b`` moves on after it; the instances made before it go."""
    from providers.errors import CapacityError

    cloud.fail_at("CreateLoadBalancer")
    with pytest.raises(CapacityError) as caught:
        kit.create_host(ec2, group_spec(ec2, ports=(8080,)))
    assert caught.value.code == "TooManyLoadBalancers"
    assert "quota" in caught.value.hint.lower()
    assert cloud.resources() == set()


def test_a_listener_error_names_the_port_and_undoes_everything(
    ec2: EC2Provider, cloud: MotoEC2
) -> None:
    cloud.fail_at("CreateListener")
    with pytest.raises(ProviderAPIError, match="listener of port 8080"):
        kit.create_host(ec2, group_spec(ec2, ports=(8080,)))
    assert cloud.resources() == set()


def test_single_hosts_never_ask_elbv2(ec2: EC2Provider, cloud: MotoEC2) -> None:
    """An IAM identity without elasticloadbalancing:* keeps working for single hosts."""
    host = wait_active(ec2, kit.create_host(ec2, ProviderConformance().make_spec(ec2)))
    ec2.list()
    ec2.delete(host_id=host.id)
    elb_operations = set(ec2.elb.meta.service_model.operation_names)
    assert not elb_operations & set(cloud.operations())


# -- refused before any call ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "server", "words", "hint"),
    [
        ({"load_balancer": "alb"}, {}, "ALB forwards HTTP only", "nlb"),
        ({"load_balancer": "nlb"}, {"ports": ()}, "needs --ports", "--ports"),
        ({"count": "3"}, {}, "--count needs --load-balancer", "--load-balancer"),
        ({"load_balancer": "elb"}, {}, "unknown load balancer", "alb"),
        ({"load_balancer": "nlb", "count": "0"}, {}, "not between 1 and", "--count"),
        ({"load_balancer": "nlb", "count": "99"}, {}, "not between 1 and", "--count"),
        ({"load_balancer": "nlb", "zone": "eu-west-1a"}, {}, "spreads over the zones", "--zone"),
        (
            {"load_balancer": "alb"},
            {"mode": TunnelMode.HTTP, "allow_ips": ("203.0.113.0/24",)},
            "ALB connects from its own addresses",
            "nlb",
        ),
        (
            {"load_balancer": "alb"},
            {"mode": TunnelMode.HTTP, "letsencrypt_domains": ("a.example.com",)},
            "cannot go behind a load balancer",
            "--http",
        ),
    ],
)
def test_what_cannot_work_is_refused_with_nothing_made(
    ec2: EC2Provider,
    cloud: MotoEC2,
    extra: dict[str, str],
    server: dict[str, Any],
    words: str,
    hint: str,
) -> None:
    with pytest.raises(InvalidSpec, match=words) as caught:
        ec2.create(group_spec(ec2, extra, **server))
    assert hint in caught.value.hint
    assert not [op for op in cloud.operations() if op.startswith(("Create", "Run"))]
    assert cloud.resources() == set()


# -- readiness --------------------------------------------------------------------------------


def test_wait_ready_probes_every_member_before_calling_the_group_ready(
    ec2: EC2Provider, cloud: MotoEC2, tmp_path: Any
) -> None:
    """The client connects to each member, so one member answering is not enough."""
    from inletsctl import hosts
    from inletsctl.store import READY, Store

    probed: list[str] = []
    slow: set[str] = set()

    def probe(ip: str, port: int, fingerprint: str, timeout: float) -> str | None:
        probed.append(ip)
        return "connection refused" if ip in slow else None

    spec = group_spec(ec2, ports=(8080,))
    req = hosts.CreateRequest(provider="aws", mode=TunnelMode.TCP, ports=((8080, 8080),))
    store = Store(tmp_path)
    polls: list[str] = []

    def progress(n: int, host: Any, tunnel: str) -> None:
        polls.append(tunnel)
        if n == 1 and host.additional.get("member_ips"):
            slow.add(host.additional["member_ips"].split(",")[1])  # the second is late
        elif n > 1:
            slow.clear()

    waiting = hosts.Waiting(
        timeout=60, backoff=hosts.constant(0), probe=probe, sleep=lambda s: None
    )
    record = hosts.create(store, ec2, req, spec, waiting, progress)
    ips = record.additional["member_ips"].split(",")
    assert record.status == READY
    assert set(probed) == set(ips) and len(ips) == 2
    assert any(ips[1] in t and "refused" in t for t in polls), polls


def test_logs_of_a_group_show_every_members_console(ec2: EC2Provider, cloud: MotoEC2) -> None:
    host = wait_active(ec2, kit.create_host(ec2, group_spec(ec2, ports=(8080,))))
    text = ec2.console_output(host.id)
    for member in host.additional["members"].split(","):
        assert f"== {member} ==" in text
    assert text.count("Linux version") == 2  # moto's sample boot log, once per member
