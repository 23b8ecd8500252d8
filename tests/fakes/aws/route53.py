"""Route 53 on the moto server (tests/fakes/aws/server.py), behind a fault proxy.

moto applies a change at once and answers ``INSYNC`` to every ``GetChange``; the real
service answers ``PENDING`` until its name servers serve the change, usually within a
minute. The proxy restores that: the change's own answer and the first
``pending_reads`` ``GetChange`` answers say ``PENDING``. moto is also lenient where
Route 53 is not (a ``CREATE`` over a set someone else made), so tests assert on what
the provider asked for as well as on moto's state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import boto3

from providers.testing.faults import Fault, FaultPlan, FaultProxy
from tests.fakes.aws.server import CREDENTIALS

#: the one mutating step of a publish: a change batch per zone
STEPS = {"change_records": r"^POST /2013-04-01/hostedzone/[^/]+/rrset/? "}
_GET_CHANGE = re.compile(r"^GET /2013-04-01/change/")
INTERNAL_ERROR = (
    b'<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
    b"<Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>An internal error "
    b"occurred</Message></Error><RequestId>4f2c9a1e-0000-4000-8000-000000000000</RequestId>"
    b"</ErrorResponse>"
)


class _PendingProxy(FaultProxy):
    def __init__(self, upstream: str, plan: FaultPlan, pending_reads: int) -> None:
        super().__init__(
            upstream, plan, lambda: (500, {"Content-Type": "text/xml"}, INTERNAL_ERROR)
        )
        self.pending_reads = pending_reads
        #: every GetChange the proxy answered
        self.change_reads = 0

    def forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        status, got, payload = super().forward(method, path, headers, body)
        line = f"{method} {path} "
        pending = re.search(STEPS["change_records"], line) is not None
        if _GET_CHANGE.search(line):
            self.change_reads += 1
            pending = self.change_reads <= self.pending_reads
        if pending:
            payload = payload.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        return status, got, payload


class MotoRoute53:
    """The DNS tests' handle on Route 53: zones, the user's records, faults, ``endpoint``."""

    failure_points = tuple(STEPS)

    def __init__(self, url: str, pending_reads: int = 0) -> None:
        self.r53: Any = boto3.client(
            "route53", region_name="us-east-1", endpoint_url=url, **CREDENTIALS
        )
        self.plan = FaultPlan(STEPS)
        self.proxy = _PendingProxy(url, self.plan, pending_reads)
        self.endpoint = self.proxy.url
        self._zones: dict[str, str] = {}

    def stop(self) -> None:
        self.proxy.stop()

    def add_zone(self, name: str, private: bool = False) -> str:
        kwargs: dict[str, Any] = {}
        if private:
            kwargs["VPC"] = {"VPCRegion": "eu-west-1", "VPCId": "vpc-12345678"}
            kwargs["HostedZoneConfig"] = {"PrivateZone": True}
        zone = self.r53.create_hosted_zone(Name=name, CallerReference=name, **kwargs)
        self._zones[name] = zone["HostedZone"]["Id"]
        return str(zone["HostedZone"]["Id"])

    def add_record(self, zone: str, name: str, type: str, value: str) -> None:
        """A record set the user made (``name`` relative to ``zone``, ``@`` for the apex)."""
        fqdn = zone if name == "@" else f"{name}.{zone}"
        text = f'"{value}"' if type == "TXT" else value
        rrset = {"Name": fqdn, "Type": type, "TTL": 300, "ResourceRecords": [{"Value": text}]}
        self.r53.change_resource_record_sets(
            HostedZoneId=self._zones[zone],
            ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": rrset}]},
        )

    def dns_records(self) -> set[tuple[str, str, str]]:
        """Every value of every set but the zones' own SOA and NS, as (name, type, value)."""
        out = set()
        for zone_id in self._zones.values():
            sets = self.r53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
            for rrset in sets:
                if rrset["Type"] in ("SOA", "NS"):
                    continue
                for value in rrset.get("ResourceRecords", []):
                    out.add((rrset["Name"].rstrip("."), rrset["Type"], value["Value"].strip('"')))
        return out

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        self.plan.arm(step, fault, victim)

    def struck(self, step: str) -> bool:
        return any(strike.step == step for strike in self.plan.struck)
