"""Fargate tasks without public IPs: where they run, what they may pull, the endpoints.

``--no-public-ip`` (``assignPublicIp: DISABLED``) puts the tunnel's control port behind
the load balancer too, so a client reaches a task only through the NLB: one more TCP
listener on the control port, to an ``ip`` target group whose health check is
``/healthz`` (``/readyz`` is 503 until a client connects, and a client connects only
through a healthy target). An NLB cannot choose which task a client reaches, so there
is one task. ``--private-subnets`` runs the tasks in the user's subnets and the
internet-facing load balancer in the same VPC's public subnets, one per zone of them.

Without a route to the internet (no NAT gateway) the tasks pull their image from the
account's private ECR and reach ECR, S3, CloudWatch Logs and Secrets Manager through
VPC endpoints: ``--create-endpoints`` makes those the VPC lacks, tagged as ours from
the call that makes each; an endpoint the VPC already has for a service is never
touched (it is not ours). Everything here is decided with read-only calls before
anything is created; the endpoints are removed by our host-id tag, tags checked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.ec2_errors import aws_errors
from providers.ec2_lb import LIVE_PATH, Group, Retry, Route
from providers.ec2_placement import zone_subnets
from providers.errors import InvalidSpec, ProviderAPIError
from providers.kit import is_ours
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE, ServerSpec
from providers.ports import ANYWHERE

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import SubnetTypeDef

#: Interface endpoints a task without internet needs: the image (ECR's API and its
#: registry), its logs, its secrets. S3 (ECR's layers, an ``s3://`` engine) is a gateway.
INTERFACE_SERVICES = ("ecr.api", "ecr.dkr", "logs", "secretsmanager")
GATEWAY_SERVICE = "s3"
#: Description of the endpoints' security group rule (its own word, so it is told apart)
ENDPOINT_RULE = "inletsctl-vpc-endpoints"
HTTPS_PORT = 443
#: ECS attaches at most this many target groups to one service.
MAX_TARGET_GROUPS = 5
#: endpoint states that still hold the service (AWS refuses a second private DNS name)
_GONE = ("deleted", "deleting", "failed", "rejected", "expired")
#: ``ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO[:TAG|@DIGEST]``
_ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/"
    r"(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::[\w.-]+)?(?:@sha256:[0-9a-f]{64})?$"
)


@dataclass(frozen=True)
class Options:
    """``create``'s ``--private-subnets``, ``--no-public-ip`` and ``--create-endpoints``."""

    private_subnets: tuple[str, ...] = ()
    public_ip: bool = True
    create_endpoints: bool = False


@dataclass(frozen=True)
class Network:
    """Where the tasks and the load balancer go, and what the tasks' subnets route to."""

    vpc_id: str
    task_subnets: tuple[str, ...]
    lb_subnets: tuple[str, ...]
    #: the task subnets' route tables (the S3 gateway endpoint goes on these)
    route_tables: tuple[str, ...]
    #: one task subnet per zone (an interface endpoint takes one subnet per zone)
    endpoint_subnets: tuple[str, ...]
    #: the tasks can reach the internet: a public IP, or a NAT route from every subnet
    internet: bool


@dataclass(frozen=True)
class Repository:
    """A private ECR repository an image lives in."""

    account: str
    region: str
    name: str

    @property
    def arn(self) -> str:
        return f"arn:aws:ecr:{self.region}:{self.account}:repository/{self.name}"


def options(extra: Mapping[str, str]) -> Options:
    subnets = tuple(s.strip() for s in extra.get("private_subnets", "").split(",") if s.strip())
    return Options(
        private_subnets=subnets,
        public_ip=not extra.get("no_public_ip"),
        create_endpoints=bool(extra.get("create_endpoints")),
    )


def check(opts: Options, group: Group) -> None:
    """What cannot work, refused before any call."""
    if opts.private_subnets and opts.public_ip:
        raise InvalidSpec(
            "ecs-fargate: --private-subnets with public IPs: a task in a private subnet "
            "cannot use a public IP (the subnet has no route to an internet gateway)",
            hint="Add --no-public-ip (the control port is then served by the NLB).",
        )
    if opts.create_endpoints and opts.public_ip:
        raise InvalidSpec(
            "ecs-fargate: --create-endpoints is for tasks without public IPs",
            hint="Add --no-public-ip, or drop --create-endpoints.",
        )
    if opts.public_ip:
        return
    if group.kind != "nlb":
        raise InvalidSpec(
            "ecs-fargate: --no-public-ip needs --load-balancer nlb: clients then reach the "
            "control port through the load balancer, and an ALB cannot pass its pinned TLS "
            "through",
            hint="Pass --load-balancer nlb (with --tcp, or --http behind an NLB).",
        )
    if group.count != 1:
        raise InvalidSpec(
            f"ecs-fargate: --no-public-ip with {group.count} tasks: an NLB cannot pick which "
            "task a tunnel client reaches, so public connections would go to tasks that "
            "have no client",
            hint="Pass --count 1, or drop --no-public-ip for N tasks with public IPs.",
        )


def control_route(server: ServerSpec) -> Route:
    """The NLB's listener on the control port, checked by ``/healthz`` (200 while the
    server runs: ``/readyz`` would keep out the very clients that make it ready)."""
    return Route(server.control_port, server.control_port, "TCP", health_path=LIVE_PATH)


def check_target_groups(routes: Sequence[Route]) -> None:
    if len(routes) > MAX_TARGET_GROUPS:
        raise InvalidSpec(
            f"ecs-fargate: {len(routes)} target groups; ECS attaches at most "
            f"{MAX_TARGET_GROUPS} to one service (one per port, and the control port's "
            "with --no-public-ip)",
            hint=f"Ask for at most {MAX_TARGET_GROUPS} ports (fewer with --no-public-ip).",
        )


def _rule(port: int, group: str) -> dict[str, Any]:
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "UserIdGroupPairs": [{"GroupId": group, "Description": "inletsctl load balancer"}],
    }


def control_permission(server: ServerSpec) -> dict[str, Any]:
    """The load balancer's control port: open to all, as a task's is with public IPs
    (the token and the pinned certificate guard it; ``--allow-ips`` is the data ports')."""
    permission: dict[str, Any] = {
        "IpProtocol": "tcp",
        "FromPort": server.control_port,
        "ToPort": server.control_port,
    }
    permission["IpRanges"] = [
        {"CidrIp": c, "Description": "inletsctl tunnel"} for c in ANYWHERE if ":" not in c
    ]
    permission["Ipv6Ranges"] = [
        {"CidrIpv6": c, "Description": "inletsctl tunnel"} for c in ANYWHERE if ":" in c
    ]
    return permission


def private_member_permissions(
    server: ServerSpec, data_ports: Sequence[int], load_balancer_group: str
) -> list[dict[str, Any]]:
    """Every port of a task without a public IP, the control port included, from the
    load balancer's group only: nothing else in the VPC reaches the tasks."""
    ports = sorted({server.control_port, *data_ports})
    return [_rule(p, load_balancer_group) for p in ports]


def endpoint_permissions(task_group: str) -> list[dict[str, Any]]:
    """The interface endpoints answer HTTPS to the tasks' group only."""
    return [
        {
            "IpProtocol": "tcp",
            "FromPort": HTTPS_PORT,
            "ToPort": HTTPS_PORT,
            "UserIdGroupPairs": [{"GroupId": task_group, "Description": ENDPOINT_RULE}],
        }
    ]


# -- where ----------------------------------------------------------------------------------


def _table_of(subnet: str, tables: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """A subnet's route table: its explicit association, else the VPC's main table."""
    main: Mapping[str, Any] = {}
    for table in tables:
        for association in table.get("Associations", []):
            if association.get("SubnetId") == subnet:
                return table
            if association.get("Main"):
                main = table
    return main


def _default_route(table: Mapping[str, Any]) -> Mapping[str, Any]:
    return next(
        (r for r in table.get("Routes", []) if r.get("DestinationCidrBlock") == "0.0.0.0/0"),
        {},
    )


def is_public(table: Mapping[str, Any]) -> bool:
    """0.0.0.0/0 goes to an internet gateway."""
    return str(_default_route(table).get("GatewayId", "")).startswith("igw-")


def has_nat(table: Mapping[str, Any]) -> bool:
    """0.0.0.0/0 goes to a NAT gateway: the internet without a public IP."""
    return str(_default_route(table).get("NatGatewayId", "")).startswith("nat-")


def _one_per_zone(subnets: Sequence[SubnetTypeDef]) -> dict[str, SubnetTypeDef]:
    by_zone: dict[str, SubnetTypeDef] = {}
    for subnet in sorted(subnets, key=lambda s: (not s.get("DefaultForAz"), s["SubnetId"])):
        by_zone.setdefault(subnet["AvailabilityZone"], subnet)
    return by_zone


def resolve(client: EC2Client, extra: Mapping[str, str], opts: Options) -> Network:
    """The subnets of the tasks and of the load balancer, with read-only calls only."""
    with aws_errors("choose the subnets"):
        if not opts.private_subnets:
            subnets = zone_subnets(client, extra)
            ids = tuple(s["SubnetId"] for s in subnets)
            vpc_id = subnets[0]["VpcId"]
            if opts.public_ip:  # no route table matters: the tasks' IPs are public
                return Network(vpc_id, ids, ids, (), ids, internet=True)
        else:
            subnets = _private_subnets(client, opts.private_subnets)
            vpc_id = subnets[0]["VpcId"]
            if extra.get("vpc_id") and extra["vpc_id"] != vpc_id:
                raise InvalidSpec(
                    f"ecs-fargate: --private-subnets are in {vpc_id}, not --vpc-id "
                    f"{extra['vpc_id']}",
                    hint="Drop --vpc-id: the private subnets name their VPC.",
                )
            ids = tuple(s["SubnetId"] for s in subnets)
        tables = client.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "RouteTables"
        ]
        task_tables = [_table_of(s, tables) for s in ids]
        internet = all(has_nat(t) for t in task_tables)
        route_tables = tuple(sorted({str(t["RouteTableId"]) for t in task_tables if t}))
        endpoint_subnets = tuple(s["SubnetId"] for s in _one_per_zone(subnets).values())
        if not opts.private_subnets:
            return Network(vpc_id, ids, ids, route_tables, endpoint_subnets, internet)
        everything = client.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])[
            "Subnets"
        ]
    public = _one_per_zone([s for s in everything if is_public(_table_of(s["SubnetId"], tables))])
    zones = sorted({s["AvailabilityZone"] for s in subnets})
    missing = [z for z in zones if z not in public]
    if missing:
        raise InvalidSpec(
            f"ecs-fargate: VPC {vpc_id} has no public subnet (0.0.0.0/0 to an internet "
            f"gateway) in {', '.join(missing)}, where the private subnets are: the "
            "internet-facing load balancer needs one in each of their zones",
            hint="Add a public subnet in that zone, or pass private subnets of zones with one.",
        )
    lb_subnets = tuple(public[z]["SubnetId"] for z in zones)
    return Network(vpc_id, ids, lb_subnets, route_tables, endpoint_subnets, internet)


def _private_subnets(client: EC2Client, ids: Sequence[str]) -> list[SubnetTypeDef]:
    try:
        with aws_errors("find the private subnets"):
            subnets = client.describe_subnets(SubnetIds=list(ids))["Subnets"]
    except ProviderAPIError as exc:
        if exc.code.startswith("InvalidSubnetID"):
            raise InvalidSpec(
                f"ecs-fargate: --private-subnets {','.join(ids)}: {exc.message}",
                hint="Pass subnet ids of this region (aws ec2 describe-subnets).",
            ) from exc
        raise
    vpcs = sorted({s["VpcId"] for s in subnets})
    if len(vpcs) != 1:
        raise InvalidSpec(
            f"ecs-fargate: --private-subnets are in {len(vpcs)} VPCs ({', '.join(vpcs)})",
            hint="Pass subnets of one VPC: the load balancer and the tasks share it.",
        )
    return subnets


# -- the image ------------------------------------------------------------------------------


def repository(image: str) -> Repository | None:
    """The private ECR repository of ``image``, if it is one."""
    match = _ECR_IMAGE.match(image)
    if not match:
        return None
    return Repository(match["account"], match["region"], match["repo"])


def check_image(image: str, network: Network, region: str, account: str) -> None:
    """Without internet, only the account's own ECR in this region can be pulled (through
    the ECR and S3 endpoints); public.ecr.aws and Docker Hub cannot."""
    if network.internet:
        return
    repo = repository(image)
    if repo is not None and (repo.account, repo.region) == (account, region):
        return
    raise InvalidSpec(
        f"ecs-fargate: image {image!r} cannot be pulled: the tasks have no public IP and "
        "their subnets no route to a NAT gateway",
        hint=(
            f"Push python:3.12-slim to this account's ECR and pass --image "
            f"{account}.dkr.ecr.{region}.amazonaws.com/python:3.12-slim "
            "(with --create-endpoints if the VPC has no ECR, S3, Logs and Secrets Manager "
            "endpoints)."
        ),
    )


# -- the endpoints --------------------------------------------------------------------------


def service_name(region: str, short: str) -> str:
    return f"com.amazonaws.{region}.{short}"


def missing_services(client: EC2Client, vpc_id: str, region: str) -> list[str]:
    """The services (short names, S3 first) the VPC has no live endpoint for."""
    with aws_errors("list the VPC endpoints"):
        pages = client.get_paginator("describe_vpc_endpoints").paginate(
            Filters=[{"Name": "vpc-id", "Values": [vpc_id]}]
        )
        have = {
            e.get("ServiceName", "")
            for page in pages
            for e in page["VpcEndpoints"]
            if str(e.get("State", "")).lower() not in _GONE
        }
    wanted = (GATEWAY_SERVICE, *INTERFACE_SERVICES)
    missing = [s for s in wanted if service_name(region, s) not in have]
    if any(s in INTERFACE_SERVICES for s in missing):
        _require_dns(client, vpc_id)
    return missing


def _require_dns(client: EC2Client, vpc_id: str) -> None:
    """An interface endpoint's private DNS name (what lets the tasks' SDK calls reach it
    unchanged) needs both of the VPC's DNS attributes; AWS would refuse the endpoint."""
    off = []
    with aws_errors("read the VPC's DNS settings"):
        for attribute, key in (
            ("enableDnsSupport", "EnableDnsSupport"),
            ("enableDnsHostnames", "EnableDnsHostnames"),
        ):
            answer: Any = client.describe_vpc_attribute(VpcId=vpc_id, Attribute=attribute)  # type: ignore[arg-type]
            if not answer.get(key, {}).get("Value"):
                off.append(attribute)
    if off:
        raise InvalidSpec(
            f"ecs-fargate: VPC {vpc_id} has {' and '.join(off)} off; the interface endpoints' "
            "private DNS names need them",
            hint=f"aws ec2 modify-vpc-attribute --vpc-id {vpc_id} --enable-dns-hostnames "
            "(and --enable-dns-support), or make the endpoints yourself.",
        )


def create_endpoints(
    client: EC2Client,
    *,
    network: Network,
    region: str,
    host_id: str,
    services: Sequence[str],
    security_group: str,
    tags: Sequence[Any],
) -> list[str]:
    """An endpoint per service in ``services``, tagged in the call; their ids.

    ``ClientToken`` makes a retried call (a lost answer) return the same endpoint, as
    AWS documents; what an emulator without it makes twice is tagged, so purge finds it.
    """
    made = []
    tagging: Any = [{"ResourceType": "vpc-endpoint", "Tags": list(tags)}]
    for short in services:
        if short == GATEWAY_SERVICE:
            where: dict[str, Any] = {
                "VpcEndpointType": "Gateway",
                "RouteTableIds": list(network.route_tables),
            }
        else:
            where = {
                "VpcEndpointType": "Interface",
                "SubnetIds": list(network.endpoint_subnets),
                "SecurityGroupIds": [security_group],
                "PrivateDnsEnabled": True,
            }
        with aws_errors(f"create the VPC endpoint for {short}"):
            endpoint = client.create_vpc_endpoint(
                VpcId=network.vpc_id,
                ServiceName=service_name(region, short),
                TagSpecifications=tagging,
                ClientToken=f"inletsctl-{host_id}-{short}",
                **where,
            )["VpcEndpoint"]
        made.append(endpoint["VpcEndpointId"])
    return made


def find_endpoints(client: EC2Client, host_id: str) -> list[dict[str, Any]]:
    """Our live endpoints of ``host_id``: found by its tag, both our tags checked."""
    with aws_errors("find the VPC endpoints"):
        pages = client.get_paginator("describe_vpc_endpoints").paginate(
            Filters=[
                {"Name": f"tag:{HOST_ID_TAG}", "Values": [host_id]},
                {"Name": f"tag:{TAG_KEY}", "Values": [TAG_VALUE]},
            ]
        )
        found: list[dict[str, Any]] = [dict(e) for page in pages for e in page["VpcEndpoints"]]
    ours = []
    for endpoint in found:
        tags = {t["Key"]: t.get("Value", "") for t in endpoint.get("Tags", [])}
        live = str(endpoint.get("State", "")).lower() not in _GONE
        if live and is_ours(tags) and tags.get(HOST_ID_TAG) == host_id:
            ours.append(endpoint)
    return ours


def remove_endpoints(client: EC2Client, host_id: str, retry: Retry) -> list[str]:
    """Our endpoints of ``host_id``, before the security groups (an interface endpoint's
    network interfaces hold its group until they are gone)."""
    endpoints = find_endpoints(client, host_id)
    for endpoint in endpoints:
        retry(
            "delete the VPC endpoint",
            functools.partial(
                client.delete_vpc_endpoints, VpcEndpointIds=[endpoint["VpcEndpointId"]]
            ),
            set(),
            {"InvalidVpcEndpointId.NotFound"},
        )
    return [f"VPC endpoint {e['VpcEndpointId']} ({e.get('ServiceName', '')})" for e in endpoints]
