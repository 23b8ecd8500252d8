"""Amazon Route 53: records in the account's public hosted zones, through boto3.

Credentials and endpoint follow boto3's conventions, as the ec2 provider's do: the
default chain (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``..., ``--profile``), and the
endpoint from ``AWS_ENDPOINT_URL_ROUTE_53`` or ``AWS_ENDPOINT_URL``, which botocore
reads itself. Route 53 is global: the client signs for us-east-1 whatever the VM's
region.

A record set is one name and type with all its values. Ours have one value each,
made with ``CREATE`` (never ``UPSERT``, which would overwrite the user's) in one
change batch per zone, so a claim and its addresses exist together or not at all.
A set with several values, or an alias, is listed as one ``Record`` whose value is
not an address: it never matches an address of ours. An alias we made (a load
balancer's name, ``Record.alias_zone`` set) is matched by its target instead. ``wait`` polls
``GetChange`` until the change is ``INSYNC`` (served by all of Route 53's name
servers), every ``poll_interval`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from providers.cloudapi import network_cause
from providers.dns.base import DnsConfig, Record, Zone
from providers.dns.kit import normalise
from providers.ec2_errors import error_code
from providers.errors import CredentialsMissing, ProviderAPIError, ProvisionTimeout

if TYPE_CHECKING:
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_route53.type_defs import (
        ChangeTypeDef,
        ResourceRecordSetOutputTypeDef,
        ResourceRecordSetTypeDef,
    )

__all__ = ["Route53Dns"]

NAME = "route53"
POLL_INTERVAL_S = 5.0
_CREDENTIALS_HINT = (
    "Set AWS_PROFILE (or pass --profile with --provider aws), or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY."
)
_HINTS = {
    "AccessDenied": "Grant the IAM identity route53:ListHostedZones, "
    "route53:ListResourceRecordSets, route53:ChangeResourceRecordSets and route53:GetChange.",
    "InvalidClientTokenId": _CREDENTIALS_HINT,
    "SignatureDoesNotMatch": _CREDENTIALS_HINT,
    "ExpiredToken": "The session token has expired; refresh it (e.g. `aws sso login`).",
    "NoSuchHostedZone": "Check --dns-zone; `aws route53 list-hosted-zones` lists the zones.",
    "Throttling": "Route 53 kept throttling after retries; wait a minute and retry.",
    "PriorRequestNotComplete": "Route 53 is still applying an earlier change; retry shortly.",
}


@contextmanager
def _errors(action: str) -> Iterator[None]:
    """The one place where botocore's exceptions become ``providers.errors``."""
    from botocore import exceptions as bx

    try:
        yield
    except bx.ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or str(exc)
        hint = _HINTS.get(code, "See the AWS error code above; `-v` shows the full response.")
        raise ProviderAPIError(
            NAME, f"could not {action}: {code}: {message}", hint, code=code
        ) from exc
    except (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ProfileNotFound) as exc:
        raise CredentialsMissing(f"{NAME}: {exc}", hint=_CREDENTIALS_HINT) from exc
    except bx.EndpointConnectionError as exc:
        cause = network_cause(exc)
        raise ProviderAPIError(
            NAME,
            f"could not {action}: cannot reach {exc.kwargs.get('endpoint_url', 'Route 53')}"
            + (f": {cause}" if cause else ""),
            "Check the network, and AWS_ENDPOINT_URL_ROUTE_53 / AWS_ENDPOINT_URL if set.",
        ) from exc
    except bx.BotoCoreError as exc:
        raise ProviderAPIError(NAME, f"could not {action}: {exc}") from exc


def _quoted(record: Record) -> str:
    """Route 53 wants a TXT value in double quotes (its text here has no quotes of its own)."""
    return f'"{record.value}"' if record.type == "TXT" else record.value


def _to_record(rrset: ResourceRecordSetOutputTypeDef) -> Record:
    values = [v["Value"] for v in rrset.get("ResourceRecords", [])]
    if len(values) == 1:
        value = values[0].strip('"') if rrset["Type"] == "TXT" else values[0]
    else:  # several values, or an alias: listed, never an address of ours
        alias = rrset.get("AliasTarget", {}).get("DNSName", "")
        value = " ".join(values) if values else f"alias {alias}"
    return Record(
        name=normalise(rrset["Name"].replace("\\052", "*")),
        type=rrset["Type"],
        value=value,
        ttl=int(rrset.get("TTL", 0)),
        alias_zone=rrset.get("AliasTarget", {}).get("HostedZoneId", ""),
    )


class Route53Dns:
    name: ClassVar[str] = NAME

    def __init__(
        self,
        config: DnsConfig,
        *,
        poll_interval: float = POLL_INTERVAL_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import boto3

        with _errors("load the AWS configuration"):
            session = boto3.Session(
                aws_access_key_id=config.token or None,
                aws_secret_access_key=config.secret_key or None,
                aws_session_token=config.session_token or None,
                profile_name=config.profile or None,
            )
            self.client: Route53Client = session.client(
                "route53", region_name="us-east-1", endpoint_url=config.endpoint_url or None
            )
        self._poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock

    def zones(self) -> list[Zone]:
        with _errors("list the hosted zones"):
            pages = self.client.get_paginator("list_hosted_zones").paginate()
            return [
                Zone(id=z["Id"].rsplit("/", 1)[-1], name=normalise(z["Name"]))
                for page in pages
                for z in page["HostedZones"]
                if not z.get("Config", {}).get("PrivateZone", False)
            ]

    def records(self, zone: Zone, name: str = "") -> list[Record]:
        """From ``name`` on in Route 53's order, which lists a name's sets together."""
        kwargs: dict[str, Any] = {"HostedZoneId": zone.id}
        if name:
            kwargs["StartRecordName"] = name
        found: list[Record] = []
        with _errors("list the records"):
            pages = self.client.get_paginator("list_resource_record_sets").paginate(**kwargs)
            for page in pages:
                for rrset in page["ResourceRecordSets"]:
                    record = _to_record(rrset)
                    if name and record.name != name:
                        return found
                    found.append(record)
        return found

    def create(self, zone: Zone, records: Sequence[Record]) -> str:
        return self._change(zone, "CREATE", records, "create the records")

    def delete(self, zone: Zone, records: Sequence[Record]) -> str:
        try:
            return self._change(zone, "DELETE", records, "delete the records")
        except ProviderAPIError as exc:
            if exc.code == "InvalidChangeBatch" and "not found" in exc.message:
                return ""  # already gone: what we wanted
            raise

    def wait(self, change: str, timeout: float) -> None:
        if not change:
            return
        deadline = self._clock() + timeout
        while True:
            with _errors("read the change's status"):
                status = self.client.get_change(Id=change)["ChangeInfo"]["Status"]
            if status == "INSYNC":
                return
            if self._clock() >= deadline:
                raise ProvisionTimeout(
                    f"{NAME}: change {change} still {status} after {timeout:g}s",
                    hint="Route 53 usually syncs within a minute: create again with a "
                    "longer --timeout.",
                )
            self._sleep(self._poll_interval)

    def _change(self, zone: Zone, action: str, records: Sequence[Record], what: str) -> str:
        changes: list[ChangeTypeDef] = []
        for r in records:
            rrset: ResourceRecordSetTypeDef = {
                "Name": f"{r.name}.",
                "Type": r.type,  # type: ignore[typeddict-item]
            }
            if r.alias_zone:  # an alias has no TTL of its own: the target's counts
                rrset["AliasTarget"] = {
                    "HostedZoneId": r.alias_zone,
                    "DNSName": r.value.removeprefix("alias "),
                    "EvaluateTargetHealth": True,
                }
            else:
                rrset["TTL"] = r.ttl
                rrset["ResourceRecords"] = [{"Value": _quoted(r)}]
            changes.append({"Action": action, "ResourceRecordSet": rrset})  # type: ignore[typeddict-item]
        with _errors(what):
            answer = self.client.change_resource_record_sets(
                HostedZoneId=zone.id,
                ChangeBatch={"Comment": "inletsctl", "Changes": changes},
            )
        return answer["ChangeInfo"]["Id"]
