"""A real moto EC2 server on loopback, and the conformance suite's handle on it.

moto reads its settings (``MOTO_AMIS_PATH`` and the validation switches) when it is
first imported, so :func:`start_moto` sets them before importing it and checks that
they took effect. boto3 reaches the server over HTTP exactly as it reaches AWS.

moto is more lenient than AWS: it deletes a security group still in use and
terminates at once. Tests therefore also read the calls the provider made, via the
botocore event hooks that :class:`MotoEC2` registers on the provider's client.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from providers.testing.faults import Fault, FaultPlan, FaultProxy

AMIS_PATH = Path(__file__).with_name("amis.json")
MOTO_ENV = {
    "MOTO_AMIS_PATH": str(AMIS_PATH),
    "MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION": "true",
    "MOTO_ENABLE_AMI_VALIDATION": "true",
}
REGION = "eu-west-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

#: a realistic AWS error for each step the conformance suite makes fail.
FAILURES = {
    "CreateSecurityGroup": ("SecurityGroupLimitExceeded", "The maximum number of groups"),
    "AuthorizeSecurityGroupIngress": ("RulesPerSecurityGroupLimitExceeded", "Too many rules"),
    "RunInstances": ("InsufficientInstanceCapacity", "No capacity in this zone"),
    "TerminateInstances": ("RequestLimitExceeded", "Request limit exceeded."),
    "DeleteSecurityGroup": ("DependencyViolation", "resource has a dependent object"),
    "DeleteTargetGroup": ("ResourceInUse", "The target group is currently in use by a listener"),
    "CreateLoadBalancer": ("TooManyLoadBalancers", "The quota for load balancers is reached"),
    "CreateListener": ("DuplicateListener", "A listener with the specified port already exists"),
}


@contextmanager
def moto_server() -> Iterator[str]:
    """A started ThreadedMotoServer on 127.0.0.1 (free port); yields its URL, stops after."""
    os.environ.update(MOTO_ENV)
    from moto import settings
    from moto.ec2.models.amis import AMIS
    from moto.server import ThreadedMotoServer

    if not settings.ENABLE_AMI_VALIDATION or not any(a["owner_id"] == "099720109477" for a in AMIS):
        raise RuntimeError(
            f"moto was imported before its settings were set ({sorted(MOTO_ENV)}); "
            f"import it only through {__name__}"
        )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset(url: str) -> None:
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def plain_client(url: str, region: str = REGION, service: str = "ec2") -> Any:
    """A client of our own (no hooks) to look at moto's state."""
    return boto3.client(service, region_name=region, endpoint_url=url, **CREDENTIALS)


def client_error(operation: str, code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


#: the kit's steps of create: the EC2 query API names the operation in the body
STEPS = {
    name: rf"^POST / .*\bAction={name}\b"
    for name in ("CreateSecurityGroup", "AuthorizeSecurityGroupIngress", "RunInstances")
}
#: the steps of a load-balanced group's create (``--count N --load-balancer``), in order;
#: the two security groups, and the first and second launches, are told apart by name
GROUP_STEPS = {
    "CreateSecurityGroup.lb": (
        r"^POST / .*\bAction=CreateSecurityGroup\b.*GroupName=inletsctl-\w+-lb\b"
    ),
    "AuthorizeSecurityGroupIngress.lb": (
        r"^POST / (?!.*\.Groups\.1\.GroupId)(?=.*\bAction=AuthorizeSecurityGroupIngress\b)"
    ),
    "CreateSecurityGroup.members": (
        r"^POST / .*\bAction=CreateSecurityGroup\b.*GroupName=inletsctl-[0-9a-f]+(&|$)"
    ),
    "AuthorizeSecurityGroupIngress.members": (
        r"^POST / (?=.*\bAction=AuthorizeSecurityGroupIngress\b)(?=.*\.Groups\.1\.GroupId)"
    ),
    "RunInstances.first": r"^POST / .*\bAction=RunInstances\b.*ClientToken=inletsctl-\w+-0\b",
    "RunInstances.second": r"^POST / .*\bAction=RunInstances\b.*ClientToken=inletsctl-\w+-1\b",
    **{
        name: rf"^POST / .*\bAction={name}\b"
        for name in ("CreateLoadBalancer", "CreateTargetGroup", "RegisterTargets", "CreateListener")
    },
}
#: what EC2 answers when it fails inside (botocore's standard mode retries it)
INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>InternalError</Code><Message>An internal error has occurred</Message>"
    b"</Error></Errors><RequestID>4f2c9a1e-0000-4000-8000-000000000000</RequestID></Response>"
)


class MotoKit:
    """The kit's ``FakeCloud`` for EC2: moto behind a fault proxy (``endpoint``)."""

    failure_points = tuple(STEPS)

    def __init__(self, url: str, steps: dict[str, str] = STEPS) -> None:
        self.ec2 = plain_client(url)
        self.elb = plain_client(url, service="elbv2")
        self.plan = FaultPlan(steps)
        self.proxy = FaultProxy(
            url, self.plan, lambda: (500, {"Content-Type": "text/xml"}, INTERNAL_ERROR)
        )
        self.endpoint = self.proxy.url

    def resources(self) -> set[str]:
        return live_resources(self.ec2, self.elb)

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        self.plan.arm(step, fault, victim)

    def struck(self, step: str) -> bool:
        return any(strike.step == step for strike in self.plan.struck)

    def foreign_vm(self) -> tuple[str, str]:
        """An instance the user launched by hand: no tags of ours."""
        image = self.ec2.describe_images(Owners=["099720109477"])["Images"][0]["ImageId"]
        instance = self.ec2.run_instances(
            ImageId=image,
            InstanceType="t3.micro",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "env", "Value": "prod"}]}
            ],
        )["Instances"][0]
        return instance["InstanceId"], instance.get("PublicIpAddress", "")


def live_resources(ec2: Any, elb: Any = None) -> set[str]:
    """Every live instance, non-default security group, volume, interface, load balancer,
    listener and target group at moto (ELBv2 asked at ``ec2``'s endpoint unless given)."""
    if elb is None:
        elb = boto3.client(
            "elbv2", region_name=ec2.meta.region_name, endpoint_url=ec2.meta.endpoint_url,
            **CREDENTIALS,
        )  # fmt: skip
    instances = {
        i["InstanceId"]
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    }
    groups = {
        g["GroupId"]
        for g in ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"] != "default"
    }
    volumes = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    enis = {n["NetworkInterfaceId"] for n in ec2.describe_network_interfaces()["NetworkInterfaces"]}
    balancers = [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
    listeners = {
        li["ListenerArn"]
        for arn in balancers
        for li in elb.describe_listeners(LoadBalancerArn=arn)["Listeners"]
    }
    targets = {tg["TargetGroupArn"] for tg in elb.describe_target_groups()["TargetGroups"]}
    return instances | groups | volumes | enis | set(balancers) | listeners | targets


class MotoEC2:
    """moto's live resources plus fault injection through the provider's own client.

    ``calls`` records every operation the provider's client completed, in order, with
    its parsed response, so tests can check the order moto itself does not enforce;
    ``params`` records what was asked, for what moto ignores (e.g. interface tags).
    """

    def __init__(self, url: str, provider_client: Any, provider_elb: Any = None) -> None:
        self.url = url
        self.ec2 = plain_client(url)
        self.elb = plain_client(url, service="elbv2")
        self.events = provider_client.meta.events
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.params: list[tuple[str, dict[str, Any]]] = []
        #: operation name -> (the client's events, its service's event name)
        self._services: dict[str, tuple[Any, str]] = {}
        for client in (provider_client, provider_elb):
            if client is not None:
                service = client.meta.service_model.service_id.hyphenize()
                for operation in client.meta.service_model.operation_names:
                    self._services[operation] = (client.meta.events, service)
                client.meta.events.register(
                    f"before-parameter-build.{service}", self._record_params
                )
                client.meta.events.register(f"after-call.{service}", self._record)

    def _record_params(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.params.append((model.name, dict(params)))

    def _record(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        self.calls.append((model.name, parsed))

    def sent(self, operation: str) -> list[dict[str, Any]]:
        """The parameters of every ``operation`` call, as the provider passed them."""
        return [params for name, params in self.params if name == operation]

    def operations(self) -> list[str]:
        return [name for name, _ in self.calls]

    def resources(self) -> set[str]:
        return live_resources(self.ec2, self.elb)

    def fail_at(self, step: str, times: int = 1, after: bool = False) -> None:
        """Make the next ``times`` calls of ``step`` fail.

        ``after=True`` fails them once moto has done the work: the response is lost,
        as on a dropped connection, so the resource exists though the caller saw an error.
        """
        code, message = FAILURES[step]
        remaining = [times]

        def fail(**_: Any) -> None:
            if remaining[0] > 0:
                remaining[0] -= 1
                raise client_error(step, code, message)

        events, service = self._services[step]
        events.register(f"{'after' if after else 'before'}-call.{service}.{step}", fail)


# -- pytest fixtures (moto, moto_url, aws_env): import the *_fixture functions -------------


@pytest.fixture(scope="session", name="moto_url")
def moto_url_fixture() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(autouse=True, name="aws_env")
def aws_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real AWS configuration, credentials or instance metadata leaks into a test."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
        "AWS_RETRY_MODE",
        "AWS_MAX_ATTEMPTS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(name="moto")
def moto_fixture(moto_url: str) -> str:
    """The session's moto server, emptied for this test."""
    reset(moto_url)
    return moto_url
