"""``--domain NAME --hosted-zone Z`` on an EC2 ALB group, through boto3's traffic to moto.

moto keeps ACM's certificates (with the validation CNAME it names) and Route 53's
zones and records, but validates nothing: a certificate turns ``ISSUED`` once
``settings.ACM_VALIDATION_WAIT`` seconds have passed, whether or not the CNAME exists.
So what is checked is what AWS is asked for, in what order, and that nothing is left;
that ACM really validates through the CNAME is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from providers import ec2_https, kit
from providers.dns.route53 import Route53Dns
from providers.ec2 import EC2Provider
from providers.errors import InvalidSpec, ProvisionTimeout
from providers.models import HOST_ID_TAG, HostSpec, TunnelMode
from providers.testing.conformance import ProviderConformance
from tests.fakes.aws.fargate import FargateKit
from tests.fakes.aws.server import (  # noqa: F401 (the *_fixture names register fixtures)
    GROUP_STEPS,
    MotoEC2,
    MotoKit,
    aws_env_fixture,
    live_resources,
    moto_fixture,
    moto_url_fixture,
    plain_client,
)
from tests.providers.test_ec2 import make_provider
from tests.providers.test_ec2_cli import NO_PROBE, credentials, inletsctl
from tests.providers.test_ec2_lb import TestEC2GroupConformance as GroupConformance
from tests.providers.test_fargate import fargate_spec, make_provider as make_fargate

DOMAIN = "app.example.com"
#: the steps ``--domain`` adds to a group's create, after GROUP_STEPS
HTTPS_STEPS = {
    "RequestCertificate": r'^POST / .*"ValidationMethod"',
    "ChangeResourceRecordSets": r"^POST /2013-04-01/hostedzone/[^/]+/rrset",
    "CreateListener.https": r"^POST / .*\bAction=CreateListener\b.*\bProtocol=HTTPS\b",
}


@pytest.fixture(autouse=True)
def issued_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto issues a DNS-validated certificate once this many seconds have passed."""
    from moto import settings

    monkeypatch.setattr(settings, "ACM_VALIDATION_WAIT", -1)


def make_zone(url: str, name: str = "example.com") -> str:
    route53 = plain_client(url, service="route53")
    zone = route53.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]
    return str(zone["Id"]).rsplit("/", 1)[-1]


def records(url: str, zone: str) -> list[dict[str, Any]]:
    """Everything but the zone's own SOA and NS."""
    route53 = plain_client(url, service="route53")
    sets = route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    return [r for r in sets if r["Type"] not in ("SOA", "NS")]


def certificates(url: str) -> list[str]:
    acm = plain_client(url, service="acm")
    return [c["CertificateArn"] for c in acm.list_certificates()["CertificateSummaryList"]]


def https_spec(provider: EC2Provider, zone: str, domain: str = DOMAIN, **extra: str) -> HostSpec:
    spec = ProviderConformance().make_spec(provider)
    wanted = {"count": "2", "load_balancer": "alb", "domain": domain, "hosted_zone": zone}
    return replace(
        spec,
        extra={**wanted, **extra},
        server=replace(spec.server, mode=TunnelMode.HTTP, ports=()),
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def ec2(moto: str, sleeps: list[float]) -> EC2Provider:
    return make_provider(moto, sleeps)


@pytest.fixture
def cloud(moto: str, ec2: EC2Provider) -> MotoEC2:
    return MotoEC2(moto, ec2.client, ec2.elb)


@pytest.fixture
def zone(moto: str) -> str:
    return make_zone(moto)


class HttpsKit(MotoKit):
    """The kit's fake, counting certificates and records as resources too."""

    def __init__(self, url: str, zone: str) -> None:
        super().__init__(url, {**GROUP_STEPS, **HTTPS_STEPS})
        self.url, self.zone = url, zone

    def resources(self) -> set[str]:
        made = {f"{r['Type']} {r['Name']}" for r in records(self.url, self.zone)}
        return super().resources() | set(certificates(self.url)) | made


class TestEC2HttpsConformance(GroupConformance):
    """The kit's whole suite on an ALB group with ``--domain``, each new step a fault point."""

    failure_points = tuple(HTTPS_STEPS)
    cli_create_args: ClassVar[tuple[str, ...]] = (
        "--http", "--count", "2", "--load-balancer", "alb",
        "--domain", DOMAIN, "--hosted-zone", "example.com", "--wait", "none",
    )  # fmt: skip

    def make_spec(self, provider: Any) -> HostSpec:
        return https_spec(provider, "example.com")

    @pytest.fixture
    def fake(self, moto: str) -> Iterator[HttpsKit]:
        handle = HttpsKit(moto, make_zone(moto))
        yield handle
        handle.proxy.stop()

    @pytest.fixture
    def provider(self, fake: HttpsKit, sleeps: list[float]) -> EC2Provider:
        return make_provider(fake.endpoint, sleeps)


def test_https_listener_certificate_and_records_then_delete_removes_them(
    moto: str, ec2: EC2Provider, cloud: MotoEC2, zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = https_spec(ec2, zone)
    host = kit.create_host(ec2, spec)

    (lb,) = ec2.elb.describe_load_balancers()["LoadBalancers"]
    listeners = ec2.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    by_port = {li["Port"]: li for li in listeners}
    assert sorted(by_port) == [80, 443]
    https = by_port[443]
    assert https["Protocol"] == "HTTPS"
    assert https["SslPolicy"] == ec2_https.SSL_POLICY
    # 443 forwards to the same target group as 80 (which keeps forwarding too)
    assert (
        https["DefaultActions"][0]["TargetGroupArn"]
        == (by_port[80]["DefaultActions"][0]["TargetGroupArn"])
    )
    (arn,) = certificates(moto)
    assert https["Certificates"] == [{"CertificateArn": arn}]
    acm = plain_client(moto, service="acm")
    certificate = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert certificate["DomainName"] == DOMAIN and certificate["Status"] == "ISSUED"
    tags = {t["Key"]: t["Value"] for t in acm.list_tags_for_certificate(CertificateArn=arn)["Tags"]}
    assert tags[HOST_ID_TAG] == spec.host_id and tags[ec2_https.ZONE_TAG] == zone

    asked = certificate["DomainValidationOptions"][0]["ResourceRecord"]
    made = {(r["Name"], r["Type"]): r for r in records(moto, zone)}
    assert made[(asked["Name"], "CNAME")]["ResourceRecords"] == [{"Value": asked["Value"]}]
    alias = made[(f"{DOMAIN}.", "A")]["AliasTarget"]
    assert alias["DNSName"].rstrip(".") == lb["DNSName"].rstrip(".")
    assert alias["HostedZoneId"] == lb["CanonicalHostedZoneId"]
    claims = {name for name, kind in made if kind == "TXT"}
    assert claims == {f"_inletsctl.{DOMAIN}.", f"_inletsctl.{asked['Name']}"}
    (lb_group,) = ec2.client.describe_security_groups(GroupIds=lb["SecurityGroups"])[
        "SecurityGroups"
    ]
    assert 443 in {p.get("FromPort") for p in lb_group["IpPermissions"]}

    order: list[str] = []
    original = Route53Dns.delete

    def delete(dns: Route53Dns, *args: Any) -> str:
        order.append("records")
        return original(dns, *args)

    def called(model: Any, **_: Any) -> None:
        order.append(model.name)

    monkeypatch.setattr(Route53Dns, "delete", delete)
    ec2.elb.meta.events.register("after-call", called)
    ec2._session.events.register("after-call.acm.DeleteCertificate", called)  # new clients
    ec2.delete(host.id)
    assert records(moto, zone) == [] and certificates(moto) == []
    assert order.index("DeleteListener") < order.index("records")
    assert order.index("records") < order.index("DeleteCertificate")


def test_the_users_validation_cname_is_used_and_never_deleted(
    moto: str, ec2: EC2Provider, zone: str
) -> None:
    asked = "_d930b28be6c5927595552b219965053e.app.example.com."
    value = "_c9edd76ee4a0e2a74388032f3861cc50.ykybfrwcxw.acm-validations.aws."
    route53 = plain_client(moto, service="route53")
    change = {"Name": asked, "Type": "CNAME", "TTL": 300, "ResourceRecords": [{"Value": value}]}
    route53.change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": change}]},
    )
    host = kit.create_host(ec2, https_spec(ec2, zone))
    ec2.delete(host.id)
    assert [(r["Name"], r["Type"]) for r in records(moto, zone)] == [(asked, "CNAME")]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"load_balancer": "nlb"}, "needs --load-balancer alb"),
        ({"domain": "app.example.org"}, "not inside the hosted zone"),
        ({"hosted_zone": "example.org"}, "not inside the hosted zone"),
        ({"hosted_zone": "Z0000000000NONE"}, "no public hosted zone"),
        ({"domain": ""}, "go together"),
    ],
)
def test_what_cannot_work_is_refused_before_any_paid_call(
    ec2: EC2Provider, cloud: MotoEC2, zone: str, extra: dict[str, str], words: str
) -> None:
    spec = https_spec(ec2, zone, **extra)
    with pytest.raises(InvalidSpec, match=words):
        kit.create_host(ec2, spec)
    assert {"CreateSecurityGroup", "RunInstances"}.isdisjoint(cloud.operations())
    assert certificates(cloud.url) == [] and cloud.resources() == set()


def test_a_certificate_acm_never_issues_times_out_and_leaves_nothing(
    moto: str, ec2: EC2Provider, cloud: MotoEC2, zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import settings

    monkeypatch.setattr(settings, "ACM_VALIDATION_WAIT", 10**9)
    with pytest.raises(ProvisionTimeout, match="not ready"):
        kit.create_host(ec2, https_spec(ec2, zone))
    assert records(moto, zone) == [] and certificates(moto) == [] and cloud.resources() == set()


def test_fargate_group_gets_the_same_https_and_purge_removes_it(moto: str, zone: str) -> None:
    handle = FargateKit(moto)
    try:
        provider = make_fargate(handle.endpoint, [])
        wanted = {"count": "2", "load_balancer": "alb", "domain": DOMAIN, "hosted_zone": zone}
        spec = fargate_spec(provider, wanted, mode=TunnelMode.HTTP, ports=())
        kit.create_host(provider, spec)
        (lb,) = provider.elb.describe_load_balancers()["LoadBalancers"]
        listeners = provider.elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])
        (https,) = [li for li in listeners["Listeners"] if li["Port"] == ec2_https.PORT]
        assert https["Certificates"] == [{"CertificateArn": a} for a in certificates(moto)]
        assert {r["Type"] for r in records(moto, zone)} == {"A", "CNAME", "TXT"}

        kit.delete_host(provider, spec.host_id)
        assert records(moto, zone) == [] and certificates(moto) == []
        assert handle.resources() == set()
    finally:
        handle.proxy.stop()


@pytest.mark.parametrize(
    "args",
    [
        ("--http", "--domain", DOMAIN, "--hosted-zone", "example.com"),
        ("--http", "--load-balancer", "nlb", "--domain", DOMAIN, "--hosted-zone", "example.com"),
        (
            "--http",
            "--load-balancer",
            "alb",
            "--domain",
            "app.example.org",
            "--hosted-zone",
            "example.com",
        ),
    ],
)
def test_the_cli_refuses_what_cannot_work_with_exit_2(
    moto: str, zone: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    refused = inletsctl(tmp_path, "create", "-p", "aws", *args, *NO_PROBE, *credentials(moto))
    assert refused.returncode == 2, refused.stderr
    assert "--domain" in refused.stderr or "hosted zone" in refused.stderr
    assert certificates(moto) == [] and live_resources(plain_client(moto)) == set()


def test_an_nlb_group_never_asks_acm(ec2: EC2Provider) -> None:
    asked: list[str] = []
    ec2._session.events.register("before-call.acm", lambda model, **_: asked.append(model.name))
    spec = replace(
        ProviderConformance().make_spec(ec2), extra={"count": "2", "load_balancer": "nlb"}
    )
    kit.create_host(ec2, spec)
    kit.delete_host(ec2, spec.host_id)
    assert asked == []
