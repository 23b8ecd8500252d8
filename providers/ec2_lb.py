"""N exit servers behind one Elastic Load Balancer (``--count N --load-balancer alb|nlb``).

What a group adds to single hosts lives here: which listeners and target groups a
ServerSpec needs (pure, checked before any call), making them with our tags in the
call that creates each, finding them again by our host-id tag alone (ELBv2 has no tag
filter, so every load balancer's and target group's tags are read), and removing
them in the order AWS accepts: listeners, load balancers, then target groups (a
target group in use by a listener is refused). Instances and security groups stay
``providers.ec2``'s. Targets are ids with a target type, so exit servers that are not
instances (``ip`` targets, as Fargate tasks are) can use the same calls.

Every call runs inside ``ec2_errors.aws_errors``, the provider's one boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from providers.ec2_errors import aws_errors
from providers.errors import InvalidSpec, ProviderAPIError
from providers.models import HOST_ID_TAG, TAG_KEY, TAG_VALUE, ServerSpec, TunnelMode

if TYPE_CHECKING:
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client as ELBClient
    from mypy_boto3_elbv2.type_defs import LoadBalancerTypeDef, TargetGroupTypeDef

#: ``--load-balancer`` -> ELBv2's type
KINDS: Mapping[str, str] = {"alb": "application", "nlb": "network"}
#: Tag on each member instance (value: the kind), so ``list`` shows one host per group.
GROUP_TAG = "inletsctl-group"
#: ``--count``'s bounds: a typo such as 200 must not start 200 instances.
MAX_COUNT = 20
DEFAULT_COUNT = 2
#: An NLB takes at most 50 listeners.
MAX_LISTENERS = 50
#: The data ports' health check on the engine's TLS control port (``tunnel_core.server``):
#: 503 while no tunnel client is connected, so a member without one leaves the rotation
HEALTH_PATH = "/readyz"
#: 200 with JSON while the server runs, whether or not a client is connected: the check
#: of a listener that forwards the control port itself, which a client can only reach
#: through a target that is already healthy (``/readyz`` would keep it out for ever)
LIVE_PATH = "/healthz"
#: Two failed checks 10 s apart take a member out; AWS's defaults take up to 5 minutes.
HEALTH_CHECK: Mapping[str, int] = {
    "HealthCheckIntervalSeconds": 10,
    "HealthCheckTimeoutSeconds": 5,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 2,
}
#: ELBv2 answers describe_tags for at most 20 resources at once.
_TAGS_PER_CALL = 20

#: Retries a removal while AWS answers one of the ``busy`` codes; ``gone`` codes are done.
Retry = Callable[[str, Callable[[], object], set[str], set[str]], None]


@dataclass(frozen=True)
class Group:
    kind: str  # a key of KINDS
    count: int


@dataclass(frozen=True)
class Route:
    """One public port: the listener's, and the exit servers' data port behind it."""

    port: int
    target_port: int
    protocol: str  # "HTTP" (ALB) or "TCP" (NLB)
    health_path: str = HEALTH_PATH


@dataclass
class Found:
    """Everything of ELBv2 that carries one host id."""

    load_balancers: list[LoadBalancerTypeDef] = field(default_factory=list)
    target_groups: list[TargetGroupTypeDef] = field(default_factory=list)


def group_of(extra: Mapping[str, str]) -> Group | None:
    """The group ``create`` was asked for (``load_balancer``, ``count`` in the spec's extra)."""
    kind, count = extra.get("load_balancer", ""), extra.get("count", "")
    if not kind and not count:
        return None
    if not kind:
        raise InvalidSpec(
            "ec2: --count needs --load-balancer: the servers share one public address",
            hint="Pass --load-balancer nlb (TCP) or alb (HTTP).",
        )
    if kind not in KINDS:
        raise InvalidSpec(
            f"ec2: unknown load balancer {kind!r}", hint=f"Use one of: {', '.join(KINDS)}."
        )
    n = int(count) if count.isdigit() else 0 if count else DEFAULT_COUNT
    if not 1 <= n <= MAX_COUNT:
        raise InvalidSpec(
            f"ec2: --count {count}: not between 1 and {MAX_COUNT}",
            hint=f"Pass --count 2 to {MAX_COUNT}.",
        )
    return Group(kind, n)


def routes(server: ServerSpec, kind: str) -> list[Route]:
    """The listeners of ``kind`` for ``server``; what cannot work is refused here.

    HTTP mode: port 80 to the data port (ALB: HTTP, NLB: TCP). TCP mode: an NLB
    listener per ``--ports`` port; an ALB speaks HTTP only.
    """
    if server.letsencrypt_domains:
        raise InvalidSpec(
            "ec2: --letsencrypt-domain cannot go behind a load balancer: every exit server "
            "would ask Let's Encrypt for the same certificate",
            hint="Use --http behind the load balancer, or one host without --load-balancer.",
        )
    if server.mode is TunnelMode.HTTP:
        if kind == "alb" and server.allow_ips:
            raise InvalidSpec(
                "ec2: --allow-ips with an ALB: the ALB connects from its own addresses, "
                "so the servers' allow-list would refuse every request",
                hint="Pass --load-balancer nlb, which keeps the clients' addresses.",
            )
        return [Route(80, server.data_port, "HTTP" if kind == "alb" else "TCP")]
    if kind == "alb":
        raise InvalidSpec(
            "ec2: an ALB forwards HTTP only",
            hint="Pass --load-balancer nlb for --tcp, or --http for an ALB.",
        )
    if not server.ports:
        raise InvalidSpec(
            "ec2: --load-balancer nlb needs --ports: each public port is one listener",
            hint="Pass --ports, e.g. --ports 80,443.",
        )
    if len(server.ports) > MAX_LISTENERS:
        raise InvalidSpec(
            f"ec2: {len(server.ports)} ports; an NLB takes at most {MAX_LISTENERS} listeners",
            hint="Ask for fewer --ports.",
        )
    return [Route(port, port, "TCP") for port in server.ports]


def load_balancer_name(host_id: str) -> str:
    """At most 32 characters, letters, digits and hyphens, as ELBv2 requires."""
    return f"inletsctl-{host_id}"[:32]


def target_group_name(host_id: str, port: int) -> str:
    return f"inletsctl-{host_id}-{port}"[:32]


def create_load_balancer(
    elb: ELBClient,
    *,
    host_id: str,
    kind: str,
    subnets: Sequence[str],
    security_group: str,
    tags: Sequence[Mapping[str, Any]],
) -> LoadBalancerTypeDef:
    """The internet-facing load balancer (IPv4) in one subnet per zone."""
    with aws_errors("create the load balancer"):
        return elb.create_load_balancer(
            Name=load_balancer_name(host_id),
            Type=KINDS[kind],  # type: ignore[arg-type]
            Scheme="internet-facing",
            IpAddressType="ipv4",
            Subnets=list(subnets),
            SecurityGroups=[security_group],
            Tags=list(tags),  # type: ignore[arg-type]
        )["LoadBalancers"][0]


def forward(
    elb: ELBClient,
    lb: LoadBalancerTypeDef,
    *,
    host_id: str,
    vpc_id: str,
    routes: Sequence[Route],
    targets: Sequence[str],
    target_type: str,
    health_port: int,
    tags: Sequence[Mapping[str, Any]],
) -> dict[int, str]:
    """Per route a target group (health: HTTPS ``route.health_path`` on ``health_port``), its
    targets, and the listener that forwards to it; ``targets`` must be running, or empty
    when an ECS service registers its own (ECS needs the listener first). Returns each
    public port's target group ARN."""
    tag_list: Any = list(tags)
    made: dict[int, str] = {}
    for route in routes:
        with aws_errors(f"create the target group of port {route.port}"):
            group = elb.create_target_group(
                Name=target_group_name(host_id, route.port),
                Protocol=route.protocol,  # type: ignore[arg-type]
                Port=route.target_port,
                VpcId=vpc_id,
                TargetType=target_type,  # type: ignore[arg-type]
                HealthCheckEnabled=True,
                HealthCheckProtocol="HTTPS",
                HealthCheckPort=str(health_port),
                HealthCheckPath=route.health_path,
                Matcher={"HttpCode": "200"},
                Tags=tag_list,
                **HEALTH_CHECK,  # type: ignore[arg-type]
            )["TargetGroups"][0]
        if targets:  # none: a service (ECS) registers its tasks itself
            with aws_errors(f"register the exit servers for port {route.port}"):
                elb.register_targets(
                    TargetGroupArn=group["TargetGroupArn"], Targets=[{"Id": t} for t in targets]
                )
        with aws_errors(f"create the listener of port {route.port}"):
            elb.create_listener(
                LoadBalancerArn=lb["LoadBalancerArn"],
                Protocol=route.protocol,  # type: ignore[arg-type]
                Port=route.port,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": group["TargetGroupArn"]}],
                Tags=tag_list,
            )
        made[route.port] = group["TargetGroupArn"]
    return made


# -- finding by tag -------------------------------------------------------------------------


def _tags(elb: ELBClient, arns: Sequence[str]) -> Iterator[tuple[str, dict[str, str]]]:
    for start in range(0, len(arns), _TAGS_PER_CALL):
        answer = elb.describe_tags(ResourceArns=list(arns[start : start + _TAGS_PER_CALL]))
        for description in answer["TagDescriptions"]:
            tags = {t["Key"]: t.get("Value", "") for t in description.get("Tags", [])}
            yield description["ResourceArn"], tags


def _host_ids(elb: ELBClient, arns: Sequence[str]) -> dict[str, str]:
    """resource ARN -> our host id, for the ARNs that carry our tags."""
    return {
        arn: tags[HOST_ID_TAG]
        for arn, tags in _tags(elb, arns)
        if tags.get(TAG_KEY) == TAG_VALUE and tags.get(HOST_ID_TAG)
    }


def load_balancers(elb: ELBClient) -> dict[str, LoadBalancerTypeDef]:
    """Our load balancers by host id (every page, every one's tags)."""
    with aws_errors("list the load balancers"):
        pages = elb.get_paginator("describe_load_balancers").paginate()
        found = [lb for page in pages for lb in page["LoadBalancers"]]
        ours = _host_ids(elb, [lb["LoadBalancerArn"] for lb in found])
    return {ours[lb["LoadBalancerArn"]]: lb for lb in found if lb["LoadBalancerArn"] in ours}


def find(elb: ELBClient, host_ids: Iterable[str]) -> Found:
    """Load balancers and target groups tagged with any of ``host_ids``."""
    wanted = set(host_ids)
    if not wanted:
        return Found()
    with aws_errors("find the load balancers"):
        pages = elb.get_paginator("describe_load_balancers").paginate()
        balancers = [lb for page in pages for lb in page["LoadBalancers"]]
        groups = [
            tg
            for page in elb.get_paginator("describe_target_groups").paginate()
            for tg in page["TargetGroups"]
        ]
        ours = _host_ids(
            elb,
            [lb["LoadBalancerArn"] for lb in balancers] + [tg["TargetGroupArn"] for tg in groups],
        )
    return Found(
        [lb for lb in balancers if ours.get(lb["LoadBalancerArn"]) in wanted],
        [tg for tg in groups if ours.get(tg["TargetGroupArn"]) in wanted],
    )


def describe(elb: ELBClient, arn: str) -> tuple[LoadBalancerTypeDef, dict[str, str]] | None:
    """One load balancer and its tags; None when AWS has no such load balancer."""
    try:
        with aws_errors("describe the load balancer"):
            (lb,) = elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"]
            tags = dict(_tags(elb, [arn])).get(arn, {})
    except ProviderAPIError as exc:
        if exc.code in ("LoadBalancerNotFound", "ValidationError"):
            return None
        raise
    return lb, tags


def region_of(arn: str) -> str:
    """``arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/...`` -> REGION."""
    parts = arn.split(":")
    return parts[3] if len(parts) > 5 and parts[2] == "elasticloadbalancing" else ""


# -- removing -------------------------------------------------------------------------------


def remove(elb: ELBClient, found: Found, retry: Retry) -> list[str]:
    """Listeners, load balancers, then target groups; what is gone already counts as done."""
    removed: list[str] = []
    for lb in found.load_balancers:
        arn = lb["LoadBalancerArn"]
        with aws_errors("list the listeners"):
            pages = elb.get_paginator("describe_listeners").paginate(LoadBalancerArn=arn)
            listeners = [li["ListenerArn"] for page in pages for li in page["Listeners"]]
        for listener in listeners:
            retry(
                "delete the listener",
                functools.partial(elb.delete_listener, ListenerArn=listener),
                set(),
                {"ListenerNotFound"},
            )
            removed.append(f"listener {listener}")
        with aws_errors("delete the load balancer"):
            elb.delete_load_balancer(LoadBalancerArn=arn)  # AWS: success if already gone
        removed.append(f"load balancer {lb['LoadBalancerName']}")
    for group in found.target_groups:
        retry(
            "delete the target group",
            functools.partial(elb.delete_target_group, TargetGroupArn=group["TargetGroupArn"]),
            {"ResourceInUse"},
            {"TargetGroupNotFound"},
        )
        removed.append(f"target group {group['TargetGroupName']}")
    return removed
