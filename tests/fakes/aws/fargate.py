"""moto's ECS, Secrets Manager, Logs and IAM behind the fault proxy, with ECS's scheduler.

moto keeps a service's state but starts no task for it (its ``list_tasks`` even says it
cannot filter by service for that reason). :class:`SchedulingProxy` does what ECS's
scheduler does, synchronously, right after moto answered a call that changes what a
service wants (create, update, delete, stop a task): it runs the missing tasks the
way a service does (``group`` ``service:NAME``, the service's network configuration,
its tags propagated), gives each task's interface a public address as
``assignPublicIp`` does, and removes the interfaces of stopped tasks, as ECS does. No
thread and no timer: what a test sees after a call is settled when the answer arrives.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from providers.testing.faults import Fault, FaultPlan, FaultProxy
from tests.fakes.aws.server import (
    GROUP_STEPS,
    INTERNAL_ERROR,
    REGION,
    live_resources,
    plain_client,
)

#: the operations after which ECS's scheduler acts (``X-Amz-Target`` suffixes)
_SCHEDULED = (".CreateService", ".UpdateService", ".DeleteService", ".StopTask")

#: the create steps of ``--provider ecs-fargate``, in order. ECS, Secrets Manager and Logs
#: speak JSON with the operation in a header, so their steps are told apart by the body.
STEPS = {
    **{
        name: GROUP_STEPS[name]
        for name in (
            "CreateSecurityGroup.lb",
            "AuthorizeSecurityGroupIngress.lb",
            "CreateSecurityGroup.members",
            "AuthorizeSecurityGroupIngress.members",
        )
    },
    "CreateSecret.token": r'^POST / (?=.*"SecretString")(?=.*"Name": "inletsctl/\w+/token")',
    "CreateSecret.tls-key": r'^POST / (?=.*"SecretString")(?=.*"Name": "inletsctl/\w+/tls-key")',
    "CreateLogGroup": r'^POST / (?=.*"logGroupName": "/inletsctl/)(?=.*"tags": \{)',
    "CreateRole": r"^POST / .*\bAction=CreateRole\b",
    "PutRolePolicy": r"^POST / .*\bAction=PutRolePolicy\b",
    "CreateCluster": r'^POST / (?=.*"clusterName": )(?=.*"capacityProviders")',
    "RegisterTaskDefinition": r'^POST / .*"containerDefinitions"',
    **{
        name: GROUP_STEPS[name]
        for name in ("CreateLoadBalancer", "CreateTargetGroup", "CreateListener")
    },
    "CreateService": r'^POST / (?=.*"serviceName": )(?=.*"desiredCount")',
}
_ENDPOINT = (
    r"^POST / (?=.*\bAction=CreateVpcEndpoint\b)(?=.*ServiceName=com\.amazonaws\.[\w-]+\.{}(&|$))"
)
#: what ``--no-public-ip --private-subnets --create-endpoints --release-url s3://`` adds,
#: in order: the endpoints' security group and the endpoints, the task role and its
#: policy, the control port's target group and listener
PRIVATE_STEPS = {
    "CreateSecurityGroup.endpoints": (
        r"^POST / .*\bAction=CreateSecurityGroup\b.*GroupName=inletsctl-\w+-endpoints\b"
    ),
    "AuthorizeSecurityGroupIngress.endpoints": (
        r"^POST / (?=.*\bAction=AuthorizeSecurityGroupIngress\b)(?=.*inletsctl-vpc-endpoints)"
    ),
    **{
        f"CreateVpcEndpoint.{name}": _ENDPOINT.format(name.replace(".", r"\."))
        for name in ("s3", "ecr.api", "ecr.dkr", "logs", "secretsmanager")
    },
    "CreateRole.task": r"^POST / (?=.*\bAction=CreateRole\b)(?=.*RoleName=inletsctl-\w+-task(&|$))",
    "PutRolePolicy.task": (
        r"^POST / (?=.*\bAction=PutRolePolicy\b)(?=.*RoleName=inletsctl-\w+-task(&|$))"
    ),
    "CreateTargetGroup.control": (
        r"^POST / (?=.*\bAction=CreateTargetGroup\b)(?=.*HealthCheckPath=%2Fhealthz)"
    ),
    "CreateListener.control": r"^POST / (?=.*\bAction=CreateListener\b)(?=.*\bPort=8123(&|$))",
}


class Scheduler:
    """What ECS does for services that moto does not: start and stop their tasks."""

    def __init__(self, url: str) -> None:
        self.ecs = plain_client(url, service="ecs")
        self.ec2 = plain_client(url)
        _tasks_stay_running(url)

    def settle(self) -> None:
        for cluster in self.ecs.list_clusters()["clusterArns"]:
            arns = self.ecs.list_tasks(cluster=cluster)["taskArns"]
            tasks = self.ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
            for task in tasks:
                if task.get("desiredStatus") == "STOPPED":
                    self._release(task)
            services = self.ecs.list_services(cluster=cluster)["serviceArns"]
            for start in range(0, len(services), 10):
                for service in self.ecs.describe_services(
                    cluster=cluster, services=services[start : start + 10], include=["TAGS"]
                )["services"]:
                    self._scale(cluster, service, tasks)

    def _scale(self, cluster: str, service: Mapping[str, Any], tasks: list[Any]) -> None:
        group = f"service:{service['serviceName']}"
        running = [t for t in tasks if t["group"] == group and t["desiredStatus"] == "RUNNING"]
        want = service["desiredCount"] if service["status"] == "ACTIVE" else 0
        for task in running[want:]:
            self.ecs.stop_task(cluster=cluster, task=task["taskArn"], reason="scaled in")
            self._release(task)
        if len(running) < want:
            started = self.ecs.run_task(
                cluster=cluster,
                taskDefinition=service["taskDefinition"],
                count=want - len(running),
                launchType="FARGATE",
                networkConfiguration=service["networkConfiguration"],
                group=group,
                startedBy="ecs-svc/0000000000000000000",
                tags=service.get("tags", []),
            )["tasks"]
            network = service["networkConfiguration"]["awsvpcConfiguration"]
            for task in started if network.get("assignPublicIp") != "DISABLED" else []:
                address = self.ec2.allocate_address(Domain="vpc")["AllocationId"]
                self.ec2.associate_address(AllocationId=address, NetworkInterfaceId=_eni(task))

    def _release(self, task: Mapping[str, Any]) -> None:
        """The stopped task's interface goes, and the public address with it."""
        eni = _eni(task)
        found = self.ec2.describe_network_interfaces(
            Filters=[{"Name": "network-interface-id", "Values": [eni]}]
        )["NetworkInterfaces"]
        for interface in found:
            association = interface.get("Association", {})
            if association.get("AllocationId"):
                self.ec2.disassociate_address(AssociationId=association["AssociationId"])
                self.ec2.release_address(AllocationId=association["AllocationId"])
            self.ec2.delete_network_interface(NetworkInterfaceId=eni)


def _tasks_stay_running(url: str) -> None:
    """moto moves a task a step towards STOPPED at every describe; ECS keeps it running."""
    body = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}}
    request = urllib.request.Request(
        f"{url}/moto-api/state-manager/set-transition",
        data=json.dumps(body).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def _eni(task: Mapping[str, Any]) -> str:
    return str(
        next(
            d["value"]
            for a in task.get("attachments", [])
            for d in a.get("details", [])
            if d["name"] == "networkInterfaceId"
        )
    )


class SchedulingProxy(FaultProxy):
    """The fault proxy, and ECS's scheduler after every call that changes a service."""

    def __init__(self, upstream: str, plan: FaultPlan, scheduler: Scheduler) -> None:
        super().__init__(
            upstream, plan, lambda: (500, {"Content-Type": "text/xml"}, INTERNAL_ERROR)
        )
        self.scheduler = scheduler

    def forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        answer = super().forward(method, path, headers, body)
        target = next((v for k, v in headers.items() if k.lower() == "x-amz-target"), "")
        if answer[0] == 200 and target.endswith(_SCHEDULED):
            self.scheduler.settle()
        return answer


class FargateKit:
    """The kit's ``FakeCloud`` for ``ecs-fargate``: moto behind :class:`SchedulingProxy`."""

    failure_points = tuple(STEPS)

    def __init__(self, url: str) -> None:
        self.ec2 = plain_client(url)
        self.elb = plain_client(url, service="elbv2")
        self.ecs = plain_client(url, service="ecs")
        self.secrets = plain_client(url, service="secretsmanager")
        self.logs = plain_client(url, service="logs")
        self.iam = plain_client(url, service="iam")
        self.s3 = plain_client(url, service="s3")
        self.plan = FaultPlan({**STEPS, **PRIVATE_STEPS})
        self.proxy = SchedulingProxy(url, self.plan, Scheduler(url))
        self.endpoint = self.proxy.url

    def resources(self) -> set[str]:
        """EC2's (VPC endpoints too) and ELBv2's live resources, and ECS's, Secrets
        Manager's, Logs' and IAM's."""
        found = live_resources(self.ec2, self.elb)
        found |= {
            e["VpcEndpointId"]
            for e in self.ec2.describe_vpc_endpoints()["VpcEndpoints"]
            if e["State"].lower() != "deleted"
        }
        clusters = self.ecs.list_clusters()["clusterArns"]
        for cluster in (
            self.ecs.describe_clusters(clusters=clusters)["clusters"] if clusters else []
        ):
            if cluster["status"] != "ACTIVE":
                continue
            arn = cluster["clusterArn"]
            found.add(arn)
            services = self.ecs.list_services(cluster=arn)["serviceArns"]
            if services:
                found |= {
                    s["serviceArn"]
                    for s in self.ecs.describe_services(cluster=arn, services=services)["services"]
                    if s["status"] != "INACTIVE"
                }
            found |= set(self.ecs.list_tasks(cluster=arn, desiredStatus="RUNNING")["taskArns"])
        found |= set(self.ecs.list_task_definitions(status="ACTIVE")["taskDefinitionArns"])
        found |= {s["ARN"] for s in self.secrets.list_secrets()["SecretList"]}
        found |= {g["arn"] for g in self.logs.describe_log_groups()["logGroups"]}
        found |= {r["Arn"] for r in self.iam.list_roles()["Roles"]}
        return found

    def arm(self, step: str, fault: Fault, victim: Callable[[], int] | None = None) -> None:
        self.plan.arm(step, fault, victim)

    def struck(self, step: str) -> bool:
        return any(strike.step == step for strike in self.plan.struck)

    def foreign_vm(self) -> tuple[str, str]:
        """A service the user made by hand (no tags of ours), its first task's public IP."""
        cluster = self.ecs.create_cluster(clusterName="users")["cluster"]["clusterArn"]
        definition = self.ecs.register_task_definition(
            family="users-app",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
            containerDefinitions=[{"name": "app", "image": "nginx", "memory": 512}],
        )["taskDefinition"]["taskDefinitionArn"]
        subnet = self.ec2.describe_subnets()["Subnets"][0]
        (default,) = self.ec2.describe_security_groups(
            Filters=[
                {"Name": "vpc-id", "Values": [subnet["VpcId"]]},
                {"Name": "group-name", "Values": ["default"]},
            ]
        )["SecurityGroups"]
        name = f"app-{len(self.ecs.list_services(cluster=cluster)['serviceArns'])}"
        # through the proxy's scheduler, so its task runs as a service's does
        users = plain_client(self.endpoint, service="ecs")
        service = users.create_service(
            cluster=cluster,
            serviceName=name,
            taskDefinition=definition,
            desiredCount=1,
            launchType="FARGATE",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [subnet["SubnetId"]],
                    "securityGroups": [default["GroupId"]],
                    "assignPublicIp": "ENABLED",
                }
            },
            tags=[{"key": "env", "value": "prod"}],
        )["service"]
        arns = self.ecs.list_tasks(cluster=cluster)["taskArns"]
        tasks = self.ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
        (task,) = [t for t in tasks if t["group"] == f"service:{name}"]
        (eni,) = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[_eni(task)])[
            "NetworkInterfaces"
        ]
        return service["serviceArn"], eni["Association"]["PublicIp"]


@dataclass(frozen=True)
class PrivateVpc:
    """A VPC as a private deployment has it: per zone a public subnet (0.0.0.0/0 to an
    internet gateway: in zone a by its own route table, in zone b by the main table's)
    and a private one (a table without 0.0.0.0/0, or with a NAT gateway's)."""

    vpc_id: str
    public: dict[str, str]  # zone -> subnet
    private: dict[str, str]
    private_table: str

    @property
    def private_subnets(self) -> str:
        return ",".join(self.private[z] for z in sorted(self.private))


def private_vpc(ec2: Any, nat: bool = False, zones: tuple[str, ...] = ("a", "b")) -> PrivateVpc:
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    # what private DNS names of interface endpoints need (DNS support is on by default)
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    (main,) = ec2.describe_route_tables(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc]},
            {"Name": "association.main", "Values": ["true"]},
        ]
    )["RouteTables"]
    ec2.create_route(
        RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw
    )
    public_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    private_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    public, private = {}, {}
    for n, zone in enumerate(f"{REGION}{z}" for z in zones):
        public[zone] = ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.20.{n}.0/24", AvailabilityZone=zone
        )["Subnet"]["SubnetId"]
        private[zone] = ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.20.{100 + n}.0/24", AvailabilityZone=zone
        )["Subnet"]["SubnetId"]
        ec2.associate_route_table(RouteTableId=private_table, SubnetId=private[zone])
        if n == 0:  # the others are public by the main table
            ec2.associate_route_table(RouteTableId=public_table, SubnetId=public[zone])
    if nat:
        address = ec2.allocate_address(Domain="vpc")["AllocationId"]
        gateway = ec2.create_nat_gateway(SubnetId=next(iter(public.values())), AllocationId=address)
        ec2.create_route(
            RouteTableId=private_table,
            DestinationCidrBlock="0.0.0.0/0",
            NatGatewayId=gateway["NatGateway"]["NatGatewayId"],
        )
    return PrivateVpc(vpc, public, private, private_table)
