"""AWS EC2 exit servers (``--provider ec2``, alias ``aws``).

One host is one instance plus one security group, both tagged
``inletsctl=exit-server`` and ``inletsctl-host=<host id>`` in the calls that make
them. The tags, not local state, are the source of truth: ``purge`` (which the kit
runs after a failed ``create``) and ``delete`` remove whatever carries the host's
tag, so a lost response never leaves an orphan; ``ClientToken`` makes a retried
launch start no second VM. An instance without our tag is never touched unless
``delete`` is forced, and then only that instance.

A group (``--count N --load-balancer alb|nlb``) is one host too: N instances over
two or more zones, two security groups and an ELBv2 load balancer with its target
groups and listeners, every one tagged the same way; its ``Host.id`` is the load
balancer's ARN. ELBv2 is asked only about resources that carry the group tag.

boto3 is imported inside ``__init__`` only; the helpers it uses live in
``ec2_errors`` (exception translation), ``ec2_placement`` (AMI, subnet, zone),
``ec2_rules`` (security group ports) and ``ec2_lb`` (the load balancer's parts).
"""

from __future__ import annotations

import base64
import builtins
import functools
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from providers import ec2_https, ec2_lb
from providers.dns.base import DnsConfig
from providers.ec2_errors import PROVIDER, aws_errors
from providers.ec2_placement import Placement, resolve, spread
from providers.ec2_rules import ip_permissions, load_balancer_permissions, member_permissions
from providers.errors import (
    CredentialsMissing,
    HostNotFound,
    InvalidSpec,
    ProviderAPIError,
    UserDataTooLarge,
)
from providers.kit import is_ours, require_ours
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
        SecurityGroupTypeDef,
        TagSpecificationTypeDef,
        TagTypeDef,
    )
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client as ELBClient
    from mypy_boto3_elbv2.type_defs import LoadBalancerTypeDef

    from providers.dns.kit import Placement as DnsPlacement
    from providers.dns.route53 import Route53Dns

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
#: ELBv2 load balancer states in which it forwards
_LB_UP = ("active", "active_impaired")


def truncated_exponential(base: float = 1.0, cap: float = 15.0) -> Backoff:
    """Seconds to wait before poll/retry ``n`` (1-based): base, 2*base, 4*base, ... up to cap."""
    return lambda n: min(cap, base * 2 ** (n - 1))


def _tag(instance: Mapping[str, Any], key: str) -> str:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), "")


#: ``_security_group``'s suffixes -> what an error calls the group
_GROUP_NAMES = {
    "-lb": "the load balancer's security group",
    "-endpoints": "the VPC endpoints' security group",
}


def _unnamed_first(groups: Iterable[SecurityGroupTypeDef]) -> list[SecurityGroupTypeDef]:
    """Groups in an order AWS deletes them in: one that no remaining group's rules name
    first (the endpoints' names the tasks', which name the load balancer's)."""
    left = list(groups)
    ordered: list[SecurityGroupTypeDef] = []
    while left:
        named = {
            pair["GroupId"]
            for g in left
            for permission in g.get("IpPermissions", [])
            for pair in permission.get("UserIdGroupPairs", [])
            if "GroupId" in pair and pair["GroupId"] != g["GroupId"]
        }
        free = [g for g in left if g["GroupId"] not in named] or left[:1]  # a cycle: any
        ordered += free
        left = [g for g in left if g not in free]
    return ordered


def _grouped(resources: Iterable[Mapping[str, Any]]) -> bool:
    """Whether these instances or security groups belong to a load-balanced group."""
    return any(_tag(r, ec2_lb.GROUP_TAG) for r in resources)


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
        self._elbs: dict[str, ELBClient] = {}
        #: instance id -> region, for hosts this object created outside ``self.region``
        #: (the CLI may pass a spec region without a config region).
        self._regions: dict[str, str] = {}
        self._config = config

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

    @property
    def elb(self) -> ELBClient:
        """The boto3 ELBv2 client of the configured region (groups' load balancers)."""
        return self._elb(self.region)

    def _elb(self, region: str) -> ELBClient:
        if region not in self._elbs:
            self._check_region(region)
            self._elbs[region] = self._session.client(
                "elbv2",
                region_name=region,
                endpoint_url=self._endpoint_url,
                config=self._botocore_config,
            )
        return self._elbs[region]

    def aws_client(self, service: str, region: str = "") -> Any:
        """A boto3 client of another AWS service (in the configured region unless given),
        with this provider's credentials, retries and endpoint (ECS Anywhere's ecs,
        secretsmanager and iam, a group's acm: one account, one set of flags)."""
        self._check_region(region or self.region)
        return self._session.client(
            service,  # type: ignore[call-overload]
            region_name=region or self.region,
            endpoint_url=self._endpoint_url,
            config=self._botocore_config,
        )

    def route53(self) -> Route53Dns:
        """Route 53 with this provider's credentials and endpoint (``--domain``'s records)."""
        from providers.dns.route53 import Route53Dns

        c = self._config
        return Route53Dns(
            DnsConfig(
                token=c.access_token,
                secret_key=c.secret_key,
                session_token=c.session_token,
                profile=c.profile,
                endpoint_url=c.endpoint_url,
            ),
            sleep=self._sleep,
        )

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
        group = ec2_lb.group_of(spec.extra)
        if group is not None:
            return self._create_group(spec, group)
        permissions = ip_permissions(spec.server)
        region = spec.region or self.region
        client = self._client(region)
        plan = spec.plan or self.facts.default_plan
        extra = {**spec.extra, "zone": spec.zone or spec.extra.get("zone", "")}
        with aws_errors("choose the image, subnet and zone"):
            place = resolve(client, spec.image or self.facts.default_image, plan, extra)
        tags = self._tags(spec)
        group_id = self._security_group(client, spec, place.vpc_id, "", permissions, tags)
        instance = self._launch(client, spec, place, group_id, tags, f"inletsctl-{spec.host_id}")
        self._regions[instance["InstanceId"]] = region
        return self._host(instance, region)

    def _create_group(self, spec: HostSpec, group: ec2_lb.Group) -> Host:
        """N instances over two or more zones behind one load balancer.

        The security groups come first (the load balancer's, then the members', whose
        data ports admit only the first), then the instances, the load balancer, and,
        once the instances run (AWS registers no pending instance), per public port a
        target group and a listener. All share the one user-data, so one token and one
        certificate serve every member.
        """
        routes = ec2_lb.routes(spec.server, group.kind)
        https = ec2_https.https_of(spec.extra, group.kind)
        if spec.zone or spec.extra.get("zone") or spec.extra.get("subnet_id"):
            raise InvalidSpec(
                "ec2: a load-balanced group spreads over the zones itself",
                hint="Drop --zone and --subnet-id; --vpc-id picks the network.",
            )
        region = spec.region or self.region
        client = self._client(region)
        where = ec2_https.placement(self.route53(), https) if https else None
        plan = spec.plan or self.facts.default_plan
        with aws_errors("choose the image, subnets and zones"):
            places = spread(client, spec.image or self.facts.default_image, plan, spec.extra)
        elb = self._elb(region)
        # The group tag on every resource: what tells purge to ask ELBv2 too.
        tags: builtins.list[TagTypeDef] = [
            *self._tags(spec),
            {"Key": ec2_lb.GROUP_TAG, "Value": group.kind},
        ]
        ports = [r.port for r in routes] + ([ec2_https.PORT] if https else [])
        lb_group = self._security_group(
            client, spec, places[0].vpc_id, "-lb",
            load_balancer_permissions(spec.server, ports), tags,
        )  # fmt: skip
        data_ports = [r.target_port for r in routes]
        member_group = self._security_group(
            client, spec, places[0].vpc_id, "",
            member_permissions(spec.server, data_ports, lb_group), tags,
        )  # fmt: skip
        instances = [
            self._launch(
                client,
                spec,
                places[n % len(places)],
                member_group,
                tags,
                f"inletsctl-{spec.host_id}-{n}",
            )  # fmt: skip
            for n in range(group.count)
        ]
        lb = ec2_lb.create_load_balancer(
            elb,
            host_id=spec.host_id,
            kind=group.kind,
            subnets=[p.subnet_id for p in places],
            security_group=lb_group,
            tags=tags,
        )
        # AWS registers an instance target only once it runs; the balancer provisions
        # meanwhile.
        ids = [i["InstanceId"] for i in instances]
        running = self._wait_for(
            client, ids, "running", "Try again, or another --plan or --region."
        )
        target_groups = ec2_lb.forward(
            elb,
            lb,
            host_id=spec.host_id,
            vpc_id=places[0].vpc_id,
            routes=routes,
            targets=ids,
            target_type="instance",
            health_port=spec.server.control_port,
            tags=tags,
        )
        if where is not None:
            self.secure(where, lb, spec.host_id, target_groups[routes[0].port], tags, region)
        return self._group_host(lb, running, region, spec.host_id)

    def secure(
        self,
        where: DnsPlacement,
        lb: LoadBalancerTypeDef,
        host_id: str,
        target_group: str,
        tags: Sequence[Mapping[str, Any]],
        region: str,
    ) -> str:
        """``--domain``: certificate, records and the 443 listener, polled with this
        provider's bounds; the certificate's ARN."""
        return ec2_https.secure(
            self.aws_client("acm", region),
            self._elb(region),
            where,
            lb,
            host_id=host_id,
            target_group=target_group,
            tags=tags,
            backoff=self._backoff,
            max_polls=self._max_polls,
            sleep=self._sleep,
        )

    @staticmethod
    def _tags(spec: HostSpec) -> builtins.list[TagTypeDef]:
        return [
            {"Key": "Name", "Value": spec.name},
            {"Key": TAG_KEY, "Value": TAG_VALUE},
            {"Key": HOST_ID_TAG, "Value": spec.host_id},
        ]

    def _security_group(
        self,
        client: EC2Client,
        spec: HostSpec,
        vpc_id: str,
        suffix: str,
        permissions: builtins.list[dict[str, Any]],
        tags: builtins.list[TagTypeDef],
    ) -> str:
        what = _GROUP_NAMES.get(suffix, "the security group")
        with aws_errors(f"create {what}"):
            group_id = client.create_security_group(
                GroupName=f"inletsctl-{spec.host_id}{suffix}",
                Description=f"inletsctl exit server {spec.host_id}{suffix}",
                VpcId=vpc_id,
                TagSpecifications=[self._tagging("security-group", tags)],
            )["GroupId"]
        with aws_errors(f"open the tunnel ports in {what}"):
            client.authorize_security_group_ingress(
                GroupId=group_id,
                IpPermissions=permissions,  # type: ignore[arg-type]
            )
        return group_id

    def _launch(
        self,
        client: EC2Client,
        spec: HostSpec,
        place: Placement,
        group_id: str,
        tags: builtins.list[TagTypeDef],
        client_token: str,
    ) -> InstanceTypeDef:
        interface: dict[str, Any] = {
            "DeviceIndex": 0,
            "SubnetId": place.subnet_id,
            "AssociatePublicIpAddress": True,
            "DeleteOnTermination": True,
            "Groups": [group_id],
        }
        if place.ipv6:
            interface["Ipv6AddressCount"] = 1
        launch_options: dict[str, Any] = {}
        if spec.extra.get("aws_key_name"):
            launch_options["KeyName"] = spec.extra["aws_key_name"]
        with aws_errors("launch the instance"):
            return client.run_instances(
                ImageId=place.image_id,
                InstanceType=spec.plan or self.facts.default_plan,  # type: ignore[arg-type]
                MinCount=1,
                MaxCount=1,
                UserData=spec.user_data,  # botocore base64-encodes it
                NetworkInterfaces=[interface],  # type: ignore[list-item]
                MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
                TagSpecifications=[
                    self._tagging(kind, tags)
                    for kind in ("instance", "volume", "network-interface")
                ],
                # Idempotent: a retried or repeated launch never starts a second VM.
                ClientToken=client_token[:64],
                **launch_options,
            )["Instances"][0]

    @staticmethod
    def _tagging(kind: str, tags: builtins.list[TagTypeDef]) -> TagSpecificationTypeDef:
        return {"ResourceType": kind, "Tags": tags}  # type: ignore[typeddict-item]

    def purge(self, host_id: str) -> builtins.list[str]:
        """Remove everything tagged ``host_id``: a group's load balancer first, then the
        instances, then the security groups."""
        client = self.client
        instances, groups = self._tagged(client, host_id)
        return self._remove(client, instances, groups)

    def console_output(self, host_id: str) -> str:
        """The instance's serial console as EC2 last captured it (it lags by minutes);
        for a group, every member's in turn."""
        host = self.status(host_id)  # ours, or HostNotFound
        members = [m for m in host.additional.get("members", "").split(",") if m]
        region = host.region
        texts = []
        for instance_id in members or [host_id]:
            with aws_errors("read the console output"):
                answer = self._client(region).get_console_output(
                    InstanceId=instance_id, Latest=True
                )
            text = answer.get("Output", "")
            try:  # the API returns it base64-encoded; emulators sometimes do not
                text = base64.b64decode(text, validate=True).decode("utf-8", "replace")
            except ValueError:
                pass
            texts.append(f"== {instance_id} ==\n{text}" if members else text)
        return "\n".join(texts)

    # -- status / list --------------------------------------------------------------------

    def status(self, host_id: str) -> Host:
        """An instance by id, or a group by its load balancer's ARN (``Host.id`` of a group)."""
        if host_id.startswith("arn:"):
            return self._group_status(host_id)
        region = self._regions.get(host_id, self.region)
        with aws_errors("describe the instance"):
            instances = self._find(self._client(region), host_id=host_id, terminated=True)
        if not instances:
            raise HostNotFound(f"ec2: no inletsctl instance {host_id} in {region}")
        newest: InstanceTypeDef = max(instances, key=lambda i: str(i.get("LaunchTime", "")))
        return self._host(newest, region)

    def _group_status(self, arn: str) -> Host:
        region = ec2_lb.region_of(arn) or self.region
        described = ec2_lb.describe(self._elb(region), arn)
        if described is None or not is_ours(described[1]) or not described[1].get(HOST_ID_TAG):
            raise HostNotFound(f"ec2: no inletsctl load balancer {arn}")
        lb, tags = described
        with aws_errors("describe the instances"):
            members = self._find(self._client(region), host_id=tags[HOST_ID_TAG], terminated=True)
        return self._group_host(lb, members, region, tags[HOST_ID_TAG])

    def list(self) -> list[Host]:
        """Single instances, and each group as one host (ELBv2 is asked only if one exists)."""
        with aws_errors("list instances"):
            instances = self._instances(self.client, [_OURS])
        hosts = [self._host(i, self.region) for i in instances if not _tag(i, ec2_lb.GROUP_TAG)]
        groups: dict[str, builtins.list[InstanceTypeDef]] = {}
        for instance in instances:
            if _tag(instance, ec2_lb.GROUP_TAG):
                groups.setdefault(_tag(instance, HOST_ID_TAG), []).append(instance)
        if groups:
            balancers = ec2_lb.load_balancers(self._elb(self.region))
            hosts += [
                self._group_host(balancers.get(host_id), members, self.region, host_id)
                for host_id, members in groups.items()
            ]
        return hosts

    # -- delete ---------------------------------------------------------------------------

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        """Terminate the instance, wait until it is gone, then delete its security group.

        ``host_id`` is the instance id, a group's load balancer ARN or, for a create that
        failed before an instance existed, our host id; the latter finds leftovers by
        tag. A group member's id or IP removes the whole group. An instance without
        our tag raises NotOurs; forced, that instance alone is terminated.
        """
        if not host_id and not ip:
            raise InvalidSpec("ec2: delete needs an instance id or an IP address")
        if host_id and host_id.startswith("arn:"):
            group = self._group_status(host_id)  # ours, or HostNotFound
            client = self._client(group.region)
            self._remove(client, *self._tagged(client, group.additional["host_id"]))
            return
        region = self._regions.get(host_id or "", self.region)
        client = self._client(region)
        with aws_errors("find the host"):
            instances = self._find(client, host_id=host_id, ip=ip, terminated=True)
            host_ids = {_tag(i, HOST_ID_TAG) for i in instances} - {""}
            if host_id and not host_id.startswith("i-"):
                host_ids.add(host_id)
            groups = self._groups(client, host_ids)
            if _grouped([*instances, *groups]):  # a member: the whole group goes
                instances = [i for h in sorted(host_ids) for i in self._find(client, host_id=h)]
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
        self._terminate(client, found)

    def _remove(
        self,
        client: EC2Client,
        instances: builtins.list[InstanceTypeDef],
        groups: builtins.list[SecurityGroupTypeDef],
    ) -> builtins.list[str]:
        """A group's load balancer parts (while they still send to the instances), the
        instances, then the security groups, a group that others' rules name last."""
        removed: builtins.list[str] = []
        if _grouped([*instances, *groups]):
            host_ids = {_tag(r, HOST_ID_TAG) for r in [*instances, *groups]} - {""}
            elb = self._elb(client.meta.region_name)
            removed += ec2_lb.remove(elb, ec2_lb.find(elb, host_ids), self._retry)
            if any(_tag(r, ec2_lb.GROUP_TAG) == "alb" for r in [*instances, *groups]):
                # only an ALB holds a certificate: NLB groups need no acm:* permission
                acm = self.aws_client("acm", client.meta.region_name)
                removed += ec2_https.remove(acm, self.route53, host_ids, self._retry)
        removed += self._terminate(client, instances)
        for group in _unnamed_first(groups):
            self._retry(
                "delete the security group",
                functools.partial(client.delete_security_group, GroupId=group["GroupId"]),
                {"DependencyViolation"},  # a just-terminated instance still holds it
                {"InvalidGroup.NotFound"},
            )
            removed.append(f"security group {group['GroupId']}")
        return removed

    def _terminate(
        self, client: EC2Client, instances: builtins.list[InstanceTypeDef]
    ) -> builtins.list[str]:
        ids = [i["InstanceId"] for i in instances if i["State"]["Name"] != "terminated"]
        if ids:
            with aws_errors("terminate the instance"):
                client.terminate_instances(InstanceIds=ids)
            self._wait_for(
                client, ids, "terminated",
                "Run the same `inletsctl delete` again to finish removing it.",
            )  # fmt: skip
        return [f"instance {i}" for i in ids]

    def _wait_for(
        self, client: EC2Client, ids: builtins.list[str], state: str, hint: str
    ) -> builtins.list[InstanceTypeDef]:
        """Poll until every instance in ``ids`` is in ``state`` (bounded); the last answer.

        Just after a launch AWS may not know the new ids yet: that is waited out too.
        """
        for poll in range(1, self._max_polls + 1):
            try:
                with aws_errors(f"check the instance is {state}"):
                    found = self._instances(client, [], ids, terminated=True)
            except HostNotFound:
                found = []
            states = {i["State"]["Name"] for i in found}
            if states <= {state} and (found or state == "terminated"):
                return found
            ended = states & {"shutting-down", "terminated", "stopping", "stopped"}
            if state == "running" and ended:
                raise ProviderAPIError(
                    PROVIDER, f"an instance is {', '.join(sorted(ended))} while starting", hint
                )
            self._sleep(self._backoff(poll))
        raise ProviderAPIError(
            PROVIDER, f"instance {', '.join(ids)} not {state} after {self._max_polls} polls", hint
        )

    def _retry(
        self, action: str, call: Callable[[], object], busy: set[str], gone: set[str]
    ) -> None:
        """``call``, retried with backoff while AWS answers a ``busy`` code (a resource just
        removed still holds it); a ``gone`` code means there is nothing left to do."""
        for attempt in range(1, self._max_polls + 1):
            try:
                with aws_errors(action):
                    call()
                return
            except ProviderAPIError as exc:
                if exc.code in gone:
                    return
                if exc.code not in busy or attempt == self._max_polls:
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
    ) -> tuple[builtins.list[InstanceTypeDef], builtins.list[SecurityGroupTypeDef]]:
        with aws_errors("find what was made"):
            return self._find(client, host_id=host_id), self._groups(client, {host_id})

    def _groups(self, client: EC2Client, host_ids: set[str]) -> builtins.list[SecurityGroupTypeDef]:
        if not host_ids:
            return []
        return client.describe_security_groups(
            Filters=[_OURS, {"Name": f"tag:{HOST_ID_TAG}", "Values": sorted(host_ids)}]
        )["SecurityGroups"]

    def _group_host(
        self,
        lb: LoadBalancerTypeDef | None,
        instances: builtins.list[InstanceTypeDef],
        region: str,
        host_id: str,
    ) -> Host:
        """A group as one host: ``id`` is the load balancer's ARN (our host id while it has
        none yet), ``ip`` the first member's; ``additional`` lists the members."""
        members = [
            self._host(i, region)
            for i in sorted(
                instances, key=lambda i: (str(i.get("LaunchTime", "")), i.get("ClientToken", ""))
            )
        ]
        live = [m for m in members if m.status is not HostStatus.DELETED]
        state = lb["State"]["Code"] if lb else ""
        if lb is None:
            status = HostStatus.CREATING if live else HostStatus.DELETED
        elif state == "failed" or len(live) < len(members):
            status = HostStatus.FAILED
        elif any(m.status is HostStatus.FAILED for m in live):
            status = HostStatus.FAILED
        elif live and all(m.status is HostStatus.ACTIVE for m in live) and state in _LB_UP:
            status = HostStatus.ACTIVE
        else:
            status = HostStatus.CREATING
        first = members[0] if members else None
        kind = next((_tag(i, ec2_lb.GROUP_TAG) for i in instances), "")
        return Host(
            id=lb["LoadBalancerArn"] if lb else host_id,
            name=first.name if first else host_id,
            provider=self.name,
            region=region,
            status=status,
            ip=next((m.ip for m in live if m.ip), ""),
            additional={
                "host_id": host_id,
                "load_balancer": kind,
                "dns_name": lb.get("DNSName", "") if lb else "",
                "provider_status": state or "no load balancer",
                "members": ",".join(m.id for m in live),
                "member_ips": ",".join(m.ip for m in live),  # "" while one has none
                "zones": ",".join(m.additional["zone"] for m in live),
                "security_group_id": ",".join(
                    sorted({g for m in live for g in m.additional["security_group_id"].split(",")})
                ),
                "image_id": first.additional["image_id"] if first else "",
                "instance_type": first.additional["instance_type"] if first else "",
                "vpc_id": lb.get("VpcId", "") if lb else "",
            },
        )

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
