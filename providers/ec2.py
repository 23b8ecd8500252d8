"""AWS EC2 exit servers (``--provider ec2``, alias ``aws``).

One host is one instance plus one security group, both tagged
``inletsctl=exit-server`` and ``inletsctl-host=<host id>`` in the calls that make
them. The tags, not local state, are the source of truth: ``purge`` (which the kit
runs after a failed ``create``) and ``delete`` remove whatever carries the host's
tag, so a lost response never leaves an orphan; ``ClientToken`` makes a retried
launch start no second VM. An instance without our tag is never touched unless
``delete`` is forced, and then only that instance.

boto3 is imported inside ``__init__`` only; the helpers it uses live in
``ec2_errors`` (exception translation), ``ec2_placement`` (AMI, subnet, zone) and
``ec2_rules`` (security group ports).
"""

from __future__ import annotations

import base64
import builtins
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from providers.ec2_errors import PROVIDER, aws_errors
from providers.ec2_placement import resolve
from providers.ec2_rules import ip_permissions
from providers.errors import (
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    ProviderAPIError,
    UserDataTooLarge,
)
from providers.kit import require_ours
from providers.models import (
    HOST_ID_TAG,
    TAG_KEY,
    TAG_VALUE,
    Host,
    HostSpec,
    HostStatus,
    ProviderConfig,
    ProviderFacts,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import (
        FilterTypeDef,
        InstanceTypeDef,
        TagSpecificationTypeDef,
        TagTypeDef,
    )

Backoff = Callable[[int], float]

_STATES: Mapping[str, HostStatus] = {
    "pending": HostStatus.CREATING,
    "running": HostStatus.ACTIVE,
    "stopping": HostStatus.FAILED,
    "stopped": HostStatus.FAILED,
    "shutting-down": HostStatus.DELETING,
    "terminated": HostStatus.DELETED,
}
_OURS: FilterTypeDef = {"Name": f"tag:{TAG_KEY}", "Values": [TAG_VALUE]}


def truncated_exponential(base: float = 1.0, cap: float = 15.0) -> Backoff:
    """Seconds to wait before poll/retry ``n`` (1-based): base, 2*base, 4*base, ... up to cap."""
    return lambda n: min(cap, base * 2 ** (n - 1))


def _tag(instance: Mapping[str, Any], key: str) -> str:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), "")


class EC2Provider:
    """Exit servers on EC2; credentials and region from boto3's default chain unless given."""

    name: ClassVar[str] = "ec2"
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="eu-west-1",
        default_plan="t3.nano",
        default_image="ubuntu-22.04",
        # Counted after base64 (as every provider's limit is): stricter than AWS's own
        # 16 KiB-before-encoding rule, so what passes here always passes there.
        user_data_limit=16384,
        user_data_encoding="base64",
    )

    def __init__(
        self,
        config: ProviderConfig,
        *,
        backoff: Backoff | None = None,
        max_polls: int = 40,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``backoff``/``max_polls`` bound the wait for termination and the retries of a
        security group still in use (default: about 8 minutes in all)."""
        import boto3
        from botocore.config import Config

        if bool(config.access_token) != bool(config.secret_key):
            raise CredentialsMissing(
                "ec2: an access key id needs its secret key (and the other way round)",
                hint="Pass both --access-token(-file) and --secret-key(-file), or neither "
                "to use the AWS profile / environment.",
            )
        with aws_errors("load the AWS configuration"):
            self._session = boto3.Session(
                aws_access_key_id=config.access_token or None,
                aws_secret_access_key=config.secret_key or None,
                aws_session_token=config.session_token or None,
                profile_name=config.profile or None,
            )
        self.region = config.region or self._session.region_name or self.facts.default_region
        self._endpoint_url = config.endpoint_url or None
        mode = self._session._session.get_config_variable("retry_mode")
        self._botocore_config = Config(
            retries={"mode": mode if mode in ("standard", "adaptive") else "standard"},
            user_agent_extra="inletsctl",
        )
        self._backoff = backoff or truncated_exponential()
        self._max_polls = max_polls
        self._sleep = sleep
        self._clients: dict[str, EC2Client] = {}
        #: instance id -> region, for hosts this object created outside ``self.region``
        #: (the CLI may pass a spec region without a config region).
        self._regions: dict[str, str] = {}

    @property
    def client(self) -> EC2Client:
        """The boto3 EC2 client of the configured region (register botocore event hooks here)."""
        return self._client(self.region)

    def _client(self, region: str) -> EC2Client:
        if region not in self._clients:
            self._check_region(region)
            self._clients[region] = self._session.client(
                "ec2",
                region_name=region,
                endpoint_url=self._endpoint_url,
                config=self._botocore_config,
            )
        return self._clients[region]

    def known_regions(self) -> builtins.list[str]:
        """botocore's own list, no API call; [] (anything goes) behind an emulator."""
        if self._endpoint_url or any(k.startswith("AWS_ENDPOINT_URL") for k in os.environ):
            return []
        return [
            name
            for partition in self._session.get_available_partitions()
            for name in self._session.get_available_regions("ec2", partition)
        ]

    def _check_region(self, region: str) -> None:
        """Catch a typo'd region before a DNS failure does; emulators accept any name."""
        known = self.known_regions()
        if known and region not in known:
            raise InvalidSpec(
                f"ec2: unknown region {region!r}",
                hint="Use a region such as eu-west-1 or us-east-1 (upgrade boto3 for a new one).",
            )

    # -- create ---------------------------------------------------------------------------

    def create(self, spec: HostSpec) -> Host:
        size = len(base64.b64encode(spec.user_data.encode()))
        if size > self.facts.user_data_limit:
            raise UserDataTooLarge(
                f"ec2: user-data is {size} bytes base64-encoded; "
                f"the limit is {self.facts.user_data_limit}"
            )
        permissions = ip_permissions(spec.server)
        region = spec.region or self.region
        client = self._client(region)
        plan = spec.plan or self.facts.default_plan
        extra = {**spec.extra, "zone": spec.zone or spec.extra.get("zone", "")}
        with aws_errors("choose the image, subnet and zone"):
            place = resolve(client, spec.image or self.facts.default_image, plan, extra)
        tags: builtins.list[TagTypeDef] = [
            {"Key": "Name", "Value": spec.name},
            {"Key": TAG_KEY, "Value": TAG_VALUE},
            {"Key": HOST_ID_TAG, "Value": spec.host_id},
        ]
        interface: dict[str, Any] = {
            "DeviceIndex": 0,
            "SubnetId": place.subnet_id,
            "AssociatePublicIpAddress": True,
            "DeleteOnTermination": True,
        }
        if place.ipv6:
            interface["Ipv6AddressCount"] = 1
        launch_options: dict[str, Any] = {}
        if spec.extra.get("aws_key_name"):
            launch_options["KeyName"] = spec.extra["aws_key_name"]
        with aws_errors("create the security group"):
            group_id = client.create_security_group(
                GroupName=f"inletsctl-{spec.host_id}",
                Description=f"inletsctl exit server {spec.host_id}",
                VpcId=place.vpc_id,
                TagSpecifications=[self._tagging("security-group", tags)],
            )["GroupId"]
        with aws_errors("open the tunnel ports in the security group"):
            client.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=permissions,  # type: ignore[arg-type]
            )
        with aws_errors("launch the instance"):
            instance = client.run_instances(
                ImageId=place.image_id,
                InstanceType=plan,  # type: ignore[arg-type]
                MinCount=1,
                MaxCount=1,
                UserData=spec.user_data,  # botocore base64-encodes it
                NetworkInterfaces=[{**interface, "Groups": [group_id]}],  # type: ignore[list-item]
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                TagSpecifications=[
                    self._tagging(kind, tags)
                    for kind in ("instance", "volume", "network-interface")
                ],
                # Idempotent: a retried or repeated launch never starts a second VM.
                ClientToken=f"inletsctl-{spec.host_id}"[:64],
                **launch_options,
            )["Instances"][0]
        self._regions[instance["InstanceId"]] = region
        return self._host(instance, region)

    @staticmethod
    def _tagging(kind: str, tags: builtins.list[TagTypeDef]) -> TagSpecificationTypeDef:
        return {"ResourceType": kind, "Tags": tags}  # type: ignore[typeddict-item]

    def purge(self, host_id: str) -> builtins.list[str]:
        """Remove every instance and security group tagged ``host_id``, instances first."""
        client = self.client
        instances, groups = self._tagged(client, host_id)
        self._remove(client, instances, groups)
        return [f"instance {i['InstanceId']}" for i in instances] + [
            f"security group {g}" for g in groups
        ]

    def console_output(self, host_id: str) -> str:
        """The instance's serial console as EC2 last captured it (it lags by minutes)."""
        self.status(host_id)  # ours, or HostNotFound
        region = self._regions.get(host_id, self.region)
        with aws_errors("read the console output"):
            answer = self._client(region).get_console_output(InstanceId=host_id, Latest=True)
        text = answer.get("Output", "")
        try:  # the API returns it base64-encoded; emulators sometimes do not
            return base64.b64decode(text, validate=True).decode("utf-8", "replace")
        except ValueError:
            return text

    # -- status / list --------------------------------------------------------------------

    def status(self, host_id: str) -> Host:
        region = self._regions.get(host_id, self.region)
        with aws_errors("describe the instance"):
            instances = self._find(self._client(region), host_id=host_id, terminated=True)
        if not instances:
            raise HostNotFound(f"ec2: no inletsctl instance {host_id} in {region}")
        newest: InstanceTypeDef = max(instances, key=lambda i: str(i.get("LaunchTime", "")))
        return self._host(newest, region)

    def list(self) -> list[Host]:
        with aws_errors("list instances"):
            return [self._host(i, self.region) for i in self._instances(self.client, [_OURS])]

    # -- delete ---------------------------------------------------------------------------

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        """Terminate the instance, wait until it is gone, then delete its security group.

        ``host_id`` is the instance id or, for a create that failed before an instance
        existed, our host id; the latter finds leftovers by tag. An instance without
        our tag raises NotOurs; forced, that instance alone is terminated.
        """
        if not host_id and not ip:
            raise InvalidSpec("ec2: delete needs an instance id or an IP address")
        region = self._regions.get(host_id or "", self.region)
        client = self._client(region)
        with aws_errors("find the host"):
            instances = self._find(client, host_id=host_id, ip=ip, terminated=True)
            host_ids = {_tag(i, HOST_ID_TAG) for i in instances} - {""}
            if host_id and not host_id.startswith("i-"):
                host_ids.add(host_id)
            groups = self._groups(client, host_ids)
        live = [i for i in instances if i["State"]["Name"] != "terminated"]
        if not live and not groups:
            if host_id and host_id.startswith("i-"):
                self._delete_foreign(client, host_id, force)
                return
            raise HostNotFound(f"ec2: no inletsctl host {host_id or ip} in {region}")
        self._remove(client, live, groups)

    def _delete_foreign(self, client: EC2Client, instance_id: str, force: bool) -> None:
        """An instance id that our tag filter did not find: someone else's, or none."""
        with aws_errors("find the instance"):
            found = self._instances(client, [], [instance_id])
        if not found:
            raise HostNotFound(f"ec2: no instance {instance_id} in {self.region}")
        tags = {t["Key"]: t["Value"] for t in found[0].get("Tags", [])}
        require_ours(PROVIDER, f"instance {instance_id}", tags, force)
        self._remove(client, found, [])

    def _remove(
        self,
        client: EC2Client,
        instances: builtins.list[InstanceTypeDef],
        groups: builtins.list[str],
    ) -> None:
        ids = [i["InstanceId"] for i in instances if i["State"]["Name"] != "terminated"]
        if ids:
            with aws_errors("terminate the instance"):
                client.terminate_instances(InstanceIds=ids)
            self._wait_terminated(client, ids)
        for group_id in groups:
            self._delete_group(client, group_id)

    def _wait_terminated(self, client: EC2Client, ids: builtins.list[str]) -> None:
        for poll in range(1, self._max_polls + 1):
            with aws_errors("check the instance is terminated"):
                found = self._instances(client, [], ids, terminated=True)
            states = {i["State"]["Name"] for i in found}
            if states <= {"terminated"}:
                return
            self._sleep(self._backoff(poll))
        raise ProviderAPIError(
            PROVIDER,
            f"instance {', '.join(ids)} not terminated after {self._max_polls} polls",
            hint="Run the same `inletsctl delete` again to finish removing it.",
        )

    def _delete_group(self, client: EC2Client, group_id: str) -> None:
        """AWS refuses while a just-terminated instance still holds the group: retry."""
        for attempt in range(1, self._max_polls + 1):
            try:
                with aws_errors("delete the security group"):
                    client.delete_security_group(GroupId=group_id)
                return
            except ProviderAPIError as exc:
                if exc.code == "InvalidGroup.NotFound":
                    return
                if exc.code != "DependencyViolation" or attempt == self._max_polls:
                    raise
            self._sleep(self._backoff(attempt))

    # -- lookups --------------------------------------------------------------------------

    def _instances(
        self,
        client: EC2Client,
        filters: builtins.list[FilterTypeDef],
        ids: Iterable[str] = (),
        terminated: bool = False,
    ) -> builtins.list[InstanceTypeDef]:
        pages = client.get_paginator("describe_instances").paginate(
            Filters=filters, InstanceIds=list(ids)
        )
        found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        return found if terminated else [i for i in found if i["State"]["Name"] != "terminated"]

    def _find(
        self,
        client: EC2Client,
        host_id: str | None = None,
        ip: str | None = None,
        terminated: bool = False,
    ) -> builtins.list[InstanceTypeDef]:
        """Our instances by instance id, host id tag or public IP; never someone else's."""
        filters = [_OURS]
        ids = [host_id] if host_id and host_id.startswith("i-") else []
        if host_id and not ids:
            filters.append({"Name": f"tag:{HOST_ID_TAG}", "Values": [host_id]})
        if ip:
            filters.append({"Name": "ip-address", "Values": [ip]})
        return self._instances(client, filters, ids, terminated)

    def _tagged(
        self, client: EC2Client, host_id: str
    ) -> tuple[builtins.list[InstanceTypeDef], builtins.list[str]]:
        with aws_errors("find what was made"):
            return self._find(client, host_id=host_id), self._groups(client, {host_id})

    def _groups(self, client: EC2Client, host_ids: set[str]) -> builtins.list[str]:
        if not host_ids:
            return []
        groups = client.describe_security_groups(
            Filters=[_OURS, {"Name": f"tag:{HOST_ID_TAG}", "Values": sorted(host_ids)}]
        )["SecurityGroups"]
        return [g["GroupId"] for g in groups]

    def _host(self, instance: InstanceTypeDef, region: str) -> Host:
        state = instance["State"]["Name"]
        ip = instance.get("PublicIpAddress", "")
        status = _STATES.get(state, HostStatus.FAILED)
        if status is HostStatus.ACTIVE and not ip:
            status = HostStatus.CREATING  # a public IP is what makes the host usable
        ipv6 = next(
            (
                a["Ipv6Address"]
                for n in instance.get("NetworkInterfaces", [])
                for a in n.get("Ipv6Addresses", [])
            ),
            "",
        )
        # AWS lists the groups on the instance; emulators may only list them per interface.
        groups = {g["GroupId"] for g in instance.get("SecurityGroups", [])} | {
            g["GroupId"] for n in instance.get("NetworkInterfaces", []) for g in n.get("Groups", [])
        }
        return Host(
            id=instance["InstanceId"],
            name=_tag(instance, "Name"),
            provider=self.name,
            region=region,
            status=status,
            ip=ip,
            ipv6=ipv6,
            additional={
                "host_id": _tag(instance, HOST_ID_TAG),
                "security_group_id": ",".join(sorted(groups)),
                "image_id": instance.get("ImageId", ""),
                "instance_type": instance.get("InstanceType", ""),
                "zone": instance.get("Placement", {}).get("AvailabilityZone", ""),
                "subnet_id": instance.get("SubnetId", ""),
                "vpc_id": instance.get("VpcId", ""),
            },
        )
