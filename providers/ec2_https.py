"""HTTPS on an ALB group (``--domain NAME --hosted-zone Z``): ACM and Route 53.

An ALB terminates TLS with a certificate only ACM can hand it, and ACM issues a
public one only once a CNAME it names is served in the domain's DNS. So, after the
port-80 listener exists: request the certificate (tagged like everything else, plus
the domain and the hosted zone, which is all ``delete --id`` needs to find the
records again), put its validation CNAME and an alias A record NAME -> the ALB into
the hosted zone, wait until ACM says ``ISSUED``, then add the 443 listener, which
forwards to the same target group as port 80. Port 80 keeps forwarding: the ALB's
own DNS name, printed at once, works before the alias is served, and the exit
servers' own HTTP service is what a client asked for.

Route 53 records carry no tags, so each record of ours gets a claim TXT beside it, the
way ``providers.dns.kit`` claims records (the claim names the host and the target).
A validation CNAME that already exists with ACM's value (an earlier certificate for
the same name in this account) is used as it is, never claimed, never deleted.

Removal runs after the load balancer's: the records a claim of ours covers, then the
certificate (ACM refuses one still in use, and a listener just deleted may still
hold it for a while: retried).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from providers.dns.base import Record, Zone
from providers.dns.kit import (
    Placement,
    claim_name,
    claim_text,
    is_hostname,
    normalise,
    place,
    within,
)
from providers.ec2_errors import aws_errors
from providers.errors import InvalidSpec, ProviderAPIError, ProvisionTimeout
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE

if TYPE_CHECKING:
    from mypy_boto3_acm import ACMClient
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client as ELBClient
    from mypy_boto3_elbv2.type_defs import LoadBalancerTypeDef

    from providers.dns.route53 import Route53Dns

#: Tags on the certificate: where its records are, for a delete with nothing but the id.
DOMAIN_TAG = "inletsctl-domain"
ZONE_TAG = "inletsctl-hosted-zone"
PORT = 443
#: TLS 1.3 and 1.2 only: AWS's recommended policy for new listeners.
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
#: Bound of Route 53's propagation wait (it usually takes well under a minute).
DNS_TIMEOUT_S = 300.0
_FAILED = {"FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "EXPIRED", "INACTIVE"}

#: ``(poll) -> seconds`` between two looks at the certificate
Backoff = Callable[[int], float]
Retry = Callable[[str, Callable[[], object], set[str], set[str]], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Https:
    domain: str
    #: ``--hosted-zone`` as given: the zone's id (``Z...``) or its name
    hosted_zone: str


def https_of(extra: Mapping[str, str], kind: str) -> Https | None:
    """What ``--domain``/``--hosted-zone`` ask for; refused before any call if it cannot work."""
    domain, zone = normalise(extra.get("domain", "")), extra.get("hosted_zone", "").strip()
    if not domain and not zone:
        return None
    if not domain or not zone:
        raise InvalidSpec(
            "ec2: --domain and --hosted-zone go together",
            hint="Pass both: the name, and the Route 53 hosted zone (id or name) holding it.",
        )
    if kind != "alb":
        raise InvalidSpec(
            "ec2: --domain needs --load-balancer alb: an NLB passes TCP through, it holds "
            "no certificate",
            hint="Pass --http --load-balancer alb, or drop --domain.",
        )
    if not is_hostname(domain):
        raise InvalidSpec(
            f"ec2: --domain {domain!r} is not a host name", hint="E.g. app.example.com."
        )
    if "." in zone and not within(domain, zone):
        raise InvalidSpec(
            f"ec2: {domain} is not inside the hosted zone {normalise(zone)}",
            hint="Pass the --hosted-zone that holds --domain.",
        )
    return Https(domain, zone)


def placement(dns: Route53Dns, https: Https) -> Placement:
    """The zone (by id or name) and proof that the name is free: free calls, made
    before anything that costs."""
    wanted = https.hosted_zone.rstrip(".").removeprefix("/hostedzone/")
    zones = [z for z in dns.zones() if z.id == wanted or z.name == normalise(wanted)]
    if not zones:
        raise InvalidSpec(
            f"ec2: no public hosted zone {https.hosted_zone!r} these credentials can change",
            hint="Check --hosted-zone; `aws route53 list-hosted-zones` lists the zones.",
        )
    if not within(https.domain, zones[0].name):
        raise InvalidSpec(
            f"ec2: {https.domain} is not inside the hosted zone {zones[0].name}",
            hint="Pass the --hosted-zone that holds --domain.",
        )
    return place(dns, [https.domain], zones[0].name)


def secure(
    acm: ACMClient,
    elb: ELBClient,
    where: Placement,
    lb: LoadBalancerTypeDef,
    *,
    host_id: str,
    target_group: str,
    tags: Sequence[Mapping[str, Any]],
    backoff: Backoff,
    max_polls: int,
    sleep: Callable[[float], None],
) -> str:
    """Certificate, its validation and alias records, then the 443 listener; returns the
    certificate's ARN."""
    ((domain, zone),) = where.zones.items()
    with aws_errors("request the certificate"):
        arn = acm.request_certificate(
            DomainName=domain,
            ValidationMethod="DNS",
            IdempotencyToken=re.sub(r"\W", "", host_id)[:32],
            Tags=[
                *tags,  # type: ignore[list-item]
                {"Key": DOMAIN_TAG, "Value": domain},
                {"Key": ZONE_TAG, "Value": zone.id},
            ],
        )["CertificateArn"]
    asked = _poll(acm, arn, backoff, max_polls, sleep, _validation_record)
    alias = Record(domain, "A", f"alias {lb['DNSName']}", alias_zone=lb["CanonicalHostedZoneId"])
    records = [alias]
    listed = where.dns.records(zone, asked.name)
    if not any(r.type == "CNAME" and normalise(r.value) == normalise(asked.value) for r in listed):
        records.append(asked)
    claims = [
        Record(claim_name(r.name), "TXT", claim_text(host_id, [], [r.value.removeprefix("alias ")]))
        for r in records
    ]
    where.dns.wait(where.dns.create(zone, claims + records), DNS_TIMEOUT_S)
    _poll(acm, arn, backoff, max_polls, sleep, _issued)
    with aws_errors(f"create the listener of port {PORT}"):
        elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTPS",
            Port=PORT,
            SslPolicy=SSL_POLICY,
            Certificates=[{"CertificateArn": arn}],
            DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group}],
            Tags=list(tags),  # type: ignore[arg-type]
        )
    return arn


def _validation_record(certificate: Mapping[str, Any]) -> Record | None:
    """ACM fills in the CNAME it wants a few seconds after the request."""
    for option in certificate.get("DomainValidationOptions", []):
        rr = option.get("ResourceRecord")
        if rr:
            return Record(normalise(rr["Name"]), rr["Type"], rr["Value"])
    return None


def _issued(certificate: Mapping[str, Any]) -> bool | None:
    status = certificate.get("Status", "")
    if status in _FAILED:
        raise ProviderAPIError(
            "ec2",
            f"ACM did not issue the certificate for {certificate.get('DomainName')}: {status}",
            hint="Check the hosted zone is the one the domain's registrar delegates to "
            "(`dig NS` the domain), then create again.",
            code=status,
        )
    return True if status == "ISSUED" else None


def _poll(
    acm: ACMClient,
    arn: str,
    backoff: Backoff,
    max_polls: int,
    sleep: Callable[[float], None],
    done: Callable[[Mapping[str, Any]], T | None],
) -> T:
    for poll in range(1, max_polls + 1):
        with aws_errors("describe the certificate"):
            certificate = acm.describe_certificate(CertificateArn=arn)["Certificate"]
        result = done(certificate)
        if result is not None:
            return result
        sleep(backoff(poll))
    raise ProvisionTimeout(
        f"ec2: certificate {arn} not ready after {max_polls} polls",
        hint="ACM validates within minutes once Route 53 serves the CNAME: run "
        "`inletsctl delete --id` and create again.",
    )


# -- finding and removing -------------------------------------------------------------------


def certificates(acm: ACMClient, host_ids: set[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """Our certificates of ``host_ids`` and their tags (ACM has no tag filter)."""
    with aws_errors("list the certificates"):
        for page in acm.get_paginator("list_certificates").paginate():
            for summary in page["CertificateSummaryList"]:
                arn = summary["CertificateArn"]
                tags = {
                    t["Key"]: t.get("Value", "")
                    for t in acm.list_tags_for_certificate(CertificateArn=arn)["Tags"]
                }
                if tags.get(TAG_KEY) == TAG_VALUE and tags.get(HOST_ID_TAG) in host_ids:
                    yield arn, tags


def remove(
    acm: ACMClient, dns: Callable[[], Route53Dns], host_ids: set[str], retry: Retry
) -> list[str]:
    """Per certificate of ours: the records our claims cover, then the certificate."""
    removed: list[str] = []
    for arn, tags in list(certificates(acm, host_ids)):
        if tags.get(ZONE_TAG):
            where = Placement(dns(), {tags.get(DOMAIN_TAG, ""): Zone(tags[ZONE_TAG], "")})
            removed += where.purge(tags[HOST_ID_TAG])
        retry(
            "delete the certificate",
            functools.partial(acm.delete_certificate, CertificateArn=arn),
            {"ResourceInUseException"},
            {"ResourceNotFoundException"},
        )
        removed.append(f"certificate {arn}")
    return removed
