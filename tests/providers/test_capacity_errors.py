"""Each provider's capacity and quota answers become ``CapacityError``, and nothing else does.

``create --region a,b`` moves on to the next region on exactly these, so a wrong mapping
either gives up too early (a full region) or bills a second region for a typo or a bad
token. The DigitalOcean and Hetzner cases run the real SDK against the stateful fakes
and check through the fake's API that the refused create left nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import pytest

from providers import kit
from providers.digitalocean import DigitalOceanProvider
from providers.ec2_errors import aws_errors
from providers.errors import CapacityError, InvalidSpec, ProviderAPIError
from providers.hetzner import HetznerProvider
from providers.models import ProviderConfig
from providers.testing.conformance import ProviderConformance
from providers.testing.jsonapi import serving
from tests.fakes.aws.server import client_error
from tests.fakes.digitalocean import FakeDigitalOcean
from tests.fakes.hetzner import LOCATIONS, FakeHetzner

AZ_UNSUPPORTED = (
    "Your requested instance type (t3.nano) is not supported in your requested Availability "
    "Zone (us-east-1e). Please retry your request by not specifying an Availability Zone or "
    "choosing us-east-1a, us-east-1b."
)


@pytest.mark.parametrize(
    ("code", "message", "capacity"),
    [
        ("InsufficientInstanceCapacity", "We currently do not have sufficient capacity", True),
        ("InstanceLimitExceeded", "You have requested more instances than your limit", True),
        ("VcpuLimitExceeded", "You have requested more vCPU capacity than your limit", True),
        ("Unsupported", AZ_UNSUPPORTED, True),
        ("Unsupported", "The requested configuration is currently not supported.", False),
        ("AuthFailure", "AWS was not able to validate the provided access credentials", False),
        ("UnauthorizedOperation", "You are not authorized to perform this operation.", False),
        ("InvalidAMIID.NotFound", "The image id '[ami-1]' does not exist", False),
    ],
)
def test_ec2_codes(code: str, message: str, capacity: bool) -> None:
    with pytest.raises(ProviderAPIError) as caught, aws_errors("launch the instance"):
        raise client_error("RunInstances", code, message)
    assert isinstance(caught.value, CapacityError) is capacity
    assert caught.value.code == code and message in caught.value.message


@pytest.fixture
def do_fake() -> Iterator[FakeDigitalOcean]:
    yield from serving(FakeDigitalOcean())


@pytest.fixture
def do(do_fake: FakeDigitalOcean) -> DigitalOceanProvider:
    return DigitalOceanProvider(
        ProviderConfig(access_token=do_fake.token, endpoint_url=do_fake.base_url)
    )


@pytest.mark.parametrize(
    "message",
    [
        "Region is not available",
        "Size is not available in this region.",
        "creating this/these droplet(s) will exceed your droplet limit",
    ],
)
def test_digitalocean_422s_of_capacity(
    do_fake: FakeDigitalOcean, do: DigitalOceanProvider, message: str
) -> None:
    spec = ProviderConformance().make_spec(do)
    do_fake.refusals_in[spec.region] = (422, "unprocessable_entity", message)
    with pytest.raises(CapacityError, match=re.escape(message)) as caught:
        kit.create_host(do, spec)
    assert "--region" in caught.value.hint
    assert do_fake.resources() == set()


def test_digitalocean_other_422s_are_not_capacity(
    do_fake: FakeDigitalOcean, do: DigitalOceanProvider
) -> None:
    spec = ProviderConformance().make_spec(do)
    message = "You specified an invalid image for Droplet creation."
    do_fake.refusals_in[spec.region] = (422, "unprocessable_entity", message)
    with pytest.raises(ProviderAPIError) as caught:
        kit.create_host(do, spec)
    assert not isinstance(caught.value, CapacityError)


def test_digitalocean_a_closed_region_is_full_and_a_typo_is_unknown(
    do_fake: FakeDigitalOcean, do: DigitalOceanProvider
) -> None:
    spec = ProviderConformance().make_spec(do)
    do_fake.closed_regions.add(spec.region)
    with pytest.raises(CapacityError, match=f"region {spec.region} takes no new droplets"):
        do.create(spec)
    assert spec.region in do.known_regions(), "closed, but a region all the same"
    with pytest.raises(InvalidSpec, match="unknown region 'lon9'"):
        do.create(replace(spec, region="lon9"))
    assert do_fake.calls("POST", r"/v2/droplets/?") == []


@pytest.fixture
def hz_fake() -> Iterator[FakeHetzner]:
    fake = FakeHetzner()
    fake.running_reads = 0
    yield from serving(fake)


@pytest.fixture
def hz(hz_fake: FakeHetzner) -> HetznerProvider:
    config = ProviderConfig(access_token=hz_fake.token, endpoint_url=hz_fake.base_url)
    return HetznerProvider(config, poll_interval=0.0)


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (412, "resource_unavailable", "error during placement"),
        (412, "placement_error", "error during placement"),
        (403, "resource_limit_exceeded", "server limit reached"),
    ],
)
def test_hetzner_codes_of_capacity_and_the_firewall_made_first_is_removed(
    hz_fake: FakeHetzner, hz: HetznerProvider, status: int, code: str, message: str
) -> None:
    spec = ProviderConformance().make_spec(hz)
    hz_fake.refusals_in[spec.region] = (status, code, message)
    with pytest.raises(CapacityError, match=code):
        kit.create_host(hz, spec)
    assert hz_fake.calls("POST", r"/v1/firewalls"), "the firewall was made before the refusal"
    assert hz_fake.resources() == set()


def test_hetzner_invalid_input_is_not_capacity(hz_fake: FakeHetzner, hz: HetznerProvider) -> None:
    spec = ProviderConformance().make_spec(hz)
    hz_fake.refusals_in[spec.region] = (422, "invalid_input", "invalid input in field 'image'")
    with pytest.raises(ProviderAPIError) as caught:
        kit.create_host(hz, spec)
    assert not isinstance(caught.value, CapacityError)
    assert sorted(hz.known_regions()) == sorted(LOCATIONS)
