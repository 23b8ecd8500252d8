"""Where and from what an EC2 exit server boots: AMI, architecture, VPC, subnet, zone.

All of it is decided with read-only calls before anything is created, so a bad
plan, zone, image or subnet fails with nothing to clean up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from providers.errors import InvalidSpec

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import SubnetTypeDef

#: Canonical's AWS account: the owner of the official Ubuntu AMIs.
CANONICAL_OWNER = "099720109477"
#: ``--image`` names we resolve to the newest matching Canonical AMI; ``{arch}`` is
#: amd64 or arm64. ``hvm-ssd*`` covers both the gp2 and the newer gp3 image series.
IMAGE_PATTERNS: Mapping[str, str] = {
    "ubuntu-22.04": "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-{arch}-server-*",
    "ubuntu-24.04": "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-{arch}-server-*",
}
_UBUNTU_ARCH = {"x86_64": "amd64", "arm64": "arm64"}


@dataclass(frozen=True)
class Placement:
    image_id: str
    architecture: str  # "x86_64" or "arm64"
    vpc_id: str
    subnet_id: str
    zone: str
    ipv6: bool  # the subnet has an IPv6 range, so the instance gets an address


def architecture(client: EC2Client, plan: str) -> str:
    """arm64 for Graviton types, else x86_64, as AWS describes the type (no name guessing)."""
    types = client.describe_instance_types(InstanceTypes=[plan])["InstanceTypes"]  # type: ignore[list-item]
    archs = types[0].get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    return "x86_64" if "x86_64" in archs or not archs else str(archs[0])


def find_image(client: EC2Client, image: str, arch: str) -> str:
    """An AMI id: ``ami-...`` as given, else the newest Canonical image of that name."""
    if image.startswith("ami-"):
        return image
    pattern = IMAGE_PATTERNS.get(image)
    if pattern is None:
        raise InvalidSpec(
            f"ec2: unknown image {image!r}",
            hint=f"Use one of {', '.join(sorted(IMAGE_PATTERNS))} or an AMI id (ami-...).",
        )
    found = client.describe_images(
        Owners=[CANONICAL_OWNER],
        Filters=[
            {"Name": "name", "Values": [pattern.format(arch=_UBUNTU_ARCH.get(arch, arch))]},
            {"Name": "architecture", "Values": [arch]},
            {"Name": "state", "Values": ["available"]},
        ],
    )["Images"]
    if not found:
        raise InvalidSpec(
            f"ec2: no {image} {arch} image from Canonical in this region",
            hint="Pass an AMI id with --image ami-..., or another --region.",
        )
    newest = max(found, key=lambda img: img.get("CreationDate", ""))
    return newest["ImageId"]


def offered_zones(client: EC2Client, plan: str) -> set[str]:
    offers = client.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [plan]}],
    )["InstanceTypeOfferings"]
    return {offer["Location"] for offer in offers}


def _default_vpc(client: EC2Client) -> str:
    vpcs = client.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise InvalidSpec(
            "ec2: this region has no default VPC",
            hint="Pass --vpc-id and --subnet-id of a public subnet.",
        )
    return vpcs[0]["VpcId"]


def _usable_subnets(client: EC2Client, plan: str, extra: Mapping[str, str]) -> list[SubnetTypeDef]:
    """Subnets that can run ``plan``, the user's ``zone``/``vpc_id``/``subnet_id`` applied;
    default subnets first (they give public IPs), then by zone name."""
    zones = offered_zones(client, plan)
    zone, subnet_id = extra.get("zone", ""), extra.get("subnet_id", "")
    if zone and zone not in zones:
        raise InvalidSpec(
            f"ec2: instance type {plan} is not offered in zone {zone}",
            hint=f"Offered in: {', '.join(sorted(zones)) or 'no zone of this region'}.",
        )
    if subnet_id:
        subnets = client.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    else:
        vpc_id = extra.get("vpc_id") or _default_vpc(client)
        subnets = client.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpc_id]},
                {"Name": "availability-zone", "Values": [zone] if zone else sorted(zones)},
            ]
        )["Subnets"]
        subnets.sort(key=lambda s: (not s.get("DefaultForAz"), s["AvailabilityZone"]))
    usable = [s for s in subnets if s["AvailabilityZone"] in zones]
    if not usable:
        raise InvalidSpec(
            f"ec2: no subnet where instance type {plan} is offered",
            hint="Pass --subnet-id of a public subnet in one of: "
            + (", ".join(sorted(zones)) or "no zone of this region"),
        )
    return usable


def _placement(subnet: SubnetTypeDef, image_id: str, arch: str) -> Placement:
    return Placement(
        image_id=image_id,
        architecture=arch,
        vpc_id=subnet["VpcId"],
        subnet_id=subnet["SubnetId"],
        zone=subnet["AvailabilityZone"],
        ipv6=bool(subnet.get("Ipv6CidrBlockAssociationSet")),
    )


def resolve(client: EC2Client, image: str, plan: str, extra: Mapping[str, str]) -> Placement:
    """Pick the AMI and a subnet (with its VPC and zone) that can run ``plan``.

    ``extra`` holds the user's ``zone``, ``vpc_id`` and ``subnet_id``; without a
    subnet we use the VPC's default subnet in a zone where the plan is offered.
    """
    arch = architecture(client, plan)
    subnet = _usable_subnets(client, plan, extra)[0]
    return _placement(subnet, find_image(client, image, arch), arch)


def spread(client: EC2Client, image: str, plan: str, extra: Mapping[str, str]) -> list[Placement]:
    """One placement per zone that can run ``plan`` (a subnet each, one VPC), at least two.

    A load balancer needs subnets in two zones, and exit servers spread over them
    survive the loss of one zone; so a group never takes ``zone`` or ``subnet_id``.
    """
    arch = architecture(client, plan)
    by_zone: dict[str, SubnetTypeDef] = {}
    for subnet in _usable_subnets(client, plan, extra):
        by_zone.setdefault(subnet["AvailabilityZone"], subnet)
    if len(by_zone) < 2:
        raise InvalidSpec(
            f"ec2: a load balancer needs subnets in two zones; instance type {plan} has "
            f"{len(by_zone)} here",
            hint="Pick another --plan or --region, or a --vpc-id with a subnet in two zones.",
        )
    image_id = find_image(client, image, arch)
    return [_placement(subnet, image_id, arch) for subnet in by_zone.values()]


def zone_subnets(client: EC2Client, extra: Mapping[str, str]) -> list[SubnetTypeDef]:
    """One subnet per zone of ``vpc_id`` (default: the default VPC), at least two.

    For what needs no instance type (Fargate tasks and their load balancer), so no zone
    is ruled out by an offering; default subnets come first because they give public IPs.
    """
    vpc_id = extra.get("vpc_id") or _default_vpc(client)
    subnets = client.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    subnets.sort(key=lambda s: (not s.get("DefaultForAz"), s["AvailabilityZone"]))
    by_zone: dict[str, SubnetTypeDef] = {}
    for subnet in subnets:
        by_zone.setdefault(subnet["AvailabilityZone"], subnet)
    if len(by_zone) < 2:
        raise InvalidSpec(
            f"ec2: a load balancer needs subnets in two zones; VPC {vpc_id} has {len(by_zone)}",
            hint="Pass a --vpc-id with a public subnet in two zones.",
        )
    return list(by_zone.values())
