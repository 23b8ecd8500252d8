"""Exit servers as ECS Fargate tasks behind an ALB or NLB (``--provider ecs-fargate``).

One host is one ECS service of N tasks and everything it needs: two security groups
(the load balancer's, and the tasks' whose data ports admit only it), the token and
the TLS key as Secrets Manager secrets, a CloudWatch log group, an execution role
that may read exactly those secrets and write to that log group, a cluster (unless
``--cluster`` names one of the user's), a task definition, and the load balancer with
its ``ip`` target groups and listeners (``providers.ec2_lb``). Each is tagged with our
host id in the call that creates it, so ``purge`` finds all of them without local
state; names derive from the host id too (IAM lists no tags, so the role is found by
name, then its tags are checked).

The task runs a public Python image; its command fetches ``tunnel-core.pyz`` and
checks the pinned SHA-256 with the same script the cloud-init runs, writes the key
the secret hands it to a file and starts the engine. The secrets reach the container
only as ``valueFrom`` references that ECS resolves: never in the task definition.

The user-data inletsctl renders is not used (no VM boots); its release URL and
SHA-256 are. EC2's session, clients, security groups and retries are inherited.
Tasks without public IPs (and their VPC endpoints) are ``providers.fargate_network``'s;
an engine in the user's S3 bucket (and the task role that reads it) ``fargate_s3``'s.
"""

from __future__ import annotations

import builtins
import functools
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from cloud_init import fetch_script
from providers import ec2_https, ec2_lb, fargate_network as net, fargate_s3
from providers.ec2 import EC2Provider
from providers.ec2_errors import aws_errors
from providers.ec2_rules import load_balancer_permissions, member_permissions
from providers.errors import HostNotFound, InvalidSpec, ProviderAPIError
from providers.kit import is_ours, require_ours
from providers.models import (
    HOST_ID_TAG,
    Engine,
    Host,
    HostSpec,
    HostStatus,
    ProviderFacts,
    ServerSpec,
    TunnelMode,
)

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import TagTypeDef
    from mypy_boto3_ecs import ECSClient

#: A public image with python3 (3.10+ is all tunnel-core.pyz needs); no registry login.
IMAGE = "public.ecr.aws/docker/library/python:3.12-slim"
#: The smallest Fargate size: a quarter vCPU and 512 MiB.
CPU, MEMORY = "256", "512"
CONTAINER = "tunnel-core"
#: Where the container keeps the engine and its TLS files (the image's /tmp is writable).
WORKDIR = "/tmp/tunnel-core"
#: Environment variables of the container: the engine's token, and the key the command
#: writes to a file (both from secrets), the certificate and the fetch script (public).
TOKEN_ENV, KEY_ENV, CERT_ENV, FETCH_ENV = "INLETS_TOKEN", "TLS_KEY", "TLS_CERT", "FETCH_PY"
#: The region the fetch script signs an ``s3://`` GET for (the task's, the bucket's).
REGION_ENV = "AWS_REGION"
#: Seconds the service ignores failed health checks while a task downloads the engine.
GRACE_S = 60
_PATH = "/inletsctl/"
#: The trust of a task's roles (Fargate's, and ECS Anywhere's client's): ECS's tasks
#: assume them.
TASKS_ASSUME_ROLE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
_POLICY = "inletsctl-task-execution"
#: ECS states of a service that is still there
_LIVE = ("ACTIVE", "DRAINING")


@dataclass(frozen=True)
class Names:
    """Every name derives from the host id, so ``purge`` can find what lists no tags."""

    host_id: str

    @property
    def base(self) -> str:
        return f"inletsctl-{self.host_id}"

    @property
    def task_role(self) -> str:
        """The role the container itself runs as (``--release-url s3://``): it reads the
        engine; the execution role (``base``) is ECS's, for the secrets and the logs."""
        return f"{self.base}-task"

    @property
    def log_group(self) -> str:
        return f"/inletsctl/{self.host_id}"

    def secret(self, what: str) -> str:
        return f"inletsctl/{self.host_id}/{what}"


def server_argv(server: ServerSpec, workdir: str = WORKDIR) -> list[str]:
    """The engine's arguments, as the systemd unit gives them on a VM.

    No ``--allow-ips``: the load balancer's security group applies it, and the engine
    sees the balancer's addresses, which that list would refuse.
    """
    tls = ["--token-env", TOKEN_ENV, "--tls-cert", f"{workdir}/tls.crt"]
    tls += ["--tls-key", f"{workdir}/tls.key"]
    control = ["--control-port", str(server.control_port)]
    if server.mode is TunnelMode.TCP:
        return ["tcp", "server", *control, *tls, "--allow-ports", server.allow_ports]
    return ["http", "server", "--port", str(server.data_port), *control, *tls]


def container_command(server: ServerSpec, workdir: str = WORKDIR) -> list[str]:
    """``sh -c``: fetch and check the engine, write the TLS files, exec the server.

    The key is written with umask 077 and dropped from the environment before the
    engine starts; the token stays an environment variable (``--token-env``).
    """
    pyz = f"{workdir}/tunnel-core.pyz"
    script = (
        f'mkdir -p {workdir} && python3 -I -c "${FETCH_ENV}" "$0" "$1" {pyz} && '
        f'printf %s "${CERT_ENV}" > {workdir}/tls.crt && '
        f'(umask 077 && printf %s "${KEY_ENV}" > {workdir}/tls.key) && unset {KEY_ENV} && '
        f"exec python3 -I -S {pyz} {shlex.join(server_argv(server, workdir))}"
    )
    return ["sh", "-c", script, server.release_url, server.artifact_sha256]


def task_definition(
    spec: HostSpec,
    *,
    execution_role: str,
    secrets: Mapping[str, str],
    log_group: str,
    region: str,
    data_ports: Sequence[int],
    tags: Sequence[Mapping[str, str]],
    task_role: str = "",
) -> dict[str, Any]:
    """RegisterTaskDefinition's arguments; ``secrets`` maps env name -> secret ARN.

    With a ``task_role`` (the engine is an S3 object), the container gets its region:
    the fetch script signs for it."""
    server = spec.server
    ports = sorted({server.control_port, *data_ports})
    environment = [
        {"name": CERT_ENV, "value": server.tls_cert_pem},
        {"name": FETCH_ENV, "value": fetch_script()},
    ]
    roles = {"executionRoleArn": execution_role}
    if task_role:
        roles["taskRoleArn"] = task_role
        environment.append({"name": REGION_ENV, "value": region})
    return {
        "family": Names(spec.host_id).base,
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": CPU,
        "memory": MEMORY,
        **roles,
        "runtimePlatform": {"operatingSystemFamily": "LINUX", "cpuArchitecture": "X86_64"},
        "containerDefinitions": [
            {
                "name": CONTAINER,
                "image": spec.image or IMAGE,
                "essential": True,
                "memory": int(MEMORY),  # all of the task's: it is the only container
                "command": container_command(server),
                "environment": environment,
                "secrets": [{"name": name, "valueFrom": arn} for name, arn in secrets.items()],
                "portMappings": [
                    {"containerPort": p, "hostPort": p, "protocol": "tcp"} for p in ports
                ],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": "inletsctl",
                    },
                },
            }
        ],
        "tags": list(tags),
    }


def execution_policy(
    secret_arns: Sequence[str], log_group_arn: str, repository: net.Repository | None = None
) -> dict[str, Any]:
    """Read these secrets and write to this log group; nothing else, but pull the image
    from its private ``repository`` (a login token is never scoped to a repository)."""
    pull: list[dict[str, Any]] = []
    if repository is not None:
        pull = [
            {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": repository.arn,
            },
        ]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "secretsmanager:GetSecretValue",
                "Resource": sorted(secret_arns),
            },
            {
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{log_group_arn}:*",
            },
            *pull,
        ],
    }


def _ecs_tags(items: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in items}


class FargateProvider(EC2Provider):
    """Exit servers as Fargate tasks of one ECS service behind one load balancer."""

    name: ClassVar[str] = "ecs-fargate"
    facts: ClassVar[ProviderFacts] = ProviderFacts(
        default_region="eu-west-1",
        default_plan=f"{CPU}/{MEMORY}",
        default_image=IMAGE,
        # No VM reads the user-data; it is rendered (for its release URL and pin) only.
        user_data_limit=1 << 20,
        plans=(f"{CPU}/{MEMORY}",),
    )
    #: No VM boots: the user-data is not rendered (an ``s3://`` release could not be);
    #: the tasks download the engine themselves, so the release URL and pin still come.
    consumes_user_data: ClassVar[bool] = False
    fetches_artifact: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: "service:region" -> boto3 client, for ECS, Secrets Manager, Logs and IAM
        self._others: dict[str, Any] = {}

    def _aws(self, service: str, region: str) -> Any:
        key = f"{service}:{region}"
        if key not in self._others:
            self._check_region(region)
            self._others[key] = self._session.client(
                service,  # type: ignore[call-overload]
                region_name=region,
                endpoint_url=self._endpoint_url,
                config=self._botocore_config,
            )
        return self._others[key]

    @property
    def ecs(self) -> ECSClient:
        """The boto3 ECS client of the configured region (register event hooks here)."""
        client: ECSClient = self._aws("ecs", self.region)
        return client

    # -- create ---------------------------------------------------------------------------

    def create(self, spec: HostSpec) -> Host:
        """Security groups (and VPC endpoints), secrets, log group, roles, cluster, task
        definition, load balancer with target groups and listeners, then the service that
        starts the tasks and registers them (ECS needs the listeners first). Every check,
        the subnets, the image and an ``s3://`` engine's hash, comes before the first."""
        if not spec.extra.get("load_balancer"):
            raise InvalidSpec(
                "ecs-fargate: the tasks need a load balancer in front",
                hint="Pass --load-balancer nlb (TCP) or alb (HTTP), and --count N.",
            )
        group = ec2_lb.group_of(spec.extra)
        assert group is not None  # a load balancer was given
        routes = ec2_lb.routes(spec.server, group.kind)
        https = ec2_https.https_of(spec.extra, group.kind)
        if spec.server.engine is not Engine.TUNNEL_CORE:
            raise InvalidSpec("ecs-fargate runs the tunnel-core engine only", hint="Drop --engine.")
        if not spec.server.release_url or not spec.server.artifact_sha256:
            raise InvalidSpec(
                "ecs-fargate: no release URL and SHA-256 of tunnel-core.pyz",
                hint="Pass --release-url or set INLETSCTL_RELEASE_URL.",
            )
        if spec.zone or spec.extra.get("subnet_id"):
            raise InvalidSpec(
                "ecs-fargate: the tasks spread over the zones themselves",
                hint="Drop --zone and --subnet-id; --vpc-id (or --private-subnets) picks "
                "the network.",
            )
        opts = net.options(spec.extra)
        net.check(opts, group)
        # without public IPs, clients reach the control port through the NLB as well
        forwarded = routes if opts.public_ip else [*routes, net.control_route(spec.server)]
        net.check_target_groups(forwarded)
        engine_object = fargate_s3.parse(spec.server.release_url)
        region = spec.region or self.region
        client = self._client(region)
        where = ec2_https.placement(self.route53(), https) if https else None
        names = Names(spec.host_id)
        image = spec.image or IMAGE
        network = net.resolve(client, spec.extra, opts)
        if not network.internet:
            with aws_errors("find the account"):
                account = self._aws("sts", region).get_caller_identity()["Account"]
            net.check_image(image, network, region, account)
        endpoints = (
            net.missing_services(client, network.vpc_id, region) if opts.create_endpoints else []
        )
        if engine_object is not None:
            fargate_s3.check_object(
                self._aws("s3", region), engine_object, spec.server.artifact_sha256
            )
        # The group tag (the kind) on all but the security groups, which EC2's own
        # removal would otherwise take for an instance group's.
        tags: builtins.list[TagTypeDef] = [
            *self._tags(spec),
            {"Key": ec2_lb.GROUP_TAG, "Value": group.kind},
        ]
        ecs_tags: builtins.list[dict[str, str]] = [
            {"key": t["Key"], "value": t["Value"]} for t in tags
        ]
        vpc_id = network.vpc_id
        data_ports = [r.target_port for r in routes]
        lb_rules = load_balancer_permissions(
            spec.server, [r.port for r in routes] + ([ec2_https.PORT] if https else [])
        )
        lb_group = self._security_group(
            client, spec, vpc_id, "-lb",
            lb_rules if opts.public_ip else [*lb_rules, net.control_permission(spec.server)],
            self._tags(spec),
        )  # fmt: skip
        task_group = self._security_group(
            client, spec, vpc_id, "",
            member_permissions(spec.server, data_ports, lb_group)
            if opts.public_ip
            else net.private_member_permissions(spec.server, data_ports, lb_group),
            self._tags(spec),
        )  # fmt: skip
        if endpoints:
            interface = [s for s in endpoints if s != net.GATEWAY_SERVICE]
            endpoint_group = (
                self._security_group(
                    client,
                    spec,
                    vpc_id,
                    "-endpoints",
                    net.endpoint_permissions(task_group),
                    self._tags(spec),
                )
                if interface
                else ""
            )
            net.create_endpoints(
                client, network=network, region=region, host_id=spec.host_id,
                services=endpoints, security_group=endpoint_group, tags=tags,
            )  # fmt: skip
        secrets = self._aws("secretsmanager", region)
        arns: dict[str, str] = {}
        for env, what, value in (
            (TOKEN_ENV, "token", spec.server.token),
            (KEY_ENV, "tls-key", spec.server.tls_key_pem),
        ):
            with aws_errors(f"store the {what} in Secrets Manager"):
                arns[env] = secrets.create_secret(
                    Name=names.secret(what),
                    Description=f"inletsctl exit server {spec.host_id}: {what}",
                    SecretString=value,
                    Tags=tags,
                )["ARN"]
        logs = self._aws("logs", region)
        with aws_errors("create the log group"):
            logs.create_log_group(
                logGroupName=names.log_group, tags={t["Key"]: t["Value"] for t in tags}
            )
            (found,) = [
                g
                for g in logs.describe_log_groups(logGroupNamePrefix=names.log_group)["logGroups"]
                if g["logGroupName"] == names.log_group
            ]
        log_arn = found["arn"].removesuffix(":*")
        policy = execution_policy(list(arns.values()), log_arn, net.repository(image))
        role = self._role(
            region, names.base, tags, policy,
            f"inletsctl exit server {names.host_id}: reads its secrets",
        )  # fmt: skip
        task_role = (
            self._role(
                region,
                names.task_role,
                tags,
                fargate_s3.read_policy(engine_object),
                f"inletsctl exit server {names.host_id}: reads {engine_object.url}",
                policy_name=fargate_s3.POLICY,
            )
            if engine_object is not None
            else ""
        )
        cluster = self._cluster(region, spec, names, ecs_tags)
        ecs = self._aws("ecs", region)
        definition = task_definition(
            spec,
            execution_role=role,
            secrets=arns,
            log_group=names.log_group,
            region=region,
            data_ports=data_ports,
            tags=ecs_tags,
            task_role=task_role,
        )
        with aws_errors("register the task definition"):
            task_arn = ecs.register_task_definition(**definition)["taskDefinition"][
                "taskDefinitionArn"
            ]
        elb = self._elb(region)
        lb = ec2_lb.create_load_balancer(
            elb,
            host_id=spec.host_id,
            kind=group.kind,
            subnets=list(network.lb_subnets),
            security_group=lb_group,
            tags=tags,
        )
        target_groups = ec2_lb.forward(
            elb, lb, host_id=spec.host_id, vpc_id=vpc_id, routes=forwarded, targets=[],
            target_type="ip", health_port=spec.server.control_port, tags=tags,
        )  # fmt: skip
        if where is not None:
            self.secure(where, lb, spec.host_id, target_groups[routes[0].port], tags, region)
        with aws_errors("create the service"):
            service = ecs.create_service(
                cluster=cluster,
                serviceName=names.base,
                taskDefinition=task_arn,
                desiredCount=group.count,
                launchType="FARGATE",
                networkConfiguration={
                    "awsvpcConfiguration": {
                        "subnets": list(network.task_subnets),
                        "securityGroups": [task_group],
                        # with one: the image and the engine come from the internet, and
                        # every tunnel client connects to every task's control port
                        "assignPublicIp": "ENABLED" if opts.public_ip else "DISABLED",
                    }
                },
                loadBalancers=[
                    {
                        "targetGroupArn": target_groups[r.port],
                        "containerName": CONTAINER,
                        "containerPort": r.target_port,
                    }
                    for r in forwarded
                ],
                healthCheckGracePeriodSeconds=GRACE_S,
                propagateTags="SERVICE",
                enableECSManagedTags=True,
                # idempotent: a retried create starts no second service
                clientToken=names.base,
                tags=ecs_tags,
            )["service"]
        return self._service_host(region, service, lb)

    def _role(
        self,
        region: str,
        name: str,
        tags: builtins.list[Any],
        policy: Mapping[str, Any],
        description: str,
        policy_name: str = _POLICY,
    ) -> str:
        """A role ECS tasks may assume, with its one inline ``policy``; its ARN."""
        iam = self._aws("iam", region)
        what = "task role" if name.endswith("-task") else "task execution role"
        with aws_errors(f"create the {what}"):
            arn: str = iam.create_role(
                RoleName=name,
                Path=_PATH,
                AssumeRolePolicyDocument=json.dumps(TASKS_ASSUME_ROLE),
                Description=description,
                Tags=tags,
            )["Role"]["Arn"]
        with aws_errors(f"give the {what} its policy"):
            iam.put_role_policy(
                RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policy)
            )
        return arn

    def _cluster(
        self, region: str, spec: HostSpec, names: Names, ecs_tags: builtins.list[Any]
    ) -> str:
        """The user's ``--cluster`` (it must exist, and is never deleted) or our own."""
        ecs = self._aws("ecs", region)
        given = spec.extra.get("cluster", "")
        if given:
            with aws_errors("find the cluster"):
                found = ecs.describe_clusters(clusters=[given])["clusters"]
            if not any(c.get("status") == "ACTIVE" for c in found):
                raise InvalidSpec(
                    f"ecs-fargate: no active cluster {given!r} in {region}",
                    hint="Pass the name of an existing cluster to --cluster, or drop it.",
                )
            return str(found[0]["clusterArn"])
        with aws_errors("create the cluster"):
            made: str = ecs.create_cluster(
                clusterName=names.base, capacityProviders=["FARGATE"], tags=ecs_tags
            )["cluster"]["clusterArn"]
        return made

    # -- status / list --------------------------------------------------------------------

    def _services(self, region: str) -> builtins.list[tuple[str, dict[str, str], Any]]:
        """(cluster ARN, tags, service) of every service of ours in any cluster."""
        ecs = self._aws("ecs", region)
        found = []
        with aws_errors("list the ECS services"):
            clusters = [a for p in ecs.get_paginator("list_clusters").paginate()
                        for a in p["clusterArns"]]  # fmt: skip
            for cluster in clusters:
                arns = [a for p in ecs.get_paginator("list_services").paginate(cluster=cluster)
                        for a in p["serviceArns"]]  # fmt: skip
                for start in range(0, len(arns), 10):  # ECS describes 10 at a time
                    answer = ecs.describe_services(
                        cluster=cluster, services=arns[start : start + 10], include=["TAGS"]
                    )
                    for service in answer["services"]:
                        tags = _ecs_tags(service.get("tags", []))
                        if is_ours(tags) and tags.get(HOST_ID_TAG):
                            found.append((cluster, tags, service))
        return found

    def _tasks(self, region: str, cluster: str, service: Any) -> builtins.list[dict[str, str]]:
        """The service's tasks that have not stopped: id, public and private IP (where
        known), zone."""
        ecs = self._aws("ecs", region)
        with aws_errors("list the tasks"):
            arns = ecs.list_tasks(cluster=cluster, serviceName=service["serviceName"])["taskArns"]
            tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
        # ECS names a service's tasks by their group; filter on it, not on trust.
        mine = [
            t
            for t in tasks
            if t.get("group") == f"service:{service['serviceName']}"
            and t.get("lastStatus") != "STOPPED"
        ]
        enis = {
            t["taskArn"]: d["value"]
            for t in mine
            for a in t.get("attachments", [])
            for d in a.get("details", [])
            if d["name"] == "networkInterfaceId"
        }
        ips: dict[str, str] = {}
        private: dict[str, str] = {}
        if enis:
            with aws_errors("find the tasks' addresses"):
                for eni in self._client(region).describe_network_interfaces(
                    NetworkInterfaceIds=sorted(enis.values())
                )["NetworkInterfaces"]:
                    ips[eni["NetworkInterfaceId"]] = eni.get("Association", {}).get("PublicIp", "")
                    private[eni["NetworkInterfaceId"]] = eni.get("PrivateIpAddress", "")
        return [
            {
                "id": t["taskArn"].rsplit("/", 1)[-1],
                "ip": ips.get(enis.get(t["taskArn"], ""), ""),
                "private_ip": private.get(enis.get(t["taskArn"], ""), ""),
                "zone": t.get("availabilityZone", ""),
                "status": t.get("lastStatus", ""),
            }
            for t in sorted(mine, key=lambda t: t["taskArn"])
        ]

    def _service_host(self, region: str, service: Any, lb: Any) -> Host:
        """The service as one host: ``id`` its ARN, ``ip`` the first task's, or the load
        balancer's DNS name when the tasks have no public IP (``control``: clients reach
        the control port through it; ``member_ips`` are then the tasks' private IPs)."""
        cluster = service["clusterArn"]
        tags = _ecs_tags(service.get("tags", []))
        tasks = self._tasks(region, cluster, service)
        network = service.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
        private = network.get("assignPublicIp") == "DISABLED"
        address = "private_ip" if private else "ip"
        ready = [t for t in tasks if t["status"] == "RUNNING" and t[address]]
        state = service.get("status", "")
        lb_state = lb["State"]["Code"] if lb else ""
        if state == "INACTIVE":
            status = HostStatus.DELETED
        elif state == "DRAINING":
            status = HostStatus.DELETING
        elif lb_state == "failed":
            status = HostStatus.FAILED
        elif len(ready) >= service["desiredCount"] > 0 and lb_state in (
            "active",
            "active_impaired",
        ):
            status = HostStatus.ACTIVE
        else:
            status = HostStatus.CREATING
        dns_name = lb.get("DNSName", "") if lb else ""
        ip = (dns_name if ready else "") if private else next((t["ip"] for t in ready), "")
        return Host(
            id=service["serviceArn"],
            name=tags.get("Name", service["serviceName"]),
            provider=self.name,
            region=region,
            status=status,
            ip=ip,
            additional={
                "host_id": tags.get(HOST_ID_TAG, ""),
                "load_balancer": tags.get(ec2_lb.GROUP_TAG, ""),
                "dns_name": dns_name,
                "control": "load_balancer" if private else "",
                "provider_status": f"service {state}, load balancer {lb_state or 'none'}",
                "members": ",".join(t["id"] for t in tasks),
                "member_ips": ",".join(t[address] for t in tasks),
                "zones": ",".join(t["zone"] for t in tasks),
                "cluster": cluster,
                "task_definition": service.get("taskDefinition", ""),
                "desired_count": str(service["desiredCount"]),
                "security_group_id": ",".join(network.get("securityGroups", [])),
                "vpc_id": lb.get("VpcId", "") if lb else "",
            },
        )

    def _hosts(self, region: str) -> builtins.list[Host]:
        services = self._services(region)
        if not services:
            return []
        balancers = ec2_lb.load_balancers(self._elb(region))
        return [
            self._service_host(region, service, balancers.get(tags[HOST_ID_TAG]))
            for _, tags, service in services
        ]

    def status(self, host_id: str) -> Host:
        """By the service's ARN (``Host.id``) or our host id."""
        for host in self._hosts(self.region):
            if host_id in (host.id, host.additional["host_id"]):
                return host
        raise HostNotFound(f"ecs-fargate: no inletsctl service {host_id} in {self.region}")

    def list(self) -> builtins.list[Host]:
        return self._hosts(self.region)

    def console_output(self, host_id: str) -> str:
        """The tasks' output, from the log group the container logs to."""
        host = self.status(host_id)
        logs = self._aws("logs", host.region)
        lines = []
        with aws_errors("read the log group"):
            pages = logs.get_paginator("filter_log_events").paginate(
                logGroupName=Names(host.additional["host_id"]).log_group
            )
            for page in pages:
                lines += [f"{e.get('logStreamName', '')}: {e['message']}" for e in page["events"]]
        return "\n".join(lines)

    # -- delete ---------------------------------------------------------------------------

    def delete(
        self, host_id: str | None = None, ip: str | None = None, force: bool = False
    ) -> None:
        """By the service's ARN, our host id, any task's IP (or the load balancer's name
        when clients reach the tasks through it): the whole group.

        A service ARN without our tag raises NotOurs; forced, that service alone is
        scaled to 0 and deleted (its cluster, task definition and the rest stay).
        """
        if not host_id and not ip:
            raise InvalidSpec("ecs-fargate: delete needs a service ARN, host id or IP")
        for host in self._hosts(self.region):
            ips = [*host.additional["member_ips"].split(","), host.ip]
            if (host_id and host_id in (host.id, host.additional["host_id"])) or (ip and ip in ips):
                self.purge(host.additional["host_id"])
                return
        if host_id and host_id.startswith("arn:") and ":service/" in host_id:
            self._delete_unowned_service(host_id, force)
            return
        if host_id and self.purge(host_id):
            return
        raise HostNotFound(f"ecs-fargate: no inletsctl host {host_id or ip} in {self.region}")

    def _delete_unowned_service(self, arn: str, force: bool) -> None:
        """A service ARN that is not one of ours: someone else's, or none."""
        path = arn.split(":service/", 1)[1].split("/")
        if len(path) != 2:  # the old ARN format names no cluster
            raise HostNotFound(f"ecs-fargate: no inletsctl service {arn}")
        cluster, name = path
        ecs = self._aws("ecs", self.region)
        with aws_errors("find the service"):
            found = ecs.describe_services(cluster=cluster, services=[name], include=["TAGS"])
        live = [s for s in found["services"] if s.get("status") in _LIVE]
        if not live:
            raise HostNotFound(f"ecs-fargate: no service {arn} in {self.region}")
        require_ours(self.name, f"service {arn}", _ecs_tags(live[0].get("tags", [])), force)
        self._remove_service(self.region, live[0]["clusterArn"], live[0])

    def purge(self, host_id: str) -> builtins.list[str]:
        """Everything tagged ``host_id``: the service (scaled to 0, its tasks stopped, then
        deleted) while the balancer still sends to it, the load balancer's parts, the
        task definitions, our VPC endpoints, the security groups (once the tasks' and the
        endpoints' interfaces are gone), the secrets, the log group, the roles, and our
        cluster last."""
        region = self.region
        ecs = self._aws("ecs", region)
        removed: builtins.list[str] = []
        for cluster, tags, service in self._services(region):
            if tags[HOST_ID_TAG] == host_id and service["status"] in _LIVE:
                removed += self._remove_service(region, cluster, service)
        elb = self._elb(region)
        removed += ec2_lb.remove(elb, ec2_lb.find(elb, [host_id]), self._retry)
        acm = self._aws("acm", region)
        removed += ec2_https.remove(acm, self.route53, {host_id}, self._retry)
        names = Names(host_id)
        with aws_errors("list the task definitions"):
            pages = ecs.get_paginator("list_task_definitions").paginate(
                familyPrefix=names.base, status="ACTIVE"
            )
            definitions = [a for p in pages for a in p["taskDefinitionArns"]]
        for arn in definitions:
            with aws_errors("deregister the task definition"):
                answer = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
                if _ecs_tags(answer.get("tags", [])).get(HOST_ID_TAG) == host_id:
                    ecs.deregister_task_definition(taskDefinition=arn)
                    removed.append(f"task definition {arn}")
        client = self._client(region)
        # their interfaces hold the endpoints' group, which names the tasks'
        removed += net.remove_endpoints(client, host_id, self._retry)
        with aws_errors("find the security groups"):
            groups = self._groups(client, {host_id})
        removed += self._remove(client, [], groups)
        removed += self._remove_secrets(region, host_id)
        removed += self._remove_log_group(region, names)
        for role in (names.task_role, names.base):
            removed += self._remove_role(region, names.host_id, role)
        removed += self._remove_cluster(region, names)
        return removed

    def _remove_service(self, region: str, cluster: str, service: Any) -> builtins.list[str]:
        ecs = self._aws("ecs", region)
        name = service["serviceName"]
        with aws_errors("scale the service to 0"):
            if service["status"] == "ACTIVE":
                ecs.update_service(cluster=cluster, service=name, desiredCount=0)
        for task in self._tasks(region, cluster, service):
            with aws_errors("stop a task"):
                ecs.stop_task(cluster=cluster, task=task["id"], reason="inletsctl delete")
        self._retry(
            "delete the service",
            functools.partial(ecs.delete_service, cluster=cluster, service=name, force=True),
            set(),
            {"ServiceNotFoundException", "ServiceNotActiveException"},
        )
        return [f"service {service['serviceArn']}"]

    def _remove_secrets(self, region: str, host_id: str) -> builtins.list[str]:
        secrets = self._aws("secretsmanager", region)
        with aws_errors("list the secrets"):
            pages = secrets.get_paginator("list_secrets").paginate(
                Filters=[
                    {"Key": "tag-key", "Values": [HOST_ID_TAG]},
                    {"Key": "tag-value", "Values": [host_id]},
                ]
            )
            found = [s for p in pages for s in p["SecretList"]]
        removed = []
        for secret in found:
            tags = {t["Key"]: t.get("Value", "") for t in secret.get("Tags", [])}
            if is_ours(tags) and tags.get(HOST_ID_TAG) == host_id:
                self._retry(
                    "delete the secret",
                    functools.partial(
                        secrets.delete_secret,
                        SecretId=secret["ARN"],
                        ForceDeleteWithoutRecovery=True,
                    ),
                    set(),
                    {"ResourceNotFoundException"},
                )
                removed.append(f"secret {secret['Name']}")
        return removed

    def _remove_log_group(self, region: str, names: Names) -> builtins.list[str]:
        logs = self._aws("logs", region)
        with aws_errors("find the log group"):
            groups = logs.describe_log_groups(logGroupNamePrefix=names.log_group)["logGroups"]
            ours = [
                g
                for g in groups
                if g["logGroupName"] == names.log_group
                and logs.list_tags_log_group(logGroupName=g["logGroupName"])
                .get("tags", {})
                .get(HOST_ID_TAG)
                == names.host_id
            ]
        for group in ours:
            self._retry(
                "delete the log group",
                functools.partial(logs.delete_log_group, logGroupName=group["logGroupName"]),
                set(),
                {"ResourceNotFoundException"},
            )
        return [f"log group {g['logGroupName']}" for g in ours]

    def _remove_role(self, region: str, host_id: str, name: str) -> builtins.list[str]:
        """The role ``name`` (IAM lists no tags: found by name), if its tags are ours."""
        iam = self._aws("iam", region)
        try:
            with aws_errors("find the role"):
                role = iam.get_role(RoleName=name)["Role"]
        except ProviderAPIError as exc:
            if exc.code == "NoSuchEntity":
                return []
            raise
        tags = {t["Key"]: t["Value"] for t in role.get("Tags", [])}
        if not is_ours(tags) or tags.get(HOST_ID_TAG) != host_id:
            return []
        with aws_errors("list the role's policies"):
            policies = iam.list_role_policies(RoleName=name)["PolicyNames"]
        for policy in policies:
            self._retry(
                "delete the role's policy",
                functools.partial(iam.delete_role_policy, RoleName=name, PolicyName=policy),
                set(),
                {"NoSuchEntity"},
            )
        self._retry(
            "delete the role",
            functools.partial(iam.delete_role, RoleName=name),
            {"DeleteConflict"},
            {"NoSuchEntity"},
        )
        return [f"role {name}"]

    def _remove_cluster(self, region: str, names: Names) -> builtins.list[str]:
        """Our own cluster only: one ``--cluster`` named carries no tag of ours."""
        ecs = self._aws("ecs", region)
        with aws_errors("find the cluster"):
            found = ecs.describe_clusters(clusters=[names.base], include=["TAGS"])["clusters"]
        ours = [
            c
            for c in found
            if c.get("status") == "ACTIVE"
            and _ecs_tags(c.get("tags", [])).get(HOST_ID_TAG) == names.host_id
        ]
        for cluster in ours:
            self._retry(
                "delete the cluster",
                functools.partial(ecs.delete_cluster, cluster=cluster["clusterArn"]),
                # stopped tasks and a deleted service take a while to leave it
                {"ClusterContainsTasksException", "ClusterContainsServicesException"},
                {"ClusterNotFoundException"},
            )
        return [f"cluster {c['clusterName']}" for c in ours]
